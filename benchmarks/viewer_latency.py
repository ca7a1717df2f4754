"""Viewer latency: time from a pan or zoom to a fully painted viewport, cold and warm tile cache.

Two slides:

- a synthetic pyramid of ``--size`` × ``--size`` pixels (default 100,000: a 25 × 25 mm scan at 0.25 µm/px, 40×),
  written at run time as an Aperio-style tiled JPEG TIFF (256 px tiles, levels 1, 4, 16, 64, 256). Its tiles are
  real pixels: 256 px crops of the bundled CMU slide, JPEG-encoded once and reused, laid out as tissue blobs on
  glass, so decoding costs what a real scan's tiles cost;
- the bundled real slide (CMU-1-Small-Region.svs, one level).

Moves, each timed from the call that changes the view to the end of the paint that shows every visible tile
(the viewer's ``fully_painted`` signal):

- ``jump (cold)``: centre on a random tissue point at 1:1 (40× on the synthetic slide, 20× on CMU) with an empty
  tile cache: a whole screen of new tiles;
- ``pan``: a quarter-screen pan at 1:1 just after arriving at a new place (the one-tile prefetch ring may be
  loading still);
- ``zoom step``: one wheel step (×1.25 or ÷1.25) from a painted view at a random zoom, through the levels;
- ``revisit (warm)``: views already seen, every tile cached: the cost of painting alone.

An empty cache keeps the pinned coarsest level, as the app always does (nothing on a one-level slide); the file
itself is in the OS page cache, as a slide being read is. Every number is printed as median and p95 in
milliseconds, with the longest event-loop stall seen while the viewer worked on the moves.

    .venv/bin/python benchmarks/viewer_latency.py [--size 100000] [--moves 30] [--viewport 1600x1000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from PySide6.QtCore import QEventLoop, QPointF, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from dnd_engine.slides import open_slide  # noqa: E402
from dnd_gui.jobs.background import favour_the_ui_thread  # noqa: E402
from dnd_gui.jobs.slide_loader import load_slide  # noqa: E402
from dnd_gui.viewer import SlideViewer  # noqa: E402
from dnd_gui.viewer.tile_loader import default_threads  # noqa: E402

CMU = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"
TILE = 256
DOWNSAMPLES = (1, 4, 16, 64, 256)
MPP, MAG = 0.25, 40
JPEG = dict(photometric="rgb", compression="jpeg", compressionargs={"level": 80}, metadata=None)


# --- the synthetic pyramid ----------------------------------------------------------------------------------
def _encoded_tiles(crops: list[np.ndarray]) -> list[bytes]:
    """Each crop as the exact JPEG segment tifffile writes for it (so the big file's tags match its tiles)."""
    buf = io.BytesIO()
    mosaic = np.concatenate(crops, axis=1)
    with tifffile.TiffWriter(buf) as tw:
        tw.write(mosaic, tile=(TILE, TILE), **JPEG)
    buf.seek(0)
    with tifffile.TiffFile(buf) as tf:
        page, fh = tf.pages[0], tf.filehandle
        out = []
        for off, n in zip(page.dataoffsets, page.databytecounts):
            fh.seek(off)
            out.append(fh.read(n))
    return out


def _tile_library(rng: np.random.Generator, n_tissue: int = 48) -> tuple[list[bytes], bytes]:
    """(tissue tiles, glass tile): real 256 px crops of the bundled slide, JPEG-encoded once."""
    with open_slide(CMU) as slide:
        rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions))
    crops, tries = [], 0
    while len(crops) < n_tissue and tries < 5000:
        tries += 1
        y, x = rng.integers(0, rgb.shape[0] - TILE), rng.integers(0, rgb.shape[1] - TILE)
        crop = rgb[y:y + TILE, x:x + TILE]
        if (crop.mean(axis=2) < 200).mean() > 0.5:   # mostly tissue
            crops.append(np.ascontiguousarray(crop))
    glass = np.full((TILE, TILE, 3), 242, np.uint8) + rng.integers(-3, 4, (TILE, TILE, 3)).astype(np.uint8)
    encoded = _encoded_tiles(crops + [glass])
    return encoded[:-1], encoded[-1]


def _tissue_layout(n_x: int, n_y: int, rng: np.random.Generator) -> np.ndarray:
    """Which level-0 tiles hold tissue: a few large elliptical pieces covering about 40 % of the slide."""
    yy, xx = np.mgrid[0:n_y, 0:n_x] / max(n_x, n_y)
    inside = np.zeros((n_y, n_x), bool)
    for _ in range(5):
        cx, cy = rng.uniform(0.2, 0.8, 2)
        rx, ry = rng.uniform(0.12, 0.28, 2)
        inside |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return inside


