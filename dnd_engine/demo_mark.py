"""The DEMO mark burnt into images a demo model produced: a PNG travels without its CSV or model card, so the
mark must be in the pixels, where whoever opens the file sees it."""

from __future__ import annotations

import numpy as np

DEMO_BANNER = "DEMO MODEL - NOT FOR DIAGNOSIS"  # ASCII: the built-in font has no dash glyphs


def stamp_demo(rgb: np.ndarray, text: str = DEMO_BANNER) -> np.ndarray:
    """A copy of ``rgb`` (H×W×3 or H×W×4 uint8) with a dark banner and white ``text`` across its top."""
    from PIL import Image, ImageDraw, ImageFont
    img = Image.fromarray(np.ascontiguousarray(rgb))
    mode = img.mode
    img = img.convert("RGBA")
    w, h = img.size
    size = max(10, min(48, w // 28, h // 6))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(4, size // 3)
    band = min(h, bottom + 2 * pad)
    draw.rectangle([0, 0, w, band], fill=(20, 20, 20, 200))
    draw.text((max(pad, (w - (right - left)) // 2), pad - top // 2), text, font=font, fill=(255, 210, 0, 255))
    out = Image.alpha_composite(img, layer).convert(mode)
    return np.asarray(out)


__all__ = ["DEMO_BANNER", "stamp_demo"]
