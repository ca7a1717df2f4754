"""JPEG tiles decoded on the encoder's device (nvJPEG on a GPU) and cut into patches there.

Why: on a GPU box the reading processes, not the encoder, bound extraction. Decoding JPEG on the CPU costs
about 0.3 ms per tile per core; ``torchvision.io.decode_jpeg(..., device="cuda")`` decodes batches of tiles at
16–26k per second on an H100 (``benchmarks/results/jpeg_decode_rates_h100.txt``). So a share of the tile bands
(``ExtractConfig.device_decode``) is sent as compressed tiles (:meth:`TileReader.raw_block`); the main process
decodes them on the device at full scale, lays them out as one mosaic, cuts the patches, and shrinks them with
antialiased bilinear, the reference's resize (PIL's; they differ by at most 1 per value). That is the
reference's own recipe (full decode, then resize), without its repeated decoding of shared tiles.

Only JPEG tiles at integer level positions go this way (the reader decides per band). Each slide's first
block is checked against OpenCV (whose output the tile reader checks against PIL) on one tile; if they disagree
(a colour transform the device decoder reads differently, say), that slide's blocks are decoded by OpenCV
instead, with the same assembly.
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DnDError
from ..slides.tiles import RawBlock, _decode_jpeg_cv2
from ..text import one_line

log = logging.getLogger(__name__)

#: share of tile bands decoded on a CUDA device when ``ExtractConfig.device_decode`` is None (auto); the rest
#: are decoded by the reading processes, so both run at once
AUTO_CUDA_SHARE = 0.3

#: mean absolute difference (0–255) between the device's and the CPU's decode of a slide's first tile above
#: which that slide's tiles are decoded on the CPU (IDCT differences are well below 1; a colour error is ~20+)
MAX_DECODER_DIFF = 2.0


def device_decode_available(device: torch.device) -> bool:
    """Whether ``decode_jpeg`` runs on ``device`` (torchvision with nvJPEG on CUDA; always on CPU)."""
    try:
        from torchvision.io import decode_jpeg
    except Exception:
        return False
    return callable(decode_jpeg) and device.type in ("cpu", "cuda")


def resolve_share(share: Optional[float], device: torch.device) -> float:
    """The share of tile bands to decode on ``device``: the configured one, or auto (CUDA only)."""
    if share is None:
        return AUTO_CUDA_SHARE if device.type == "cuda" and device_decode_available(device) else 0.0
    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise DnDError(f"device_decode must be between 0 and 1, got {share:g}")
    if share > 0 and not device_decode_available(device):
        raise DnDError(f"JPEG decoding on {device} needs torchvision's decode_jpeg, which is not available")
    return share


def _torchvision_decode(streams: list[bytes], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in streams]
    with warnings.catch_warnings():     # torchvision 0.29 deprecates its image codecs in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        out = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return list(out) if isinstance(out, (list, tuple)) else [out]


class DeviceDecoder:
    """Decodes :class:`RawBlock` s on one device; remembers per slide whether the device decoder is trusted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.trusted: dict[str, bool] = {}

    def _decode_tiles(self, streams: list[bytes], on_device: bool) -> list[torch.Tensor]:
        """(3, h, w) uint8 tiles on the device: by torchvision's decode_jpeg there (nvJPEG on CUDA, libjpeg on a
        CPU), or by OpenCV on the CPU and copied over."""
        if on_device:
            return _torchvision_decode(streams, self.device)
        tiles = []
        for b in streams:
            arr = _decode_jpeg_cv2(b, 1, rgb=False)   # the Adobe marker is already in the stream
            if arr is None:
                raise ValueError("the JPEG stream is truncated or corrupt")
            tiles.append(torch.from_numpy(arr).permute(2, 0, 1).to(self.device))
        return tiles

    def _trust(self, block: RawBlock) -> bool:
        if block.name in self.trusted:
            return self.trusted[block.name]
        first = next((b for b in block.tiles if b), None)
        ok = True
        if first is not None:
            cpu = _decode_jpeg_cv2(first, 1, rgb=False)
            try:
                dev = self._decode_tiles([first], True)[0].permute(1, 2, 0).cpu().numpy()
                diff = float(np.abs(dev.astype(np.int16) - cpu.astype(np.int16)).mean()) if cpu is not None \
                    and dev.shape == cpu.shape else float("inf")
            except Exception as exc:            # the device decoder refuses this stream
                diff, why = float("inf"), one_line(exc, 120)
            else:
                why = f"mean abs diff {diff:.1f}"
            ok = diff <= MAX_DECODER_DIFF
            if not ok:
                log.warning("%s: the %s JPEG decoder disagrees with the CPU's (%s); decoding its tiles on the CPU",
                            block.name, self.device, why)
        self.trusted[block.name] = ok
        return ok

    def patches(self, block: RawBlock) -> torch.Tensor:
        """(n, out, out, 3) uint8 patches on the device, in the block's order. Raises :class:`DnDError` naming
        the slide for a tile that does not decode."""
        for k, b in enumerate(block.tiles):       # libjpeg pads a truncated stream with grey and only warns
            if b and not b.rstrip(b"\0").endswith(b"\xff\xd9"):
                tx, ty = block.tile_origin[0] + k % block.cols, block.tile_origin[1] + k // block.cols
                raise DnDError(f"{block.name}: tile ({tx}, {ty}) of level {block.level} is corrupt: the JPEG "
                               "stream has no end marker (truncated)")
        on_device = self._trust(block)
        present = [b for b in block.tiles if b]
        try:
            try:
                decoded = self._decode_tiles(present, on_device) if present else []
            except Exception:
                if not on_device:
                    raise
                # a stream the device decoder refuses is not necessarily corrupt: the CPU decoder has the
                # last word (and names the fault if it fails too)
                decoded = self._decode_tiles(present, False)
        except Exception as exc:
            msg = one_line(exc, 200)
            tx, ty = block.tile_origin
            raise DnDError(f"{block.name}: a tile of level {block.level} in the block from tile ({tx}, {ty}) is "
                           f"corrupt: {msg}") from None
        th, tw = block.tile_height, block.tile_width
        white = torch.full((3, th, tw), 255, dtype=torch.uint8, device=self.device)
        it = iter(decoded)
        tiles = []
        for k, b in enumerate(block.tiles):
            if not b:
                tiles.append(white)
                continue
            t = next(it)
            if t.shape != (3, th, tw):
                tx, ty = block.tile_origin[0] + k % block.cols, block.tile_origin[1] + k // block.cols
                raise DnDError(f"{block.name}: tile ({tx}, {ty}) of level {block.level} is corrupt: decoded to "
                               f"{tuple(t.shape)}, expected {(3, th, tw)}")
            tiles.append(t)
        mosaic = (torch.stack(tiles).view(block.rows, block.cols, 3, th, tw)
                  .permute(2, 0, 3, 1, 4).reshape(3, block.rows * th, block.cols * tw))
        rs = block.read_size
        need_w, need_h = int(block.x.max()) + rs, int(block.y.max()) + rs
        pad_w, pad_h = max(0, need_w - mosaic.shape[2]), max(0, need_h - mosaic.shape[1])
        if pad_w or pad_h:
            mosaic = F.pad(mosaic, (0, pad_w, 0, pad_h), value=255)
        if block.valid_width < mosaic.shape[2]:           # beyond the level's edge: white, as OpenSlide
            mosaic[:, :, max(0, block.valid_width):] = 255
        if block.valid_height < mosaic.shape[1]:
            mosaic[:, max(0, block.valid_height):, :] = 255
        ar = torch.arange(rs, device=self.device)
        ys = torch.as_tensor(block.y, device=self.device)[:, None] + ar          # (n, rs)
        xs = torch.as_tensor(block.x, device=self.device)[:, None] + ar
        regions = mosaic[:, ys[:, :, None], xs[:, None, :]].permute(1, 0, 2, 3)  # (n, 3, rs, rs)
        out = block.out_size
        if rs != out:
            regions = F.interpolate(regions.float(), size=(out, out), mode="bilinear", antialias=True,
                                    align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        return regions.permute(0, 2, 3, 1)
