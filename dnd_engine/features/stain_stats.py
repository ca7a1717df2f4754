"""A weight-free H&E patch descriptor: the offline/demo extractor, for machines without model weights.

Colour deconvolution (Ruifrok & Johnston's H&E-DAB stain vectors, as scikit-image's ``rgb2hed``) separates
hematoxylin (nuclei) from eosin (stroma, cytoplasm); statistics of each stain and of grey-level texture at three
scales describe nuclear density, size and staining, which is what separates most lesions from normal tissue at
10x. It is far weaker than a pretrained encoder on real tasks: use it to try the app and for tests, not for results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows: hematoxylin, eosin, DAB optical-density vectors (scikit-image `hed_from_rgb` is the inverse of this).
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED).to(torch.float32)

_QS = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
_H_THRESH = (0.05, 0.1, 0.2, 0.3)


def _stats(x: torch.Tensor) -> torch.Tensor:
    """Per-row mean, std and quantiles of a (B, P) tensor."""
    q = torch.quantile(x, _QS.to(x.device, x.dtype), dim=1).T
    return torch.cat([x.mean(1, keepdim=True), x.std(1, keepdim=True), q], dim=1)


def _texture(g: torch.Tensor) -> torch.Tensor:
    """Gradient-magnitude and Laplacian statistics of a (B, 1, H, W) image at scales 1, 2 and 4."""
    feats = []
    kx = torch.tensor([[[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]]], device=g.device) / 8
    lap = torch.tensor([[[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]]], device=g.device)
    for s in (1, 2, 4):
        x = F.avg_pool2d(g, s) if s > 1 else g
        gx = F.conv2d(x, kx)
        gy = F.conv2d(x, kx.transpose(2, 3))
        mag = torch.sqrt(gx * gx + gy * gy).flatten(1)
        lp = F.conv2d(x, lap).abs().flatten(1)
        feats += [mag.mean(1, keepdim=True), mag.std(1, keepdim=True), lp.mean(1, keepdim=True)]
    return torch.cat(feats, 1)


def _lbp_hist(g: torch.Tensor) -> torch.Tensor:
    """Histogram (9 bins) of how many of the 8 neighbours are brighter: a rotation-invariant LBP summary."""
    c = g[:, :, 1:-1, 1:-1]
    H, W = g.shape[2], g.shape[3]
    count = torch.zeros_like(c)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            count += (g[:, :, dy:H - 2 + dy, dx:W - 2 + dx] > c + 0.02).float()
    bins = F.one_hot(count.long().flatten(1), 9).float().mean(1)
    return bins


class StainStats(torch.nn.Module):
    """uint8-derived (B, 3, H, W) float in [0, 1] → (B, 99) descriptors; deterministic, no parameters to learn."""

    dim = 99

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("hed_from_rgb", _HED_FROM_RGB.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):   # statistics stay in fp32
            return self._forward(x.float())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if x.shape[-1] > 128:  # statistics barely change below 128 px; keeps the extractor fast
            x = F.interpolate(x, size=(128, 128), mode="area")
        rgb = x.clamp(1 / 255, 1.0)
        od = -torch.log(rgb)                                           # optical density (B, 3, H, W)
        hed = torch.einsum("bchw,cd->bdhw", od, self.hed_from_rgb).clamp_min(0)
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        parts = [x.flatten(2).mean(2), x.flatten(2).std(2)]                  # 6
        for c in range(3):
            parts.append(_stats(od[:, c].flatten(1)))                      # 3 × 7
        for c in range(3):
            parts.append(_stats(hed[:, c].flatten(1)))                     # 3 × 7
        h = hed[:, 0].flatten(1)
        parts.append(torch.stack([(h > t).float().mean(1) for t in _H_THRESH], 1))  # 4
        parts.append(_hist(h, 0.0, 0.6, 12))                           # 12
        parts.append(_hist(hed[:, 1].flatten(1), 0.0, 0.6, 8))            # 8
        parts.append(_texture(grey))                                       # 9
        parts.append(_texture(hed[:, :1] / 0.5))                           # 9
        parts.append(_lbp_hist(grey))                                      # 9
        out = torch.cat(parts, 1)
        assert out.shape == (B, self.dim), out.shape
        return out


def _hist(x: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    idx = ((x - lo) / (hi - lo) * bins).floor().clamp(0, bins - 1).long()
    return F.one_hot(idx, bins).float().mean(1)
