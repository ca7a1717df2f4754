"""The one reference resize from a read region to a patch, shared by every reader.

It lives with the slide readers (not with the feature code) so that the tile-native reader in
:mod:`dnd_engine.slides.tiles` and the ``read_region`` path in :mod:`dnd_engine.features.patch_dataset` shrink
pixels with exactly the same function: the two paths must give the same patches.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_patch(img: Image.Image, out_size: int) -> np.ndarray:
    """The reference resize: PIL bilinear with antialiasing (torchvision's Resize on PIL images does the same)."""
    if img.size != (out_size, out_size):
        img = img.resize((out_size, out_size), Image.Resampling.BILINEAR)
    return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
