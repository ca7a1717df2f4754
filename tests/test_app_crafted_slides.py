"""A crafted slide (TileWidth/TileLength of 1,048,576 px) makes OpenSlide abort its process: the app reads slides in
a child process (dnd_engine.slides.isolated), so only that slide fails and the window carries on.

The crash path is also forced with the reader's test hook (``DND_TEST_READER_ABORT``: the child calls os.abort()
on open / thumbnail / tile read), so it is tested where OpenSlide copes with the crafted bytes.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from dnd_engine.errors import SlideError
from dnd_engine.slides import open_slide
from dnd_engine.slides.isolated import ABORT_HOOK_ENV, IsolatedSlide, SlideReaderCrashed
from dnd_gui.panels.slide_thumbnails import ThumbnailLoader, read_thumbnail
from dnd_gui.viewer.view import CANVAS_COLOR

from gui_helpers import file_drop_events, open_window
from pyramid import tissue_like, write_pyramid

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 60_000   # a generous bound for a loaded machine: the tests wait for signals, never time them
HUGE_TILE = 1 << 20


# --- files ------------------------------------------------------------------------------------------------
def craft_huge_tiles(good: Path, out: Path) -> Path:
    """``good`` with level 0's TileWidth and TileLength set to 1,048,576 px (a few bytes changed): OpenSlide then
    asks for terabytes when it decodes a level-0 tile, and aborts."""
    data = bytearray(good.read_bytes())
    with tifffile.TiffFile(good) as tif:
        assert tif.byteorder == "<" and not tif.is_bigtiff
        tags = tif.pages[0].tags
        spots = [(tags[code].valueoffset, tags[code].dtype) for code in (322, 323)]  # TileWidth, TileLength
    for offset, dtype in spots:
        fmt = "<H" if int(dtype) == 3 else "<I"   # SHORT or LONG
        data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, HUGE_TILE if fmt == "<I" else 0xFFF0)
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def good_slide(tmp_path_factory) -> Path:
    """A small SVS-like pyramid whose level 0 is what the viewer reads in a 1366×768 window (fit zoom < 1)."""
    path = tmp_path_factory.mktemp("crafted") / "good.svs"
    return write_pyramid(path, tissue_like(2048, 1536, seed=5), downsamples=(1, 4, 16))


@pytest.fixture(scope="module")
def crafted_slide(good_slide) -> Path:
    return craft_huge_tiles(good_slide, good_slide.with_name("crafted.svs"))


@pytest.fixture
def win(qtbot, tmp_path):
    return open_window(qtbot, tmp_path / "settings.ini", tmp_path / "predictions")


def assert_one_line_crash(message: str, name: str) -> None:
    assert message.startswith(f"{name}: ") and "\n" not in message
    assert "crashed" in message and "SIGABRT" in message and "nothing else was affected" in message
    assert "Traceback" not in message


def open_good_and_see_tiles(qtbot, win, path: Path) -> None:
    """The window still works: ``path`` opens and every visible tile of it paints."""
    with qtbot.waitSignals([win.slide_loaded, win.view.fully_painted], timeout=WAIT_MS, order="none"):
        win.open_slide(str(path))
    assert win.view.has_slide() and not win.view.missing_tiles()
    assert win.last_error == ""
    image = win.view.viewport().grab().toImage()
    assert QColor(image.pixel(image.width() // 2, image.height() // 2)) != QColor(CANVAS_COLOR)


def proc_gone(pid: int) -> bool:
    """The process ended (a zombie nobody reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state or "\nState:\tX" in state


# --- the proxy ----------------------------------------------------------------------------------------------
def test_isolated_slide_reads_the_same_as_a_direct_open(cmu_slide):
    with open_slide(cmu_slide) as direct, IsolatedSlide(cmu_slide) as iso:
        assert iso.info() == direct.info()
        assert iso.level_dimensions == [tuple(d) for d in direct.level_dimensions]
        assert iso.level_downsamples == list(direct.level_downsamples)
        assert (iso.mpp, iso.objective_power, iso.backend) == (direct.mpp, direct.objective_power, direct.backend)
        assert np.array_equal(iso.thumbnail_array(256), np.asarray(direct.get_thumbnail(256).convert("RGB")))
        want = np.asarray(direct.read_region((300, 500), 0, (512, 384)).convert("RGB"))
        got = iso.read_array((300, 500), 0, (512, 384))
        assert got.dtype == np.uint8 and got.shape == (384, 512, 3) and np.array_equal(got, want)
        assert np.array_equal(np.asarray(iso.read_region((300, 500), 0, (512, 384))), want)
        # Several threads at once (the viewer's decoding threads): each gets its own answer.
        spots = [(x, y) for x in range(0, 1600, 400) for y in range(0, 2400, 600)]
        results: dict = {}

        def read(spot):
            results[spot] = iso.read_array(spot, 0, (256, 256))

        threads = [threading.Thread(target=read, args=(s,)) for s in spots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for spot in spots:
            assert np.array_equal(results[spot], np.asarray(direct.read_region(spot, 0, (256, 256)).convert("RGB")))


def test_isolated_slide_reports_an_unreadable_file_in_one_line(tmp_path):
    bad = tmp_path / "notes.svs"
    bad.write_text("not a slide\n")
    with pytest.raises(SlideError) as err:
        IsolatedSlide(bad)
    assert not isinstance(err.value, SlideReaderCrashed)
    assert "notes.svs" in str(err.value) and "\n" not in str(err.value)


def test_isolated_slide_child_death_fails_pending_and_later_calls_for_good(cmu_slide):
    iso = IsolatedSlide(cmu_slide)
    try:
        pid = iso.pid
        iso.read_array((0, 0), 0, (64, 64))
        os.kill(pid, signal.SIGSTOP)          # a read now waits in the pipe ...
        errors: list = []
        pending = threading.Thread(target=lambda: errors.append(_raises(iso.read_array, (0, 0), 0, (64, 64))))
        pending.start()
        while not iso._waiting:
            threading.Event().wait(0.01)
        os.kill(pid, signal.SIGABRT)          # ... when the reader dies as a crafted file makes it die
        os.kill(pid, signal.SIGCONT)
        pending.join()
        assert isinstance(errors[0], SlideReaderCrashed)
        assert_one_line_crash(str(errors[0]), cmu_slide.name)
        for call in (lambda: iso.read_array((0, 0), 0, (8, 8)), lambda: iso.thumbnail_array(64)):
            with pytest.raises(SlideReaderCrashed) as err:
                call()
            assert str(err.value) == str(errors[0])
        assert iso.crashed == str(errors[0]) and iso.pid == pid   # never restarted for this file
    finally:
        iso.close()


def _raises(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc
    return None


@pytest.mark.parametrize("where", ["open", "thumbnail", "read"])
def test_isolated_slide_abort_hook_crashes_only_the_child(cmu_slide, monkeypatch, where):
    monkeypatch.setenv(ABORT_HOOK_ENV, where)
    with pytest.raises(SlideReaderCrashed) as err:
        with IsolatedSlide(cmu_slide) as iso:
            iso.thumbnail_array(64)
            iso.read_array((0, 0), 0, (64, 64))
    assert_one_line_crash(str(err.value), cmu_slide.name)


def test_the_crafted_file_crashes_the_reader_not_the_caller(crafted_slide):
    """On this OpenSlide the crafted file aborts the process that decodes a level-0 tile; here that is the child.
    (Where OpenSlide refuses or copes, a SlideError or the pixels are fine too: the caller survives.)"""
    try:
        with IsolatedSlide(crafted_slide) as iso:
            iso.read_array((0, 0), 0, (256, 256))
    except SlideReaderCrashed as exc:
        assert str(exc).startswith("crafted.svs: the slide reader crashed on this file (")
        assert "\n" not in str(exc)
    except SlideError as exc:
        assert "crafted.svs" in str(exc) and "\n" not in str(exc)


def test_the_reader_exits_when_its_parent_dies(cmu_slide, tmp_path):
    script = ("import os, sys\nfrom dnd_engine.slides.isolated import IsolatedSlide\n"
              "if __name__ == '__main__':\n"
              f"    s = IsolatedSlide({str(cmu_slide)!r})\n"
              "    print(s.pid, flush=True)\n"
              "    os._exit(0)\n")
    (tmp_path / "parent.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(tmp_path / "parent.py")], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    pid = int(out.stdout.split()[0])
    for _ in range(600):                  # the child checks every second; 60 s is plenty on a loaded machine
        if proc_gone(pid):
            break
        threading.Event().wait(0.1)
    assert proc_gone(pid)


# --- the app ------------------------------------------------------------------------------------------------
def test_list_thumbnails_survive_a_reader_crash(qtbot, cmu_slide, monkeypatch):
    monkeypatch.setenv(ABORT_HOOK_ENV, "thumbnail")
    with pytest.raises(SlideReaderCrashed):
        read_thumbnail(str(cmu_slide))
    loader = ThumbnailLoader()
    try:
        with qtbot.assertNotEmitted(loader.ready):
            with qtbot.waitSignal(loader.failed, timeout=WAIT_MS) as blocker:
                loader.request(str(cmu_slide))
        path, message = blocker.args
        assert path == str(cmu_slide)
        assert_one_line_crash(message, cmu_slide.name)
    finally:
        loader.shutdown()


def test_app_survives_a_reader_crash_on_open_then_opens_a_good_slide(qtbot, win, good_slide, monkeypatch, tmp_path):
    bad = tmp_path / "boom.svs"
    bad.write_bytes(good_slide.read_bytes())
    monkeypatch.setenv(ABORT_HOOK_ENV, "open")
    with qtbot.waitSignal(win.slide_failed, timeout=WAIT_MS) as blocker:
        win.open_slide(str(bad))
    monkeypatch.delenv(ABORT_HOOK_ENV)
    assert_one_line_crash(blocker.args[0], "boom.svs")
    assert win.isVisible() and win.last_error == blocker.args[0]
    assert blocker.args[0] in win.view.message() and blocker.args[0] in win.error_box.informativeText()
    assert win.slide is None and not win.view.has_slide()
    open_good_and_see_tiles(qtbot, win, good_slide)


def test_app_survives_a_reader_crash_on_tile_reads_of_a_dropped_slide(qtbot, win, good_slide, monkeypatch,
                                                                      tmp_path):
    bad = tmp_path / "boom.svs"
    bad.write_bytes(good_slide.read_bytes())
    monkeypatch.setenv(ABORT_HOOK_ENV, "read")   # opening and the thumbnails work; every tile read aborts
    mime, enter, drop = file_drop_events(bad)
    viewport = win.view.viewport()
    QApplication.sendEvent(viewport, enter)
    with qtbot.waitSignal(win.slide_failed, timeout=WAIT_MS) as blocker:
        QApplication.sendEvent(viewport, drop)
    monkeypatch.delenv(ABORT_HOOK_ENV)
    message = blocker.args[0]
    assert_one_line_crash(message, "boom.svs")
    assert win.isVisible() and win.last_error == message
    assert win.view.message() == message and not win.view.has_slide()   # the viewer says why, in the slide's place
    assert win.slide is None
    status = win.slide_list.status_text(str(bad))                              # the slide list marks it failed
    assert "crashed" in status and "\n" not in status
    win.grab().save(str(tmp_path / "crashed.png"))
    open_good_and_see_tiles(qtbot, win, good_slide)
    assert win.slide_list.status_text(str(bad)) == status                     # the bad one stays marked


def test_app_survives_the_crafted_file_then_opens_a_good_one(qtbot, win, good_slide, crafted_slide):
    """The real crafted bytes (no hook): opening it fails that slide only, however this OpenSlide reacts."""
    outcome: list = []
    win.slide_failed.connect(lambda msg: outcome.append(("failed", msg)))
    win.view.fully_painted.connect(lambda: outcome.append(("painted", "")))
    win.open_slide(str(crafted_slide))
    qtbot.waitUntil(lambda: bool(outcome), timeout=WAIT_MS)
    assert win.isVisible()
    kind, message = outcome[0]
    if kind == "failed":   # the reader crashed (this machine's OpenSlide) or a pre-check refused the file
        assert message.startswith("crafted.svs") and "\n" not in message
        assert win.last_error == message and not win.view.has_slide()
    open_good_and_see_tiles(qtbot, win, good_slide)
