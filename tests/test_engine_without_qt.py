"""The engine runs with Qt unimportable: a server install (`pip install dnd-studio`, no `[gui]` extra) has no
PySide6, pyqtgraph or superqt, and `dnd` must work there. A sitecustomize on PYTHONPATH blocks those imports in the
subprocess, as they would be on such a server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "shiboken6", "pyqtgraph", "superqt")

BLOCKER = f'''
import sys
class _NoQt:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {QT!r}:
            raise ImportError(f"{{name}} is not installed (engine-only test)")
        return None
sys.meta_path.insert(0, _NoQt())
'''


def dnd(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]))
    env.pop("QT_QPA_PLATFORM", None)
    return subprocess.run([sys.executable, "-m", "dnd_engine.cli", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=timeout)


def test_blocker_really_blocks_qt(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(block))
    r = subprocess.run([sys.executable, "-c", "import PySide6"], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "engine-only test" in r.stderr


def test_dnd_help_info_and_extract_run_without_qt(tmp_path, cmu_slide):
    r = dnd(tmp_path, "--help")
    assert r.returncode == 0, r.stderr
    assert "extract" in r.stdout
    r = dnd(tmp_path, "info", str(cmu_slide))
    assert r.returncode == 0, r.stderr
    assert "CMU-1-Small-Region" in r.stdout
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(cmu_slide, slides / cmu_slide.name)
    r = dnd(tmp_path, "extract", "--slides", str(slides), "--out", str(tmp_path / "out"),
            "--extractor", "stain_stats", "--workers", "0")
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "out").rglob("*.h5")), "extract wrote no features"


def test_every_dnd_subcommand_help_runs_without_qt(tmp_path):
    """Each subcommand's module is imported by its --help: none may pull in the GUI."""
    from dnd_engine.cli.main import build_parser
    import argparse
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in subs.choices:
        r = dnd(tmp_path, name, "--help")
        assert r.returncode == 0, f"dnd {name} --help: {r.stderr[-500:]}"


def test_qt_is_an_extra_not_a_base_dependency():
    """`pip install dnd-studio` is the engine; `pip install "dnd-studio[gui]"` adds the app's Qt libraries."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for name in ("pyside6", "pyqtgraph", "superqt"):
        assert name not in base, f"{name} is a base dependency: the engine cannot be installed without Qt"
    gui = " ".join(project["optional-dependencies"]["gui"]).lower()
    for name in ("pyside6-essentials", "pyqtgraph", "superqt"):
        assert name in gui, f"{name} missing from the gui extra"


def test_the_app_without_qt_says_how_to_install_it(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]))
    r = subprocess.run([sys.executable, "-c", "import dnd_gui.app"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode != 0
    assert 'pip install "dnd-studio[gui]"' in r.stderr.strip().splitlines()[-1]
