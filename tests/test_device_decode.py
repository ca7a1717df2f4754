"""JPEG tiles decoded on the encoder's device (dnd_engine.features.device_decode).

The assembly (mosaic, crop, white beyond the edges, antialiased resize) is plain torch, so it runs here on the
CPU through torchvision's CPU decoder and is held to the reference reader like the tile reader itself. The
nvJPEG decode is covered by the CUDA test, run where a GPU is.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from dnd_engine.errors import DnDError
from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for
from dnd_engine.features import device_decode as dd
from dnd_engine.features.extract import tile_bands
from dnd_engine.patching import PatchParams, make_patch_grid
from dnd_engine.slides import open_slide
from dnd_engine.slides.resize import resize_patch
from dnd_engine.slides.tiles import TileReader, plan_tiles
from dnd_engine.tissue import TissueMask
from pyramid import tissue_like, write_pyramid


def _every_patch_grid(slide, magnification=10.0):
    """Every grid position, edges included (patches that run past the level's right and bottom edges)."""
    W, H = slide.dimensions
    everything = TissueMask(mask=np.ones((H // 16 + 1, W // 16 + 1), bool), downsample=16.0)
    return make_patch_grid(slide, everything, PatchParams(magnification=magnification, min_tissue=0.01))


def _device_patches(spec, coords, device="cpu"):
    with TileReader(spec) as reader:
        block = reader.raw_block(coords)
    assert block is not None
    return dd.DeviceDecoder(torch.device(device)).patches(block).cpu().numpy()


def _worst_mad(slide, spec, coords, patches):
    worst = 0.0
    for (x, y), p in zip(coords, patches):
        ref = resize_patch(slide.read_region((int(x), int(y)), spec.level, (spec.read_size,) * 2), spec.out_size)
        assert p.shape == ref.shape and p.dtype == np.uint8
        worst = max(worst, float(np.abs(p.astype(np.int16) - ref.astype(np.int16)).mean()))
    return worst


@pytest.mark.parametrize("out_size", [256, 224])
def test_device_assembly_matches_the_reference_on_the_bundled_slide(cmu_slide, out_size):
    """Aperio's RGB-coded tiles (240 px, the Adobe marker), every patch, edges included: full decode +
    antialiased bilinear is the reference's own recipe, so the patches agree to well under 1 per value."""
    with open_slide(cmu_slide) as slide:
        grid = _every_patch_grid(slide)
        spec = plan_tiles(slide, grid, out_size, verify=0)
        patches = _device_patches(spec, grid.coords)
        assert len(patches) == len(grid.coords)
        assert _worst_mad(slide, spec, grid.coords, patches) <= 0.5


def test_device_assembly_on_an_upper_level_and_ycbcr_tiles(tmp_path):
    """A 40x pyramid read at 10x from level 1 (downsample 4): integer level positions, YCbCr JPEG tiles."""
    p = write_pyramid(tmp_path / "p40.svs", tissue_like(4096, 3072, seed=2), (1, 4, 16), mpp=0.25, app_mag=40)
    with open_slide(p) as slide:
        grid = _every_patch_grid(slide)
        assert grid.patch_level == 1
        spec = plan_tiles(slide, grid, 256, verify=0)
        patches = _device_patches(spec, grid.coords)
        assert _worst_mad(slide, spec, grid.coords, patches) <= 0.5


def test_fractional_positions_are_left_to_the_cpu_reader(cmu_slide):
    with open_slide(cmu_slide) as slide:
        grid = _every_patch_grid(slide)
        spec = plan_tiles(slide, grid, 256, verify=0)
    with TileReader(spec) as reader:
        assert reader.raw_block(grid.coords + np.array([[1, 0]])) is not None        # level 0: integers
    from dataclasses import replace
    with TileReader(replace(spec, level_downsample=2.0005)) as reader:
        assert reader.raw_block(grid.coords[:4]) is None


def test_bands_marked_for_the_device_are_spread_evenly(cmu_slide):
    from types import SimpleNamespace
    with open_slide(cmu_slide) as slide:
        spec = plan_tiles(slide, _every_patch_grid(slide), 256, verify=0)
    ys, xs = np.mgrid[0:20, 0:20]
    grid = SimpleNamespace(coords=np.stack([xs.ravel(), ys.ravel()], 1) * 512)     # a 20 x 20 grid
    bands = tile_bands(0, grid, spec, 16, raw_share=0.25)
    raw = [b.raw for b in bands]
    assert len(bands) >= 8 and abs(sum(raw) - len(bands) / 4) <= 1
    assert not any(raw[k] and raw[k + 1] for k in range(len(raw) - 1))
    assert not any(b.raw for b in tile_bands(0, grid, spec, 16))


def test_extraction_with_device_decode_gives_the_same_features_in_the_same_rows(tmp_path, cmu_slide,
                                                                                no_part_files):
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d / "a.svs")
    feats = {}
    for share in (0.0, 0.5, 1.0):
        out = tmp_path / f"out{share}"
        res = extract_cohort(d, out, ExtractConfig(num_workers=2, batch_size=7, device_decode=share))
        assert [r.status for r in res] == ["done"] and res[0].reader == "tiles"
        with h5py.File(res[0].features_h5, "r") as f:
            feats[share] = (f["features"][:], f["coords"][:])
        no_part_files(out)
    F0, C0 = feats[0.0]
    for share in (0.5, 1.0):
        F, C = feats[share]
        assert np.array_equal(C, C0)
        # stain statistics of patches that differ by < 1 grey level per pixel on average
        assert np.allclose(F, F0, rtol=0.05, atol=0.05)
        dist = np.linalg.norm(F[:, None, :] - F0[None, :, :], axis=2)
        assert (dist.argmin(1) == np.arange(len(F))).all()            # each row is its own patch


def test_a_device_decoder_that_disagrees_is_replaced_by_the_cpu_one(cmu_slide, monkeypatch, caplog):
    real = dd._torchvision_decode
    monkeypatch.setattr(dd, "_torchvision_decode", lambda streams, device: [255 - t for t in real(streams, device)])
    with open_slide(cmu_slide) as slide:
        grid = _every_patch_grid(slide)
        spec = plan_tiles(slide, grid, 256, verify=0)
        coords = grid.coords[:10]
        patches = _device_patches(spec, coords)
        assert _worst_mad(slide, spec, coords, patches) <= 0.5
    assert "disagrees" in caplog.text and "CMU-1-Small-Region.svs" in caplog.text


def test_a_block_the_device_decoder_refuses_is_decoded_on_the_cpu(cmu_slide, monkeypatch):
    """Only a tile the CPU decoder cannot read either is corrupt: a device-decoder failure is not."""
    real, calls = dd._torchvision_decode, {"n": 0}

    def flaky(streams, device):
        calls["n"] += 1
        if calls["n"] > 1:                               # the trust check passes, the block's batch fails
            raise RuntimeError("nvjpeg: unsupported stream")
        return real(streams, device)

    monkeypatch.setattr(dd, "_torchvision_decode", flaky)
    with open_slide(cmu_slide) as slide:
        grid = _every_patch_grid(slide)
        spec = plan_tiles(slide, grid, 256, verify=0)
        coords = grid.coords[:10]
        patches = _device_patches(spec, coords)
        assert calls["n"] == 2 and _worst_mad(slide, spec, coords, patches) <= 0.5


def test_a_corrupt_tile_fails_its_slide_when_decoded_on_the_device(tmp_path, cmu_slide, no_part_files):
    from test_tile_reader import slides_with_a_corrupt_tile
    d, _, _ = slides_with_a_corrupt_tile(tmp_path, cmu_slide)
    out = tmp_path / "out"
    res = {r.slide_id: r for r in extract_cohort(d, out, ExtractConfig(num_workers=2, batch_size=8,
                                                                      device_decode=1.0))}
    assert res["CMU-1-Small-Region"].status == "done"
    bad = res["corrupt"]
    assert bad.status == "failed" and bad.error.startswith("corrupt.svs: ") and "corrupt" in bad.error[12:]
    assert "\n" not in bad.error
    fdir = feature_dir_for(out, "stain_stats")
    assert not (fdir / "h5_files" / "corrupt.h5").exists()
    no_part_files(out)


def test_a_truncated_tile_is_an_error_not_a_grey_patch(cmu_slide):
    with open_slide(cmu_slide) as slide:
        grid = _every_patch_grid(slide)
        spec = plan_tiles(slide, grid, 256, verify=0)
    with TileReader(spec) as reader:
        block = reader.raw_block(grid.coords[:4])
    block.tiles[1] = block.tiles[1][: len(block.tiles[1]) // 2]
    tx, ty = block.tile_origin[0] + 1, block.tile_origin[1]
    with pytest.raises(DnDError, match=rf"CMU-1-Small-Region.svs: tile \({tx}, {ty}\).*truncated"):
        dd.DeviceDecoder(torch.device("cpu")).patches(block)


def test_a_bad_share_is_refused_before_anything_is_written(tmp_path, cmu_slide):
    with pytest.raises(DnDError, match="between 0 and 1"):
        extract_cohort([cmu_slide], tmp_path / "out", ExtractConfig(device_decode=1.5))
    assert not (tmp_path / "out" / "features_stain_stats" / "extraction.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvjpeg_patches_match_the_reference(cmu_slide, tmp_path):
    p = write_pyramid(tmp_path / "ycbcr.svs", tissue_like(4096, 3072, seed=2), (1, 4), mpp=0.5, app_mag=20)
    for path in (cmu_slide, p):
        with open_slide(path) as slide:
            grid = _every_patch_grid(slide)
            spec = plan_tiles(slide, grid, 256, verify=0)
            with TileReader(spec) as reader:
                block = reader.raw_block(grid.coords)
            decoder = dd.DeviceDecoder(torch.device("cuda"))
            patches = decoder.patches(block)
            assert patches.device.type == "cuda"
            print(path.name, "trusted:", decoder.trusted)
            assert _worst_mad(slide, spec, grid.coords, patches.cpu().numpy()) <= 3.0
