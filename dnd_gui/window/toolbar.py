"""The main toolbar: the few actions a session uses again and again, one click away.

It shows the window's own actions (the same objects as the menus), so enabling, shortcuts and check states stay
in one place. Icons come from the Qt style: no image files to ship, and they follow the theme.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QStyle, QToolBar

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow

SP = QStyle.StandardPixmap


def toolbar_actions(win: "MainWindow") -> list:
    """(action, icon) in toolbar order; None is a separator."""
    return [(win.open_action, SP.SP_DialogOpenButton),
            (win.open_project_action, SP.SP_DirOpenIcon),
            (win.slide_actions.add_folder_action, SP.SP_FileDialogNewFolder),
            None,
            (win.load_model_action, SP.SP_DriveHDIcon),
            (win.classify_current_action, SP.SP_MediaPlay),
            (win.train_action, SP.SP_ComputerIcon),
            None,
            (win.fit_action, SP.SP_DesktopIcon),
            (win.show_heatmap_action, SP.SP_DialogApplyButton),
            (win.export_png_action, SP.SP_DialogSaveButton)]


# shorter words than the menus' for the toolbar's buttons (the menus keep the full text and the "…")
SHORT_TEXT = {"open_action": "Open Slide", "open_project_action": "Open Project",
              "load_model_action": "Load Model", "classify_current_action": "Classify", "train_action": "Train",
              "fit_action": "Fit", "show_heatmap_action": "Heatmap", "export_png_action": "Export"}


def build_toolbar(win: "MainWindow") -> QToolBar:
    bar = QToolBar("Main Toolbar", win)
    bar.setObjectName("mainToolbar")  # saveState/restoreState need a name
    bar.setIconSize(QSize(18, 18))
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    names = {id(getattr(win, n)): text for n, text in SHORT_TEXT.items()}
    for entry in toolbar_actions(win):
        if entry is None:
            bar.addSeparator()
            continue
        action, icon = entry
        action.setIcon(win.style().standardIcon(icon))
        action.setIconText(names.get(id(action), "Add Folder" if action is win.slide_actions.add_folder_action
                                     else action.iconText()))
        tip = action.toolTip()
        if action.shortcut().toString():
            action.setToolTip(f"{tip} ({action.shortcut().toString()})")
        bar.addAction(action)
    win.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
    return bar


__all__ = ["build_toolbar", "toolbar_actions"]
