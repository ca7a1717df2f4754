"""numpy → QImage, the one conversion every picture the app shows goes through (tiles, thumbnails, patches).

It lives apart from the tile source so that background loaders (slide opening, the patch gallery) can use it
without importing the viewer.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage


def rgb_to_qimage(arr: np.ndarray) -> QImage:
    """An H×W×3 uint8 array as a QImage in the format the raster painter draws fastest (RGB32), owning its data."""
    arr = np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
    h, w = arr.shape[:2]
    img = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return img.convertToFormat(QImage.Format.Format_RGB32)  # a deep copy: independent of ``arr``
