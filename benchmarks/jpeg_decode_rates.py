"""JPEG tiles decoded per second: OpenCV on one core (full and DCT 1/2 scale) and, on a GPU, batched nvJPEG.

Why: it bounds what the tile reader can feed an encoder. The tiles are the bundled slide's own 240-px JPEG tiles
(the file's JPEG tables spliced in), decoded again and again. The colour transform is left to the decoders'
defaults: speed does not depend on it. Usage: .venv/bin/python benchmarks/jpeg_decode_rates.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnd_engine.patching import PatchParams, make_patch_grid  # noqa: E402
from dnd_engine.slides import open_slide, tiles  # noqa: E402
from dnd_engine.tissue import segment_tissue  # noqa: E402

BUNDLED = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"


def tile_streams() -> tuple[list[bytes], int]:
    with open_slide(BUNDLED) as s:
        tissue = segment_tissue(s, patch_area_px0=512 * 512)
        grid = make_patch_grid(s, tissue, PatchParams(magnification=10, patch_size=256))
        spec = tiles.plan_tiles(s, grid, 256, verify=0)
    with tiles.TileReader(spec) as r:
        streams = []
        for ty in range(spec.tiles_down):
            for tx in range(spec.tiles_across):
                d = r.read_tile_bytes(tx, ty)
                streams.append(r.whole_jpeg(d))
    return streams, spec.tile_width


def main() -> None:
    cv2.setNumThreads(1)
    streams, side = tile_streams()
    print(f"{len(streams)} JPEG tiles of {side} px from {BUNDLED.name}; opencv {cv2.__version__}, torch {torch.__version__}")
    for flags, name in ((cv2.IMREAD_COLOR, "full scale"), (cv2.IMREAD_REDUCED_COLOR_2, "1/2 scale (DCT)")):
        bufs = [np.frombuffer(d, np.uint8) for d in streams] * 5
        t = time.perf_counter()
        for b in bufs:
            cv2.imdecode(b, flags)
        print(f"OpenCV, one core, {name}: {len(bufs) / (time.perf_counter() - t):.0f} tiles/s")
    if not torch.cuda.is_available():
        print("nvJPEG: no CUDA device here")
        return
    from torchvision.io import decode_jpeg
    data = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in streams]
    data = (data * (2048 // len(data) + 1))[:2048]
    for bs in (256, 1024, 2048):
        decode_jpeg(data[:bs], device="cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            decode_jpeg(data[:bs], device="cuda")
        torch.cuda.synchronize()
        print(f"nvJPEG on {torch.cuda.get_device_name()}, batch {bs}, full scale: "
              f"{5 * bs / (time.perf_counter() - t):.0f} tiles/s")


if __name__ == "__main__":
    main()
