"""Issue 21, items 1 and 2: the read stage near its decode bound, and the benchmark's reference arms.

Item 1: a band of patches is written in place into one batch (in a reading worker: straight into shared memory)
and resized a chunk at a time, within the reference's pixels; the benchmark's decode bound (d) decodes exactly the
tiles the reader needs, once each, and ``--read-bound`` ends with their ratio. Item 2: on CUDA the reference arm
(a) is CLAM's own loader (8 workers, pinned memory, batch 256, fp32), checked here on a CPU by its construction.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import ROOT
from dnd_engine.features import ExtractConfig, build_extractor
from dnd_engine.features.extract import tile_bands
from dnd_engine.features.patch_dataset import PatchReader, ReadBatch, collate_patches
from dnd_engine.patching import PatchParams, make_patch_grid
from dnd_engine.slides import open_slide
from dnd_engine.slides import tiles as tiles_mod
from dnd_engine.slides.resize import resize_patch
from dnd_engine.slides.tiles import MAX_MEAN_ABS_DIFF, TileReader, plan_tiles
from dnd_engine.tissue import segment_tissue


def _bench():
    """benchmarks/extract_throughput.py as a module (it is a script, not a package), loaded once."""
    name = "extract_throughput_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "extract_throughput.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod               # dataclasses and pickled functions look their module up
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _grid_and_spec(path, out_size: int, magnification: float = 10.0):
    with open_slide(path) as slide:
        tissue = segment_tissue(slide, patch_area_px0=512 * 512)
        grid = make_patch_grid(slide, tissue, PatchParams(magnification=magnification, patch_size=256))
        return grid, plan_tiles(slide, grid, out_size, verify=0)


def _reference(path, spec, coords) -> list:
    with open_slide(path) as slide:
        return [resize_patch(slide.read_region((int(x), int(y)), spec.level, (spec.read_size,) * 2),
                             spec.out_size) for x, y in coords]


@pytest.mark.parametrize("out_size", [224, 256])      # resized from 256 px; or the DCT scale lands on it (blur)
def test_patches_are_written_in_place_into_one_batch(cmu_slide, out_size):
    grid, spec = _grid_and_spec(cmu_slide, out_size)
    coords = grid.coords
    out = np.full((len(coords), out_size, out_size, 3), 7, np.uint8)
    with TileReader(spec) as reader:
        assert reader.read_patches_into(coords, out) is out
        assert reader.tiles_decoded == len(reader.tiles_for(coords))      # still each tile once
    with TileReader(spec) as reader:
        one_by_one = list(reader.read_patches(coords))
    assert len(one_by_one) == len(coords)
    assert all(np.array_equal(a, b) for a, b in zip(out, one_by_one))
    mads = [np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in
            zip(out, _reference(cmu_slide, spec, coords))]
    assert max(mads) <= MAX_MEAN_ABS_DIFF


def test_a_chunk_of_regions_is_resized_in_one_call_as_pil_does(cmu_slide, monkeypatch):
    grid, spec = _grid_and_spec(cmu_slide, 224)
    assert spec.region_size == 256                               # 512 px at 1/2, then 256 → 224
    seen = []
    real = tiles_mod._resize_chunk

    def spy(regions, out):
        real(regions, out)
        seen.append((regions.copy(), out.copy()))

    monkeypatch.setattr(tiles_mod, "_resize_chunk", spy)
    with TileReader(spec) as reader:
        patches = list(reader.read_patches(grid.coords))
    n = len(grid.coords)
    step = min(n, tiles_mod.RESIZE_CHUNK_BYTES // (256 * 256 * 3))
    assert len(seen) == math.ceil(n / step) and sum(len(o) for _, o in seen) == n
    for regions, outs in seen:                   # PIL's antialiased bilinear, up to rounding
        for region, got in zip(regions, outs):
            want = resize_patch(Image.fromarray(region), 224)
            assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 2
    assert all(np.array_equal(p, o) for p, o in zip(patches, np.concatenate([o for _, o in seen])))


def _worker_view(batch):
    """Runs in the reading worker: what the band came back as there, before it is sent."""
    return type(batch).__name__, bool(batch.imgs.is_shared()), collate_patches(batch)


def test_a_band_comes_back_as_one_batch_in_shared_memory(cmu_slide):
    grid, spec = _grid_and_spec(cmu_slide, 224)
    bands = tile_bands(0, grid, spec, batch_size=64)
    loader = DataLoader(PatchReader(), batch_sampler=bands[:1], num_workers=1, collate_fn=_worker_view)
    kind, shared, (imgs, reqs, errors) = next(iter(loader))
    assert kind == "ReadBatch" and shared            # written where the main process reads it: no copy to send
    assert imgs.dtype == torch.uint8 and tuple(imgs.shape) == (len(bands[0].rows), 224, 224, 3)
    assert [r.row for r in reqs] == bands[0].rows.tolist() and not any(errors)
    with TileReader(spec) as reader:
        want = np.stack(list(reader.read_patches(bands[0].coords)))
    assert np.array_equal(imgs.numpy(), want)
    # in this process (no worker) the same band is an ordinary tensor, and collates to the same patches
    batch = PatchReader().read_band(bands[0])
    assert isinstance(batch, ReadBatch) and not batch.imgs.is_shared()
    assert np.array_equal(collate_patches(batch)[0].numpy(), want)


def test_decode_bound_decodes_the_tiles_the_reader_needs_once_each(cmu_slide):
    bench = _bench()
    grid, spec = _grid_and_spec(cmu_slide, 224)
    tiles = bench.decode_bound_tiles(spec, grid.coords)
    assert len(tiles) == len(set(tiles)) and tiles == sorted(tiles, key=lambda t: (t[1], t[0]))
    with TileReader(spec) as reader:
        for _ in reader.read_patches(grid.coords):
            pass
        assert reader.tiles_decoded == len(tiles)
    assert bench.decode_bound(spec, tiles, 0) == len(tiles)
    assert bench.decode_bound(spec, tiles, 2) == len(tiles)          # shares over two processes


def test_read_bound_mode_ends_with_the_ratio(cmu_slide):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "extract_throughput.py"), "--read-bound",
                          "--slides", str(cmu_slide), "--repeats", "1", "--workers", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"read stage / decode bound: \d+\.\d\d", lines[-1]), lines[-1]
    assert any("(d)" in line and "tiles/s" in line for line in lines)


def test_reference_arm_on_cuda_is_clams_own_loader(cmu_slide):
    bench = _bench()
    ext = build_extractor("resnet50_trunc", random_init=True, device="cpu", precision="fp32")
    grid, spec = _grid_and_spec(cmu_slide, 224)
    ds = bench.ClamBag(cmu_slide, grid.coords[:3], grid.patch_level, grid.read_size, 224, ext.mean, ext.std)
    cuda = bench.clam_loader(ds, torch.device("cuda"))          # built only: nothing is moved to a GPU here
    assert (cuda.num_workers, cuda.pin_memory, cuda.batch_size) == (8, True, 256)
    cpu = bench.clam_loader(ds, torch.device("cpu"))            # CLAM's CPU settings: no workers, not pinned
    assert (cpu.num_workers, cpu.pin_memory, cpu.batch_size) == (0, False, 256)
    # each item as CLAM's dataset makes it: the reference read and resize, as a normalised fp32 CHW tensor
    img, coord = ds[1]
    ref = _reference(cmu_slide, spec, grid.coords[1:2])[0]
    want = (torch.from_numpy(ref).permute(2, 0, 1).float() / 255 - ext.mean[0]) / ext.std[0]
    assert img.dtype == torch.float32 and tuple(img.shape) == (3, 224, 224)
    assert torch.allclose(img, want, atol=1e-6) and coord.tolist() == grid.coords[1].tolist()
    # fp32 even when dnd extract's encoder runs at a lower precision
    ext.net.to(torch.bfloat16)
    net = bench.clam_net(ext)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(p.dtype == torch.bfloat16 for p in ext.net.parameters())     # a copy: (b)'s encoder untouched


def test_clam_loop_runs_every_patch_once(cmu_slide, tmp_path):
    bench = _bench()
    ext = build_extractor("stain_stats", random_init=True, device="cpu")
    cfg = ExtractConfig(extractor="stain_stats", overwrite=True, num_workers=0)
    n = bench.clam_run([cmu_slide], str(tmp_path), cfg, ext)
    feats = torch.load(next(tmp_path.glob("clam_*.pt")), weights_only=True)
    assert n == len(feats) > 0 and feats.shape[1] == ext.dim and torch.isfinite(feats).all()


def _read_in_child(spec, coords, conn) -> None:
    with TileReader(spec) as reader:
        conn.send(len(list(reader.read_patches(coords))))


def test_a_process_forked_after_torch_ran_threads_still_resizes(cmu_slide):
    """Slide preparation runs in children forked from a process whose encoder ran torch's thread pool; the
    plan's check read resizes there. A parallel region in such a child waits for threads it does not have."""
    import multiprocessing as mp
    grid, spec = _grid_and_spec(cmu_slide, 224)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.zeros((64, 3, 256, 256), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)   # threads started
        ctx = mp.get_context("fork")
        here, there = ctx.Pipe()
        child = ctx.Process(target=_read_in_child, args=(spec, grid.coords[:8], there))
        child.start()
        done = here.poll(300)           # a hang detector, not a speed bound: the read takes well under a second
        got = here.recv() if done else None
        if child.is_alive():
            child.kill()
        child.join()
    finally:
        torch.set_num_threads(threads)
    assert got == 8, "the forked child hung in the resize"
