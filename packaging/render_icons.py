"""Render the app icon, resources/icons/dnd-studio.svg, to the PNG sizes the app and the installers use, and to a
Windows .ico; the results are committed, so a build needs no SVG renderer. Run after editing the SVG:

    .venv/bin/python packaging/render_icons.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render(svg: Path, size: int) -> QImage:
    img = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(Qt.GlobalColor.transparent)
    painter = QPainter(img)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(svg)).render(painter)
    painter.end()
    return img


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    assert app is not None  # kept alive while the icons render
    svg = ICONS / "dnd-studio.svg"
    for size in SIZES:
        out = ICONS / f"dnd-studio-{size}.png"
        if not render(svg, size).save(str(out)):
            raise SystemExit(f"could not write {out}")
        print(out.relative_to(ICONS.parents[1]))
    from PIL import Image
    big = Image.open(ICONS / "dnd-studio-256.png")
    big.save(ICONS / "dnd-studio.ico", sizes=[(s, s) for s in ICO_SIZES])
    print((ICONS / "dnd-studio.ico").relative_to(ICONS.parents[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
