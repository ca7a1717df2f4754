"""Open any slide the field uses: OpenSlide first, tiffslide as fallback, plain PNG/JPEG as one-level slides."""

from .slide import Slide, open_slide, magnification_from_mpp, SLIDE_EXTENSIONS, IMAGE_EXTENSIONS, is_slide_path

__all__ = ["Slide", "open_slide", "magnification_from_mpp", "SLIDE_EXTENSIONS", "IMAGE_EXTENSIONS", "is_slide_path"]