def write_synthetic_pyramid(path: Path, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tissue_tiles, glass = _tile_library(rng)
    n0 = -(-size // TILE)
    layout = _tissue_layout(n0, n0, rng)
    desc = (f"Aperio Image Library v12.0.15\r\n{size}x{size} [0,0 {size}x{size}] ({TILE}x{TILE}) JPEG/RGB Q=80"
            f"|AppMag = {MAG}|MPP = {MPP}|Filename = {path.name}|Generator = benchmarks/viewer_latency.py")

    def tiles(ds: int):
        w = max(1, size // ds)
        n = -(-w // TILE)
        for ty in range(n):
            for tx in range(n):
                # the tissue layout seen at this level: the tile covers level-0 tiles [tx*ds, (tx+1)*ds)
                cy, cx = min(n0 - 1, ty * ds + ds // 2), min(n0 - 1, tx * ds + ds // 2)
                yield tissue_tiles[(tx * 7 + ty * 13) % len(tissue_tiles)] if layout[cy, cx] else glass

    thumb = np.full((TILE, TILE, 3), 242, np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, ds in enumerate(DOWNSAMPLES):
            w = max(1, size // ds)
            res = dict(resolution=(1e4 / MPP / ds,) * 2, resolutionunit="CENTIMETER")
            tw.write(tiles(ds), shape=(w, w, 3), dtype=np.uint8, tile=(TILE, TILE),
                     description=desc if i == 0 else None, **res, **JPEG)
            if i == 0:
                tw.write(thumb, **JPEG)  # Aperio's stripped thumbnail page after level 0
    return path


# --- measuring ------------------------------------------------------------------------------------------------
class Stall:
    """The longest gap between two 5 ms timer ticks while the viewer works on a move (armed by :func:`timed`):
    how long the UI was ever frozen. The benchmark's own bookkeeping between moves is not counted."""

    def __init__(self):
        self.max_gap = 0.0
        self._last = None
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def arm(self) -> None:
        self._last = time.perf_counter()

    def disarm(self) -> None:
        self._tick()
        self._last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.max_gap = max(self.max_gap, now - self._last)
            self._last = now


def timed(viewer: SlideViewer, action, stall: Stall | None = None, timeout_s: float = 60.0) -> float:
    """Milliseconds from ``action()`` to the end of the paint that shows every visible tile."""
    loop = QEventLoop()
    viewer.fully_painted.connect(loop.quit)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    if stall is not None:
        stall.arm()
    t0 = time.perf_counter()
    action()
    if viewer.paint_pending:
        loop.exec()
    dt = (time.perf_counter() - t0) * 1000.0
    if stall is not None:
        stall.disarm()
    viewer.fully_painted.disconnect(loop.quit)
    if not timer.isActive():
        raise RuntimeError(f"the view did not finish painting within {timeout_s:.0f} s")
    return dt


def open_in(viewer: SlideViewer, path: Path) -> None:
    loaded = load_slide(str(path))
    loaded.slide.close()
    timed(viewer, lambda: viewer.set_slide(loaded.path, loaded.info, loaded.thumbnail))


def tissue_points(viewer: SlideViewer, n: int, rng: random.Random) -> list[QPointF]:
    """Random level-0 points on tissue, found from the thumbnail (dark enough to be stained)."""
    thumb = viewer.thumbnail()
    w0, h0 = viewer.grid.dimensions
    points, tries = [], 0
    while len(points) < n and tries < 100_000:
        tries += 1
        x, y = rng.randrange(thumb.width()), rng.randrange(thumb.height())
        c = thumb.pixelColor(x, y)
        if (c.red() + c.green() + c.blue()) / 3 < 215:
            points.append(QPointF((x + 0.5) * w0 / thumb.width(), (y + 0.5) * h0 / thumb.height()))
    return points


def cold(viewer: SlideViewer) -> None:
    """Empty the tile cache as a newly opened slide has it: only the pinned coarsest level stays, and nothing
    when the slide has one level (then the coarsest level is the one drawn)."""
    viewer.cache.clear(keep_pinned=viewer.grid.level_count > 1)


def measure(viewer: SlideViewer, moves: int, seed: int, stall: Stall) -> dict[str, list[float]]:
    rng = random.Random(seed)
    one_to_one = 1.0  # screen pixels per scanned pixel: the scan's own magnification
    out: dict[str, list[float]] = {"jump (cold)": [], "pan": [], "zoom step": [], "revisit (warm)": []}
    points = tissue_points(viewer, moves, rng)
    vp = viewer.viewport()
    for p in points:                                  # jumps to new places at 1:1, empty cache
        cold(viewer)
        out["jump (cold)"].append(timed(viewer, lambda: viewer.centre_on(p, one_to_one), stall))
    for i in range(moves):                            # quarter-screen pans just after arriving somewhere new
        dx, dy = rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1)])
        cold(viewer)
        timed(viewer, lambda: viewer.centre_on(points[i], one_to_one))
        out["pan"].append(timed(viewer, lambda: viewer.pan_by(dx * vp.width() / 4, dy * vp.height() / 4),
                                stall))
    for i in range(moves):                            # one wheel step from a painted view, through the levels
        cold(viewer)
        timed(viewer, lambda: viewer.centre_on(points[i], one_to_one / 1.25 ** rng.randrange(0, 20)))
        factor = viewer.ZOOM_STEP if rng.random() < 0.5 else 1 / viewer.ZOOM_STEP
        out["zoom step"].append(timed(viewer, lambda: viewer.zoom_by(factor), stall))
    viewer.cache.max_bytes = 1 << 40                  # revisits: everything seen stays cached
    for p in points:
        timed(viewer, lambda: viewer.centre_on(p, one_to_one))
    for _ in range(2):
        for p in points:
            out["revisit (warm)"].append(timed(viewer, lambda: viewer.centre_on(p, one_to_one), stall))
    return out


def summary(name: str, results: dict[str, list[float]]) -> list[dict]:
    rows = []
    for move, ms in results.items():
        a = np.asarray(ms)
        rows.append({"slide": name, "move": move, "n": len(a), "median_ms": float(np.median(a)),
                     "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max())})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="synthetic slide side in pixels (≥ 100000)")
    parser.add_argument("--moves", type=int, default=30, help="moves per kind")
    parser.add_argument("--viewport", default="1600x1000", help="viewer size WxH in pixels")
    parser.add_argument("--threads", type=int, default=None, help="tile decoding threads (default: per core)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the synthetic slide")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic slide")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.viewport.lower().split("x"))

    favour_the_ui_thread()  # as the app does at start
    app = QApplication.instance() or QApplication([])
    tmp = tempfile.TemporaryDirectory(dir=args.workdir) if not args.keep else None
    folder = Path(tmp.name) if tmp else (args.workdir or Path(tempfile.mkdtemp()))
    folder.mkdir(parents=True, exist_ok=True)
    big = folder / f"synthetic_{args.size}.svs"
    t0 = time.perf_counter()
    write_synthetic_pyramid(big, args.size, args.seed)
    print(f"wrote {big.name}: {args.size} x {args.size} px, {len(DOWNSAMPLES)} levels, "
          f"{big.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    rows, stalls = [], {}
    for name, path in ((f"synthetic {args.size // 1000}k", big), ("CMU-1-Small-Region", CMU)):
        viewer = SlideViewer(threads=args.threads)
        viewer.resize(w, h)
        viewer.show()
        app.processEvents()
        open_in(viewer, path)
        stall = Stall()
        rows += summary(name, measure(viewer, args.moves, args.seed, stall))
        stalls[name] = stall.max_gap * 1000
        viewer.shutdown()
        viewer.close()

    threads = default_threads() if args.threads is None else args.threads
    print(f"\nviewer latency, viewport {w}x{h}, {threads} decoding threads, {os.cpu_count()} CPU cores, load "
          f"average {os.getloadavg()[0]:.1f} (ms from the move to a fully painted view)")
    print(f"{'slide':<22} {'move':<15} {'n':>4} {'median':>8} {'p95':>8} {'max':>8}")
    for r in rows:
        print(f"{r['slide']:<22} {r['move']:<15} {r['n']:>4} {r['median_ms']:>8.1f} {r['p95_ms']:>8.1f} "
              f"{r['max_ms']:>8.1f}")
    for name, gap in stalls.items():
        print(f"longest event-loop stall while measuring {name}: {gap:.0f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"viewport": [w, h], "threads": threads, "cpu_count": os.cpu_count(),
                                         "load_average_1min": round(os.getloadavg()[0], 2), "size": args.size,
                                         "moves": args.moves, "rows": rows, "max_stall_ms": stalls}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
