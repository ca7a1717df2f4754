"""Open any slide the field uses: OpenSlide first, tiffslide as fallback, plain PNG/JPEG as one-level slides."""

from .slide import Slide, open_slide, magnification_from_mpp, SLIDE_EXTENSIONS, IMAGE_EXTENSIONS, is_slide_path
from .overrides import MagnificationOverride, OverrideTable, needs_magnification, open_with_override, slide_identity

__all__ = ["Slide", "open_slide", "magnification_from_mpp", "SLIDE_EXTENSIONS", "IMAGE_EXTENSIONS", "is_slide_path",
           "MagnificationOverride", "OverrideTable", "needs_magnification", "open_with_override", "slide_identity"]
