"""Kept so ``from dnd_gui.main_window import MainWindow`` still works: the window lives in :mod:`dnd_gui.window`."""
from .window.main_window import APP_TITLE, MainWindow, default_output_root, dropped_files, slide_file_filter  # noqa: F401
