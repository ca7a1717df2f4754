"""Light and dark themes: Qt's Fusion style with a calm palette, the same on every platform.

The slide canvas stays a neutral dark grey in both themes: colour judgement on H&E needs a neutral surround,
and a white canvas would blend into the slide's background glass.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

_DARK = {
    QPalette.ColorRole.Window: "#2b2d31",
    QPalette.ColorRole.WindowText: "#e3e5e8",
    QPalette.ColorRole.Base: "#1f2124",
    QPalette.ColorRole.AlternateBase: "#26282c",
    QPalette.ColorRole.ToolTipBase: "#1f2124",
    QPalette.ColorRole.ToolTipText: "#e3e5e8",
    QPalette.ColorRole.PlaceholderText: "#8a8f98",
    QPalette.ColorRole.Text: "#e3e5e8",
    QPalette.ColorRole.Button: "#33363b",
    QPalette.ColorRole.ButtonText: "#e3e5e8",
    QPalette.ColorRole.BrightText: "#ffffff",
    QPalette.ColorRole.Highlight: "#3d7fd9",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#6aa6f8",
    QPalette.ColorRole.Light: "#45484e",
    QPalette.ColorRole.Midlight: "#3a3d42",
    QPalette.ColorRole.Mid: "#3f4247",
    QPalette.ColorRole.Dark: "#6b7078",
    QPalette.ColorRole.Shadow: "#141517",
}
_DARK_DISABLED = {
    QPalette.ColorRole.WindowText: "#8a8f98",
    QPalette.ColorRole.Text: "#8a8f98",
    QPalette.ColorRole.ButtonText: "#7a7f88",
}

_LIGHT = {
    QPalette.ColorRole.Window: "#f3f4f6",
    QPalette.ColorRole.WindowText: "#1d1f23",
    QPalette.ColorRole.Base: "#ffffff",
    QPalette.ColorRole.AlternateBase: "#f5f6f8",
    QPalette.ColorRole.ToolTipBase: "#ffffff",
    QPalette.ColorRole.ToolTipText: "#1d1f23",
    QPalette.ColorRole.PlaceholderText: "#7b808a",
    QPalette.ColorRole.Text: "#1d1f23",
    QPalette.ColorRole.Button: "#e9ebee",
    QPalette.ColorRole.ButtonText: "#1d1f23",
    QPalette.ColorRole.BrightText: "#000000",
    QPalette.ColorRole.Highlight: "#2f6fcf",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#2f6fcf",
    QPalette.ColorRole.Light: "#ffffff",
    QPalette.ColorRole.Midlight: "#eceef1",
    QPalette.ColorRole.Mid: "#d5d8dd",
    QPalette.ColorRole.Dark: "#9aa0a8",
    QPalette.ColorRole.Shadow: "#7b808a",
}
_LIGHT_DISABLED = {
    QPalette.ColorRole.WindowText: "#8e939b",
    QPalette.ColorRole.Text: "#8e939b",
    QPalette.ColorRole.ButtonText: "#9a9fa7",
}


def palette_for(theme: str) -> QPalette:
    colours, disabled = (_DARK, _DARK_DISABLED) if theme == "dark" else (_LIGHT, _LIGHT_DISABLED)
    pal = QPalette()
    for role, hex_colour in colours.items():
        pal.setColor(role, QColor(hex_colour))
    for role, hex_colour in disabled.items():
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(hex_colour))
    return pal


def apply_theme(app: QApplication, theme: str) -> None:
    """Switch the whole application to ``theme`` ('light' or 'dark') at once."""
    if "Fusion" in QStyleFactory.keys():
        app.setStyle("Fusion")
    app.setPalette(palette_for(theme))
    app.setProperty("dnd_theme", theme)
