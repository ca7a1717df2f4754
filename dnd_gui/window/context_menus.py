"""Right-click menus of the slide list and the viewer, as a QuPath user expects them.

Slide list: open, classify, remove, show in folder. Viewer: copy the position under the pointer in µm, export
the view as a PNG, go to a patch by number, and the view actions already in the menus. Each entry calls one
function below (what a test calls too); the menus only add the dialogs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu

from dnd_engine.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow


# --- what the entries do ------------------------------------------------------------------------------------
def open_url(url: QUrl) -> bool:
    """Hand a URL to the desktop (replaced in tests)."""
    return QDesktopServices.openUrl(url)


def show_in_folder(path: str) -> bool:
    """Show the slide's file in the system's file manager: selected where the platform can (Finder, Explorer),
    else its folder opened."""
    p = Path(path)
    try:
        if sys.platform == "darwin":
            return subprocess.run(["open", "-R", str(p)], check=False).returncode == 0
        if sys.platform.startswith("win"):
            subprocess.Popen(["explorer", f"/select,{p}"])
            return True
    except OSError:
        pass
    return open_url(QUrl.fromLocalFile(str(p.parent)))


def position_text(point: QPointF, mpp: Optional[float]) -> str:
    """The position as copied: micrometres from the slide's top-left corner, pixels without a pixel size."""
    if mpp:
        return f"x {point.x() * mpp:.1f} \u00b5m, y {point.y() * mpp:.1f} \u00b5m"
    return f"x {point.x():.0f} px, y {point.y():.0f} px (pixel size unknown)"


def copy_position(win: "MainWindow", point: QPointF) -> str:
    text = position_text(point, win.view.mpp)
    QGuiApplication.clipboard().setText(text)
    win.statusBar().showMessage(f"Copied: {text}", 5000)
    return text


def export_view(win: "MainWindow", path: str) -> bool:
    """Write what the viewer shows (tiles, heatmap, scale bar) as a PNG, atomically."""
    image = win.view.viewport().grab().toImage()
    try:
        with atomic_path(path) as tmp:
            if not image.save(str(tmp), "PNG"):
                raise OSError(f"cannot write {Path(path).name}")
    except OSError as exc:
        win._show_error("Export View", str(exc), "The view was not exported")
        return False
    win.statusBar().showMessage(f"View written to {path}", 6000)
    return True


def go_to_patch(win: "MainWindow", index: int) -> bool:
    layer = win.heatmap_layer
    if layer is None or not 0 <= index < len(layer.raw):
        return False
    win.centre_on_patch(index)
    return True


# --- the menus ----------------------------------------------------------------------------------------------
def slide_menu(win: "MainWindow", path: str) -> QMenu:
    menu = QMenu(win)
    name = Path(path).name
    menu.addAction(f"Open {name}", lambda: win.open_slide(path))
    classify = menu.addAction("Classify", lambda: win.classify([path]))
    record = win.records.get(path)
    classify.setEnabled(win.model is not None and (record is None or record.job is None))
    if win.model is None:
        classify.setText("Classify (load a model first)")
    menu.addSeparator()
    in_project = win.session is not None and path in win.session.project.slides
    menu.addAction("Remove from Project" if in_project else "Remove from List",
                   lambda: win.slide_actions.remove([path]))
    reveal = menu.addAction("Show in Folder", lambda: show_in_folder(path))
    reveal.setEnabled(Path(path).exists())
    return menu


def viewer_menu(win: "MainWindow", pos: QPoint) -> QMenu:
    """The viewer's menu for a right-click at ``pos`` (viewport coordinates)."""
    view = win.view
    menu = QMenu(win)
    point = view.mapToScene(pos)
    on_slide = view.has_slide() and view.image_rect().contains(point)
    copy = menu.addAction("Copy Position" + (f" ({position_text(point, view.mpp)})" if on_slide else ""),
                          lambda: copy_position(win, point))
    copy.setEnabled(on_slide)
    export = menu.addAction("Export View as PNG\u2026", lambda: _choose_export_view(win))
    export.setEnabled(view.has_slide())
    layer = win.heatmap_layer
    patch = menu.addAction("Go to Patch\u2026", lambda: _choose_patch(win))
    patch.setEnabled(layer is not None and len(layer.raw) > 0)
    if layer is not None and on_slide:
        hit = layer.score_at(point)
        if hit is not None:
            menu.addAction(f"Go to Patch {hit.index} (under the pointer)", lambda i=hit.index: go_to_patch(win, i))
    menu.addSeparator()
    for action in (win.fit_action, win.show_heatmap_action, win.classify_current_action, win.export_png_action):
        menu.addAction(action)
    return menu


def _choose_export_view(win: "MainWindow") -> None:
    stem = Path(win.current_path).stem if win.current_path else "view"
    default = Path(win.settings.last_dir("exports") or str(Path.home())) / f"{stem}_view.png"
    path, _ = QFileDialog.getSaveFileName(win, "Export View", str(default), "PNG images (*.png)")
    if path:
        win.settings.set_last_dir("exports", path)
        export_view(win, path)


def _choose_patch(win: "MainWindow") -> None:
    layer = win.heatmap_layer
    if layer is None:
        return
    n = len(layer.raw)
    index, ok = QInputDialog.getInt(win, "Go to Patch", f"Patch number (0\u2013{n - 1}, as the heatmap's hover "
                                    "and the gallery number them):", 0, 0, n - 1)
    if ok:
        go_to_patch(win, index)


def install_context_menus(win: "MainWindow") -> None:
    """Right-click on the slide list and on the viewer opens the menus above (kept as ``win.context_menu``)."""
    slides = win.slide_list.list

    def on_slides(pos: QPoint) -> None:
        item = slides.itemAt(pos)
        if item is None:
            return
        win.context_menu = slide_menu(win, item.data(Qt.ItemDataRole.UserRole))
        win.context_menu.popup(slides.viewport().mapToGlobal(pos))

    def on_view(pos: QPoint) -> None:
        win.context_menu = viewer_menu(win, pos)
        win.context_menu.popup(win.view.viewport().mapToGlobal(pos))

    slides.customContextMenuRequested.connect(on_slides)
    win.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    win.view.customContextMenuRequested.connect(on_view)


__all__ = ["copy_position", "export_view", "go_to_patch", "install_context_menus", "open_url", "position_text",
           "show_in_folder", "slide_menu", "viewer_menu"]
