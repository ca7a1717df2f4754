"""The tiled pyramid viewer: geometry, cache, off-thread decoding, a responsive event loop, zoom/pan, overlays."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from dnd_gui.jobs.slide_loader import load_slide
from dnd_gui.viewer import SlideViewer
from dnd_gui.viewer.scale_bar import format_length, nice_length_um
from dnd_gui.viewer.tile_cache import TileCache
from dnd_gui.viewer.tile_source import TILE_SIZE, TileGrid, TileKey
from dnd_gui.viewer.view import CANVAS_COLOR

from gui_helpers import Heartbeat, wait_painted
from pyramid import tissue_like, write_pyramid

ROOT = Path(__file__).resolve().parents[1]
CMU = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"
W0, H0 = 4096, 3072  # the synthetic pyramid: levels 1, 4, 16 → 8×6, 2×2 and 1 tile(s) of 512 px


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("viewer") / "pyramid.svs"
    return write_pyramid(path, tissue_like(W0, H0, seed=3, blobs=4), downsamples=(1, 4, 16), mpp=0.5, app_mag=20)


@pytest.fixture
def viewer(qtbot):
    v = SlideViewer()
    qtbot.addWidget(v)
    v.resize(1000, 700)
    v.show()
    qtbot.waitExposed(v)
    yield v
    v.shutdown()


def show(viewer: SlideViewer, path: Path, record=None) -> None:
    """Open ``path`` in the viewer; ``record`` wraps the tile source's decode function before any tile is read."""
    loaded = load_slide(str(path))
    loaded.slide.close()
    viewer.set_slide(loaded.path, loaded.info, loaded.thumbnail)
    if record is not None:
        original = viewer.source.read
        viewer.source.read = lambda key: record(key, original)


