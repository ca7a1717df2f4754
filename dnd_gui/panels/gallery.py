"""The top-k / bottom-k patch gallery: the patches the model weighted most and least, as real tissue.

It ties the heatmap's colours to evidence a pathologist can judge (CLAM, TRIDENT and STAMP save these as files;
here a click centres the viewer on the patch). Patch images are read on a worker thread with its own slide
handle, at the pyramid level nearest the thumbnail size; a newer request makes older results drop.

Each list is one strip that scrolls sideways, so the gallery keeps one fixed, small height and stays on screen
under the prediction in the inspector on a 1366×768 display (wrapped rows grew it to 430 px, below the fold).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QListView, QVBoxLayout, QWidget

from dnd_engine.slides import open_slide
from dnd_engine.text import one_line

from ..viewer.qimage import rgb_to_qimage
from ..workers import LatestOnly

THUMB = 80
DEFAULT_K = 8


def read_patch_thumbnails(path: str, coords: np.ndarray, patch_size_level0: float, indices: Sequence[int],
                          size: int = THUMB) -> list[QImage]:
    """``size``-pixel images of the patches ``indices`` (reads the level nearest above ``size`` per patch)."""
    out = []
    with open_slide(path) as slide:
        level = slide.best_level_for_downsample(patch_size_level0 / size)
        ds = slide.level_downsamples[level]
        side = max(1, round(patch_size_level0 / ds))
        for i in indices:
            x, y = coords[int(i)]
            region = slide.read_region((int(x), int(y)), level, (side, side))
            region = region.resize((size, size), Image.Resampling.BILINEAR)
            out.append(rgb_to_qimage(np.asarray(region)))
    return out


def _placeholder(size: int) -> QPixmap:
    pm = QPixmap(size, size)
    pm.fill(QColor(128, 128, 128, 60))
    return pm


def _framed(image: QImage, colour: QColor) -> QPixmap:
    """The patch with a colour band at the bottom: the heatmap colour of its score."""
    pm = QPixmap.fromImage(image)
    p = QPainter(pm)
    p.fillRect(0, pm.height() - 6, pm.width(), 6, colour)
    p.end()
    return pm


class PatchList(QListWidget):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setGridSize(QSize(THUMB + 10, THUMB + 24))
        self.setSpacing(2)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        # one row of thumbnails and room for the sideways scroll bar, whatever the width
        self.setFixedHeight(THUMB + 24 + 2 * self.frameWidth() + self.horizontalScrollBar().sizeHint().height() + 4)


class PatchGallery(QWidget):
    patch_clicked = Signal(int)  # patch index (row of the prediction's coords)
    thumbnails_loaded = Signal()  # the patch images of the latest request are shown

    def __init__(self, parent: Optional[QWidget] = None, k: int = DEFAULT_K):
        super().__init__(parent)
        self.k = k
        self._worker = LatestOnly(self)   # newest request wins: clear() or a newer slide drops older images
        self._closed = False
        self.loaded = False
        self._colours: dict[int, QColor] = {}
        self.top_label = QLabel("Highest attention")
        self.bottom_label = QLabel("Lowest attention")
        self.top = PatchList()
        self.bottom = PatchList()
        self.note = QLabel("Classify a slide to see the patches the model relied on most and least.")
        self.note.setWordWrap(True)
        self.note.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.note, self.top_label, self.top, self.bottom_label, self.bottom):
            layout.addWidget(w)
        for lst in (self.top, self.bottom):
            lst.itemClicked.connect(self._on_click)
        self.clear()

    def clear(self, note: str = "") -> None:
        self._worker.cancel()
        self.loaded = False
        self.top.clear()
        self.bottom.clear()
        self._colours = {}
        for w in (self.top_label, self.top, self.bottom_label, self.bottom):
            w.hide()
        self.note.setText(note or "Classify a slide to see the patches the model relied on most and least.")
        self.note.show()

    def show_patches(self, path: str, coords: np.ndarray, patch_size_level0: float, scores: np.ndarray,
                     normalised: np.ndarray, colormap: str) -> None:
        """Fill both lists for ``scores`` (raw, one per patch) and start reading the patch images; each image
        gets a band in its heatmap colour (``normalised`` score through ``colormap``)."""
        from dnd_engine.heatmaps import apply_colormap, top_patches

        self.clear()
        if len(scores) == 0:
            return
        top, bottom = top_patches(scores, self.k)
        shown = np.concatenate([top, bottom]).astype(np.int64)
        rgb = apply_colormap(np.asarray(normalised)[shown], colormap)
        self._colours = {int(i): QColor(int(c[0]), int(c[1]), int(c[2])) for i, c in zip(shown, rgb)}
        self.note.hide()
        for w in (self.top_label, self.top, self.bottom_label, self.bottom):
            w.show()
        placeholder = QIcon(_placeholder(THUMB))
        for lst, idx in ((self.top, top), (self.bottom, bottom)):
            for rank, i in enumerate(idx, 1):
                item = QListWidgetItem(placeholder, f"#{rank} \u00b7 {normalised[int(i)]:.2f}")
                item.setData(Qt.ItemDataRole.UserRole, int(i))
                item.setToolTip(f"patch {int(i)}: attention {scores[int(i)]:.4g} (raw), "
                                f"{normalised[int(i)]:.3f} normalised \u2014 click to show it in the viewer")
                lst.addItem(item)
        self.top_label.setText(f"Highest attention (top {len(top)})")
        self.bottom_label.setText(f"Lowest attention (bottom {len(bottom)})")
        indices = [int(i) for i in top] + [int(i) for i in bottom]
        if not self._closed:
            self._worker.submit(read_patch_thumbnails, path, np.asarray(coords), float(patch_size_level0), indices,
                                on_done=self._on_ready, on_error=self._on_failed)

    def items(self, which: str = "top") -> list[QListWidgetItem]:
        lst = self.top if which == "top" else self.bottom
        return [lst.item(i) for i in range(lst.count())]

    def index_of(self, item: QListWidgetItem) -> int:
        return int(item.data(Qt.ItemDataRole.UserRole))

    def wait(self) -> None:
        """For the window's close: drop queued reads, wait for the running one; nothing is shown afterwards."""
        self._closed = True
        self._worker.shutdown()

    def _on_click(self, item: QListWidgetItem) -> None:
        self.patch_clicked.emit(self.index_of(item))

    def _on_ready(self, images: list) -> None:
        items = self.items("top") + self.items("bottom")
        for item, image in zip(items, images):
            colour = self._colours.get(self.index_of(item), QColor(0, 0, 0, 0))
            item.setIcon(QIcon(_framed(image, colour)))
        self.loaded = True
        self.thumbnails_loaded.emit()

    def _on_failed(self, exc: BaseException) -> None:
        # an unreadable patch leaves grey squares and a note, never a crash
        self.note.setText(f"Patch images could not be read: {one_line(exc, 200, typed=True)}")
        self.note.show()
