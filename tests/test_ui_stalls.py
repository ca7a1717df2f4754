"""What kept the event loop from running during a new user's first tasks (issue 19, item 10), checked without
wall-clock bounds: the heavy imports happen at start on a background thread, and the app never forks itself to
read patches. The wall-clock stalls themselves are measured by ``benchmarks/ui_stalls.py``."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dnd_engine.errors import DnDError
from dnd_engine.synth import make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]

START_SCRIPT = textwrap.dedent("""
    import json, sys, threading
    ui = threading.get_ident()
    WATCH = {"openslide", "tifffile", "imagecodecs", "h5py", "torch.optim", "multiprocessing.forkserver",
             "dnd_engine.predict", "dnd_engine.heatmaps", "dnd_engine.tissue"}
    first_import, armed = {}, []

    class Spy:  # a meta-path finder that only notes which thread imports a watched module once the window shows
        def find_spec(self, name, path=None, target=None):
            if name in WATCH and armed:
                first_import.setdefault(name, "ui" if threading.get_ident() == ui else "background")
            return None

    sys.meta_path.insert(0, Spy())
    import dnd_gui.app as app
    calls, done = [], []
    real = getattr(app, "warm_up_imports", None)

    def spy(*a, **k):
        from PySide6.QtWidgets import QApplication
        calls.append(any(w.isVisible() for w in QApplication.topLevelWidgets()))
        armed.append(True)
        done.append(real(*a, **k))
        return done[-1]

    app.warm_up_imports = spy
    code = app.main(["--no-model", "--screenshot", sys.argv[1]])
    for event in done:
        event.wait(600)
    from multiprocessing import forkserver
    server = forkserver._forkserver   # (private: whether the readers' fork server runs, and what it preloaded)
    print("RESULT " + json.dumps({"code": code, "calls": calls, "first_import": first_import,
                                  "server": server._forkserver_pid is not None, "preload": server._preload_modules}))
""")


def test_app_imports_the_heavy_modules_and_starts_the_fork_server_at_start_in_the_background(tmp_path):
    """openslide, the image codecs, the fork server and the engine's prediction used to be imported by the first
    slide's jobs, holding the GIL for long stretches mid-task: the app imports them once its window is shown, off
    the UI thread."""
    script = tmp_path / "start.py"
    script.write_text(START_SCRIPT)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               XDG_DATA_HOME=str(tmp_path / "data"), HOME=str(tmp_path))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "shot.png")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stderr[-2000:]
    result = json.loads(line[len("RESULT "):])
    assert result["code"] == 0
    assert result["calls"] == [True], "the warm-up starts once, after the window is shown"
    first = result["first_import"]   # (torch itself comes with the window's own imports, before it shows)
    assert {"openslide", "dnd_engine.predict"} <= set(first), first
    assert set(first.values()) == {"background"}, first
    # the fork server the reading processes come from is started too, with the extraction code imported once
    from dnd_gui.jobs.background import READER_START
    if READER_START == "forkserver":
        assert result["server"] and "dnd_engine.features.extract" in result["preload"]


def test_warm_up_runs_once_and_skips_missing_modules():
    from dnd_gui.jobs.background import warm_up_imports
    first = warm_up_imports(["json", "no_such_module_for_dnd"], server=False)
    assert first.wait(600)
    assert warm_up_imports(["json"]) is first      # once per process


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    cohort = make_synthetic_cohort(tmp_path_factory.mktemp("stall_slide") / "c", n_slides=2, size=1024, seed=2)
    return Path(cohort.slides[0].path)


class _Ctx:
    """The part of a job's context a job function calls, without Qt."""

    def progress(self, *a):
        pass

    def cancelled(self) -> bool:
        return False

    def log(self, message):
        pass

    def emit(self, value):
        pass

    def outcome(self, outcome):
        pass


def test_classification_reads_patches_without_forking_the_app(slide, tmp_path, monkeypatch):
    """Reading processes started with ``fork`` copy the whole app (Qt threads, torch): the copy can deadlock, and
    making it holds the GIL, which froze the window. The app's classification starts them from a fork server."""
    from dnd_engine import features
    from dnd_gui.jobs.background import READER_START
    from dnd_gui.jobs.classify import DEMO_MODEL, classify_job, load_model_checked

    started_with = []

    def spy(slides, out, config, **kw):
        started_with.append(config.mp_context)
        raise DnDError("stopped here: the test only checks how readers start")

    monkeypatch.setattr(features, "extract_cohort", spy)
    model = load_model_checked(DEMO_MODEL)
    results = classify_job(model, [slide], tmp_path / "out")(_Ctx())
    assert started_with == [READER_START] and READER_START in ("forkserver", "spawn")
    assert results[0].status == "failed" and "stopped here" in results[0].error