def centre_pixel(viewer: SlideViewer) -> QColor:
    image = viewer.viewport().grab().toImage()
    return QColor(image.pixel(image.width() // 2, image.height() // 2))


# --- geometry and cache (no widgets) --------------------------------------------------------------------------
def test_viewer_tile_grid_picks_the_nearest_finer_level_and_covers_a_rect():
    grid = TileGrid([(4096, 3072), (1024, 768), (256, 192)], [1.0, 4.0, 16.0])
    assert grid.level_for_scale(2.0) == 0           # magnified beyond the scan: level 0
    assert grid.level_for_scale(1.0) == 0
    assert grid.level_for_scale(0.3) == 0           # 3.3 screen-downsample: level 1 (4×) would upsample
    assert grid.level_for_scale(0.25) == 1
    assert grid.level_for_scale(0.1) == 1
    assert grid.level_for_scale(1 / 16) == 2
    assert grid.level_for_scale(1 / 4.03) == 1      # 1 % tolerance for rounded level sizes
    assert grid.tiles_across(0) == 8 and grid.tiles_down(0) == 6 and grid.tile_count(2) == 1
    assert grid.tile_rect(TileKey(1, 1, 1)) == (2048.0, 2048.0, 2048.0, 1024.0)  # edge tile cut at the border
    assert grid.tile_pixels(TileKey(2, 0, 0)) == (256, 192)
    keys = grid.keys_in_rect(0, 600, 100, 1500, 600)
    assert keys == [TileKey(0, c, r) for r in (0, 1) for c in (1, 2)]
    ring = grid.keys_in_rect(0, 600, 100, 1500, 600, margin=1)
    assert set(keys) < set(ring) and len(ring) == 4 * 3  # clipped at the slide's top-left corner
    assert grid.keys_in_rect(0, -900, -900, -10, -10) == []
    ordered = grid.by_distance(grid.keys_in_rect(0, 0, 0, W0, H0), 4000, 3000)
    assert ordered[0] == TileKey(0, 7, 5)


def test_viewer_tile_cache_is_lru_bounded_in_bytes_and_keeps_pinned_tiles():
    tile = QImage(64, 64, QImage.Format.Format_RGB32)           # 16 KiB
    cache = TileCache(max_bytes=3 * tile.sizeInBytes(), pinned=lambda k: k == "pinned")
    cache.put("pinned", tile)
    cache.put("a", tile)
    cache.put("b", tile)
    assert cache.get("a") is not None                             # "a" is now the most recent
    cache.put("c", tile)                                          # over budget: the oldest unpinned ("b") goes
    assert "b" not in cache and {"pinned", "a", "c"} <= set(cache.keys())
    assert cache.bytes <= cache.max_bytes and cache.evictions == 1
    cache.peek("a")                                               # peeking does not refresh "a"
    cache.put("d", tile)
    assert "a" not in cache and "pinned" in cache


def test_viewer_scale_bar_lengths_are_round_and_true_to_size():
    um, px = nice_length_um(0.5, target_px=120)                   # 0.5 µm per screen pixel: 60 µm fits
    assert (um, px) == (50.0, 100.0)
    um, px = nice_length_um(16.0, target_px=120)                  # 1920 µm fits → 1 mm
    assert um == 1000.0 and px == pytest.approx(62.5)
    assert format_length(1000.0) == "1 mm" and format_length(2500.0) == "2.5 mm"
    assert format_length(200.0) == "200 \u00b5m"


# --- the live viewer ----------------------------------------------------------------------------------------
def test_viewer_opens_the_bundled_slide_sharp_with_scale_bar_and_overview(qtbot, viewer):
    show(viewer, CMU)
    wait_painted(qtbot, viewer)
    assert viewer.fit_mode and viewer.level == 0 and viewer.grid.level_count == 1
    assert viewer.is_fully_loaded() and viewer.layer.stats.fallback == 0
    assert viewer.layer.stats.drawn == viewer.layer.stats.wanted > 0
    assert viewer.magnification == pytest.approx(20 * viewer.zoom)
    # the canvas shows the slide, not the empty canvas colour
    assert centre_pixel(viewer) != CANVAS_COLOR
    # a scale bar in µm, as long on screen as it says
    bar = viewer.scale_bar
    assert bar.isVisible() and bar.label.endswith(("\u00b5m", "mm"))
    assert bar.length_px == pytest.approx(bar.length_um / (0.499 / viewer.zoom), rel=0.01)
    assert viewer.minimap.isVisible()
    assert viewer.available_presets() == [1, 2, 5, 10, 20, 40]  # up to the wheel's limit, 2× the scan


def test_viewer_zoom_and_pan_change_the_visible_region_and_the_level(qtbot, viewer, pyramid):
    show(viewer, pyramid)
    wait_painted(qtbot, viewer)
    fit_rect, fit_level = viewer.visible_rect(), viewer.level
    assert fit_rect.contains(QRectF(0, 0, W0, H0)) and fit_level == 1

    wait_painted(qtbot, viewer, lambda: viewer.set_magnification(20))
    assert viewer.zoom == pytest.approx(1.0) and viewer.level == 0
    zoomed = viewer.visible_rect()
    assert zoomed.width() == pytest.approx(viewer.viewport().width(), abs=2)
    assert fit_rect.contains(zoomed) and zoomed.width() < fit_rect.width() / 3
    keys_before = set(viewer.visible_keys())

    wait_painted(qtbot, viewer, lambda: viewer.pan_by(600, 300))
    panned = viewer.visible_rect()
    assert panned.left() - zoomed.left() == pytest.approx(600, abs=1)
    assert panned.top() - zoomed.top() == pytest.approx(300, abs=1)
    assert set(viewer.visible_keys()) != keys_before

    # a small window zoomed all the way out reaches the coarsest level
    viewer.resize(320, 240)
    wait_painted(qtbot, viewer, viewer.fit_to_window)
    wait_painted(qtbot, viewer, lambda: viewer.set_zoom(0))
    assert viewer.level == 2 and viewer.zoom == pytest.approx(viewer.zoom_limits()[0])


def test_viewer_wheel_and_double_click_zoom_around_the_pointer(qtbot, viewer, pyramid):
    show(viewer, pyramid)
    wait_painted(qtbot, viewer)
    vp = viewer.viewport()
    cursor = QPointF(vp.width() * 0.3, vp.height() * 0.6)
    under = viewer.mapToScene(cursor.toPoint())
    zoom = viewer.zoom
    wheel = QWheelEvent(cursor, vp.mapToGlobal(cursor), QPoint(0, 0), QPoint(0, 120), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, wheel)
    assert viewer.zoom == pytest.approx(zoom * viewer.ZOOM_STEP, rel=1e-3)
    moved = viewer.mapFromScene(under) - cursor.toPoint()
    assert abs(moved.x()) <= 2 and abs(moved.y()) <= 2

    zoom = viewer.zoom
    QTest.mouseDClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, cursor.toPoint())
    assert viewer.zoom == pytest.approx(zoom * 2, rel=1e-3)
    moved = viewer.mapFromScene(under) - cursor.toPoint()
    assert abs(moved.x()) <= 2 and abs(moved.y()) <= 2

    viewer.set_magnification(10)
    assert viewer.magnification == pytest.approx(10)
    viewer.fit_to_window()
    assert viewer.fit_mode


def test_viewer_decodes_only_visible_tiles_and_never_on_the_ui_thread(qtbot, viewer, pyramid):
    decoded: list[tuple[TileKey, int]] = []

    def record(key, read):
        decoded.append((key, threading.get_ident()))
        return read(key)

    show(viewer, pyramid, record)
    wait_painted(qtbot, viewer)
    wait_painted(qtbot, viewer, lambda: viewer.set_magnification(20))
    wait_painted(qtbot, viewer, lambda: viewer.pan_by(400, 0))

    ui = threading.get_ident()
    assert decoded and all(tid != ui for _key, tid in decoded)
    assert len({tid for _key, tid in decoded}) <= viewer.loader.threads
    fine = [k for k, _tid in decoded if k.level == 0]
    # level-0 tiles were read only around what was on screen (visible + one-tile ring), never the whole level
    ring = set(viewer.visible_keys(margin=1))
    viewer.pan_by(-400, 0)
    ring |= set(viewer.visible_keys(margin=1))
    assert set(fine) <= ring
    assert len(set(fine)) < viewer.grid.tile_count(0)
    assert len(fine) == len(set(fine))  # no tile decoded twice (the cache holds them)


def test_viewer_event_loop_is_never_blocked_while_tiles_load(qtbot, viewer, pyramid):
    decoded, decoded_on = [], []

    def record(key, read):
        decoded.append(key)
        decoded_on.append(threading.get_ident())
        return read(key)

    show(viewer, pyramid, record)
    with Heartbeat() as beat:
        wait_painted(qtbot, viewer)
        for mag in (5, 10, 20):
            wait_painted(qtbot, viewer, lambda m=mag: viewer.set_magnification(m))
        for dx, dy in ((700, 0), (0, 500), (-700, 0), (700, 400), (500, -300), (-900, 200), (600, 600),
                       (-1200, -300), (900, -500)):
            wait_painted(qtbot, viewer, lambda: viewer.pan_by(dx, dy))
        wait_painted(qtbot, viewer, viewer.fit_to_window)
    print(f"longest event-loop gap {beat.max_gap_ms:.1f} ms over {beat.beats} beats (UI-thread CPU at most "
          f"{beat.max_cpu_gap_ms:.1f} ms between beats); {len(decoded)} tiles decoded")
    assert len(decoded) >= 25, "the walk should make the viewer decode many tiles"
    assert beat.beats > 0   # the heartbeat ran while the tiles loaded (how often depends on the machine's speed)
    ui = threading.get_ident()
    assert all(tid != ui for tid in decoded_on), "a tile was decoded on the UI thread"
    # the UI thread's own CPU time between two beats (wall-clock gaps also count a loaded machine's other work;
    # benchmarks/ui_stalls.py measures those): painting only, decoding a screen of tiles here would take longer
    assert beat.max_cpu_gap_ms < 50, f"the UI thread worked {beat.max_cpu_gap_ms:.0f} ms without a break"


def test_viewer_shows_a_coarser_level_while_finer_tiles_arrive(qtbot, viewer, pyramid):
    def slow(key, read):
        if key.level == 0:
            time.sleep(0.4)  # a slow disk: fine tiles arrive late
        return read(key)

    show(viewer, pyramid, slow)
    wait_painted(qtbot, viewer)                    # level 1 (and the pinned level 2) are cached
    viewer.set_magnification(20)
    qtbot.wait(150)
    viewer.viewport().repaint()
    stats = viewer.layer.stats
    assert stats.level == 0 and stats.wanted > 0
    assert stats.drawn < stats.wanted and stats.fallback > 0   # level-1 tiles stand in for missing level-0 ones
    assert centre_pixel(viewer) != CANVAS_COLOR
    wait_painted(qtbot, viewer)
    viewer.viewport().repaint()
    stats = viewer.layer.stats
    assert stats.drawn == stats.wanted and stats.fallback == 0 and not stats.missing_keys


def test_viewer_cache_stays_bounded_while_panning(qtbot, pyramid):
    budget = 12 * TILE_SIZE * TILE_SIZE * 4
    v = SlideViewer(cache_bytes=budget)
    qtbot.addWidget(v)
    v.resize(700, 500)
    v.show()
    qtbot.waitExposed(v)
    try:
        show(v, pyramid)
        wait_painted(qtbot, v, lambda: v.set_magnification(20))
        v.centre_on(QPointF(300, 300))
        for _ in range(4):
            for _ in range(5):
                wait_painted(qtbot, v, lambda: v.pan_by(700, 0))
            wait_painted(qtbot, v, lambda: v.pan_by(-3500, 450))
        assert v.cache.evictions > 0
        assert v.cache.bytes <= max(budget, v.cache.floor_bytes) + 4 * TILE_SIZE * TILE_SIZE  # + pinned level 2
        assert v.is_fully_loaded()
    finally:
        v.shutdown()


def test_viewer_minimap_click_centres_the_view_there(qtbot, viewer, pyramid):
    show(viewer, pyramid)
    wait_painted(qtbot, viewer, lambda: viewer.set_magnification(20))
    mm = viewer.minimap
    assert mm.isVisible()
    target = mm.from_level0(QRectF(3000, 2200, 0, 0)).topLeft()
    QTest.mouseClick(mm, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, target.toPoint())
    centre = viewer.visible_rect().center()
    assert abs(centre.x() - 3000) < 40 and abs(centre.y() - 2200) < 40  # one minimap pixel ≈ 24 slide pixels
    assert viewer.zoom == pytest.approx(1.0)
