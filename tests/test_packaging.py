"""The double-click installer (packaging/): ``dnd-studio --selftest`` in process, the recipes' content (spec,
desktop entry, MIME types, Debian control, icons), and — marked slow — the whole Linux build: build_linux.sh
makes the bundle and the .deb, the .deb is unpacked into a temporary root, the installed app passes its
selftest offscreen and shows its window under Xvfb (screenshot checked)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import configparser
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dnd_gui import app as app_module
from dnd_gui import selftest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "packaging"
ICONS = ROOT / "resources" / "icons"
ARTIFACTS = ROOT / "test-artifacts"
MIME_NS = "{http://www.freedesktop.org/standards/shared-mime-info}"
SLIDE_GLOBS = {"*.svs", "*.ndpi", "*.mrxs", "*.scn", "*.bif", "*.vms", "*.vmu", "*.svslide", "*.qptiff"}
SELFTEST_LINE = re.compile(r"^selftest ok: CMU-1-Small-Region (\u2192|->) (normal|tumor) \(p=(0\.\d\d|1\.00)\) "
                           r"with demo model demo_abmil_stain_stats, (\d+) patches, openslide backend")


# --- selftest, in process --------------------------------------------------------------------------------------
def test_selftest_classifies_the_bundled_slide(capsys):
    assert selftest.main() == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    m = SELFTEST_LINE.match(line)
    assert m, line
    assert int(m.group(4)) > 0


def test_selftest_result_is_the_engine_prediction():
    r = selftest.run_selftest()
    assert r.backend == "openslide" and r.device == "cpu"
    assert r.predicted in ("normal", "tumor") and 0.5 <= r.probability <= 1.0
    assert Path(r.slide) == selftest.sample_slide()


def test_selftest_fails_clearly(tmp_path, capsys, monkeypatch):
    with pytest.raises(selftest.SelftestError, match="demo model is missing"):
        selftest.run_selftest(model=tmp_path / "gone.safetensors")
    not_a_slide = tmp_path / "broken.svs"
    not_a_slide.write_bytes(b"not a slide")
    with pytest.raises(selftest.SelftestError, match="cannot open broken.svs"):
        selftest.run_selftest(slide=not_a_slide)
    monkeypatch.setattr(selftest, "sample_slide", lambda: tmp_path / "missing.svs")
    assert selftest.main() == 1
    assert capsys.readouterr().out.strip().startswith("selftest FAILED: the bundled sample slide is missing")


def test_resources_are_found_in_a_bundle(monkeypatch, tmp_path):
    assert selftest.resources_dir() == ROOT / "resources"
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert selftest.resources_dir() == tmp_path / "resources"
    assert selftest.sample_slide() == tmp_path / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"


def test_app_selftest_flag_runs_no_window(monkeypatch):
    assert app_module._parse_args(["--selftest"]).selftest
    monkeypatch.setattr(selftest, "main", lambda: 7)
    monkeypatch.setattr(app_module, "MainWindow", lambda *a, **k: pytest.fail("--selftest must not open a window"))
    assert app_module.main(["--selftest"]) == 7


# --- icons ------------------------------------------------------------------------------------------------------
def test_app_icon(qapp):
    from PySide6.QtGui import QImage
    for size in (16, 32, 48, 64, 128, 256, 512):
        img = QImage(str(ICONS / f"dnd-studio-{size}.png"))
        assert (img.width(), img.height()) == (size, size)
        assert img.hasAlphaChannel()
    assert (ICONS / "dnd-studio.svg").read_text().lstrip().startswith("<?xml")
    assert (ICONS / "dnd-studio.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"
    icon = app_module._app_icon()
    assert not icon.isNull() and len(icon.availableSizes()) >= 7


# --- recipes ----------------------------------------------------------------------------------------------------
def _desktop_entry() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str
    cp.read(PKG / "linux" / "dnd-studio.desktop", encoding="utf-8")
    return cp["Desktop Entry"]


def _mime_types() -> dict[str, set[str]]:
    root = ET.parse(PKG / "linux" / "dnd-studio-mime.xml").getroot()
    return {m.get("type"): {g.get("pattern") for g in m.findall(f"{MIME_NS}glob")}
            for m in root.findall(f"{MIME_NS}mime-type")}


def test_desktop_entry_opens_slides():
    d = _desktop_entry()
    assert d["Type"] == "Application" and d["Name"] == "D&D Studio"
    exec_ = d["Exec"].split()
    assert exec_[0] == "dnd-studio" and exec_[-1] == "%F"          # several files, as paths
    assert d["Icon"] == "dnd-studio" and d["Terminal"] == "false"
    assert d["StartupWMClass"] == "dnd-studio"                      # Qt's WM_CLASS for the executable
    listed = set(filter(None, d["MimeType"].split(";")))
    types = _mime_types()
    assert set(types) <= listed, "every slide type the package defines is one the app opens"
    assert {"image/x-aperio-svs", "image/tiff", "application/dicom"} <= listed
    assert set().union(*types.values()) == SLIDE_GLOBS
    assert types["image/x-aperio-svs"] == {"*.svs"}


@pytest.mark.skipif(not shutil.which("desktop-file-validate"), reason="desktop-file-validate not installed")
def test_desktop_entry_validates():
    r = subprocess.run(["desktop-file-validate", str(PKG / "linux" / "dnd-studio.desktop")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "error" not in r.stdout, r.stdout


def test_debian_control_template():
    text = (PKG / "linux" / "control.in").read_text()
    for field in ("Package: @PACKAGE@", "Version: @VERSION@", "Architecture: @ARCH@", "Installed-Size: @SIZE@",
                  "Depends:", "Maintainer:", "Description:"):
        assert field in text
    assert "libxcb-cursor0" in text                                  # Qt 6's xcb platform plugin needs it


def test_spec_and_scripts():
    spec = (PKG / "dnd-studio.spec").read_text()
    compile(spec, "dnd-studio.spec", "exec")
    for needed in ("DND_VARIANT", "openslide_bin", "resources/sample_slides", "resources/models", "resources/icons",
                   "dnd_studio_entry.py", "collect_submodules(\"dnd_engine\")", "version.cuda"):
        assert needed in spec, needed
    assert "freeze_support()" in (PKG / "dnd_studio_entry.py").read_text()
    script = PKG / "build_linux.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert subprocess.run(["sh", "-n", str(PKG / "linux" / "install-desktop-entry.sh")]).returncode == 0
    assert (PKG / "windows" / "dnd-studio.iss").is_file() and (PKG / "macos" / "build_macos.sh").is_file()
    iss = (PKG / "windows" / "dnd-studio.iss").read_text()
    assert all(f"Software\\Classes\\{g[1:]}\\OpenWithProgids" in iss for g in SLIDE_GLOBS)


# --- the real build ---------------------------------------------------------------------------------------------
def _missing_tools() -> list[str]:
    return [t for t in ("dpkg-deb", "Xvfb", "xdotool", "import") if not shutil.which(t)]


@pytest.mark.slow
@pytest.mark.skipif(bool(_missing_tools()), reason=f"needs {', '.join(_missing_tools())} "
                    "(apt-get install dpkg xvfb xdotool imagemagick)")
def test_deb_installs_an_app_that_runs(tmp_path):
    """build_linux.sh cpu → .deb → unpacked into a temporary root → --selftest offscreen, and the window under
    Xvfb. DND_PACKAGING_REUSE=1 tests the .deb already in dist/ instead of building it again."""
    from dnd_engine import __version__
    deb = ROOT / "dist" / f"dnd-studio_{__version__}_amd64.deb"
    tgz = ROOT / "dist" / f"dnd-studio-{__version__}-linux-x86_64-cpu.tar.gz"
    if not (os.environ.get("DND_PACKAGING_REUSE") == "1" and deb.is_file()):
        r = subprocess.run([str(PKG / "build_linux.sh"), "cpu"], cwd=ROOT, capture_output=True, text=True,
                           timeout=3600)
        assert r.returncode == 0, f"build_linux.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "selftest ok:" in r.stdout
    assert deb.is_file() and tgz.is_file()

    info = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Depends"], capture_output=True,
                          text=True, check=True).stdout
    assert "Package: dnd-studio\n" in info and f"Version: {__version__}" in info
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    exe = root / "usr" / "bin" / "dnd-studio"
    assert exe.is_symlink() and os.readlink(exe) == "../../opt/dnd-studio/dnd-studio"
    assert (root / "opt" / "dnd-studio" / "_internal" / "resources" / "models"
            / "demo_abmil_stain_stats.safetensors").is_file()
    assert (root / "usr" / "share" / "applications" / "dnd-studio.desktop").is_file()
    assert (root / "usr" / "share" / "mime" / "packages" / "dnd-studio.xml").is_file()
    assert (root / "usr" / "share" / "icons" / "hicolor" / "256x256" / "apps" / "dnd-studio.png").is_file()
    assert (root / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps" / "dnd-studio.svg").is_file()
    cuda = [p.name for p in (root / "opt" / "dnd-studio").rglob("*") if re.match(r"lib(cudart|cublas|cudnn|"
                                                                                r"torch_cuda|nccl)", p.name)]
    assert not cuda, f"the CPU .deb carries CUDA libraries: {cuda[:5]}"

    # the installed app checks itself, with no screen and nothing from the source tree
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DISPLAY"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["PATH"] = "/usr/bin:/bin"
    r = subprocess.run([str(exe), "--selftest"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0 and SELFTEST_LINE.match(last), f"rc={r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    print(last)

    # and shows its window on an X screen (Xvfb): time it, take a screenshot
    env.pop("QT_QPA_PLATFORM")
    env["HOME"] = str(tmp_path / "home")                          # fresh settings, as on first use
    shot = ARTIFACTS / "packaging_installed_window.png"
    ARTIFACTS.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, str(PKG / "startup_time.py"), str(exe), "--runs", "1",
                        "--screenshot", str(shot)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "first window after" in r.stdout, f"{r.stdout}\n{r.stderr[-3000:]}"
    print(r.stdout.strip().splitlines()[-1])
    from PySide6.QtGui import QImage
    img = QImage(str(shot))
    assert not img.isNull(), "no screenshot"
    # the window (dark theme by default) covers the screen's top-left; the bare Xvfb root is black
    colours = {img.pixelColor(x, y).name() for x in range(0, img.width(), 40) for y in range(0, img.height(), 40)}
    assert len(colours) > 5, f"the screenshot looks empty: {sorted(colours)[:10]}"

    # a double-click on a slide: the MIME type and desktop entry the .deb installs lead to the installed app,
    # which opens the slide (gio open does what a file manager does)
    if shutil.which("gio") and shutil.which("update-mime-database") and shutil.which("update-desktop-database"):
        _double_click_opens_the_slide(root, tmp_path, env)

    with tarfile.open(tgz) as tf:
        names = tf.getnames()
    top = f"dnd-studio-{__version__}-linux-x86_64-cpu"
    assert f"{top}/dnd-studio" in names and f"{top}/install-desktop-entry.sh" in names


def _startup_time_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("startup_time", PKG / "startup_time.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _double_click_opens_the_slide(root: Path, tmp_path: Path, env: dict) -> None:
    share = root / "usr" / "share"
    subprocess.run(["update-mime-database", str(share / "mime")], check=True, capture_output=True)
    subprocess.run(["update-desktop-database", str(share / "applications")], check=True, capture_output=True)
    slide = tmp_path / "CMU-1-Small-Region.svs"
    shutil.copy(selftest.sample_slide(), slide)
    env = dict(env, PATH=f"{root / 'usr' / 'bin'}:/usr/bin:/bin", XDG_DATA_DIRS=f"{share}:/usr/share",
               XDG_DATA_HOME=str(tmp_path / "xdg-data"), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"))
    info = subprocess.run(["gio", "info", "-a", "standard::content-type", str(slide)], env=env,
                          capture_output=True, text=True).stdout
    assert "image/x-aperio-svs" in info, info
    default = subprocess.run(["gio", "mime", "image/x-aperio-svs"], env=env, capture_output=True, text=True).stdout
    assert "dnd-studio.desktop" in default.splitlines()[0], default

    st = _startup_time_module()
    xvfb, env["DISPLAY"] = st.start_xvfb()
    pid = None
    try:
        subprocess.run(["gio", "open", str(slide)], env=env, check=True, timeout=60)
        title = f"^{slide.name} \u2014 D&D Studio$"
        wid = ""
        for _ in range(1200):                                  # up to 2 minutes
            wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title], env=env,
                                 capture_output=True, text=True).stdout.split()
            if wid:
                break
            time.sleep(0.1)
        assert wid, "no window showing the double-clicked slide"
        pid = int(subprocess.run(["xdotool", "getwindowpid", wid[0]], env=env, capture_output=True, text=True,
                                 check=True).stdout)
        assert Path(f"/proc/{pid}/exe").resolve() == (root / "opt" / "dnd-studio" / "dnd-studio").resolve()
        if shutil.which("xprop"):
            icon = subprocess.run(["xprop", "-id", wid[0], "_NET_WM_ICON"], env=env, capture_output=True,
                                  text=True).stdout
            assert "not found" not in icon and len(icon) > 1000, "the window has no icon"
        time.sleep(2)
        shot = ARTIFACTS / "packaging_double_click.png"
        subprocess.run(["import", "-window", "root", str(shot)], env=env, check=False)
    finally:
        if pid:
            os.kill(pid, 15)
        xvfb.terminate()
        xvfb.wait()
