"""The main window and its parts: the window itself (docks, drops, status), its declared actions and menus, and one
controller per concern (classification, heatmap, project), plus the slide-list operations, context menus,
toolbar and status-bar fields it is built from."""

from .main_window import APP_TITLE, MainWindow

__all__ = ["APP_TITLE", "MainWindow"]
