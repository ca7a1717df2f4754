"""Craft damaged slides at test time: a valid small pyramid with chosen TIFF tag values rewritten in place."""

from __future__ import annotations

import struct
from pathlib import Path

import tifffile

from pyramid import tissue_like, write_pyramid

#: TIFF types able to hold the value: LONG (4) for classic TIFF, LONG8 (16) for BigTIFF
_LONG, _LONG8 = 4, 16


def good_pyramid(path: Path, size: int = 1024, seed: int = 0) -> Path:
    return write_pyramid(path, tissue_like(size, size, seed=seed), downsamples=(1, 4))


def tag_entry(path: Path, page: int, name: str):
    """(entry offset, byte order, bigtiff, tag count) of tag ``name`` in directory ``page``."""
    with tifffile.TiffFile(str(path)) as tf:
        tag = tf.pages[page].tags[name]
        return tag.offset, tf.byteorder, tf.is_bigtiff, tag.count, tag.valueoffset


def set_tag(path: Path, page: int, name: str, value: int) -> Path:
    """Rewrite a one-value tag (ImageWidth, TileWidth, ...) as a LONG holding ``value``: a few bytes changed."""
    off, bo, big, count, _ = tag_entry(path, page, name)
    assert count == 1
    data = bytearray(path.read_bytes())
    if big:
        struct.pack_into(bo + "HQQ", data, off + 2, _LONG8, 1, value)
    else:
        struct.pack_into(bo + "HII", data, off + 2, _LONG, 1, value)
    path.write_bytes(bytes(data))
    return path


def set_array_value(path: Path, page: int, name: str, index: int, value: int) -> Path:
    """Rewrite item ``index`` of an array tag (TileOffsets, TileByteCounts) in place, keeping its type."""
    with tifffile.TiffFile(str(path)) as tf:
        tag = tf.pages[page].tags[name]
        bo, dtype, voff, count = tf.byteorder, tag.dtype, tag.valueoffset, tag.count
    size = {3: 2, 4: 4, 16: 8}[int(dtype)]
    fmt = bo + {2: "H", 4: "I", 8: "Q"}[size]
    data = bytearray(path.read_bytes())
    assert index < count
    struct.pack_into(fmt, data, voff + index * size, value)
    path.write_bytes(bytes(data))
    return path


def set_count(path: Path, page: int, name: str, count: int) -> Path:
    """Rewrite the count field of a tag's directory entry (tile counts that do not match the image)."""
    off, bo, big, _, _ = tag_entry(path, page, name)
    data = bytearray(path.read_bytes())
    struct.pack_into(bo + ("Q" if big else "I"), data, off + 4, count)
    path.write_bytes(bytes(data))
    return path


def crafted_kinds() -> dict:
    """name -> function(path) that damages a good pyramid at ``path`` in one way."""
    return {
        "huge_tiles": lambda p: (set_tag(p, 0, "TileWidth", 1 << 20), set_tag(p, 0, "TileLength", 1 << 20)),
        "tile_past_end": lambda p: set_array_value(p, 0, "TileOffsets", 3, p.stat().st_size + 1000),
        "bytecount_past_end": lambda p: set_array_value(p, 0, "TileByteCounts", 0, 1 << 30),
        "huge_image": lambda p: (set_tag(p, 0, "ImageWidth", 3_000_000), set_tag(p, 0, "ImageLength", 3_000_000)),
        "tile_count": lambda p: set_tag(p, 0, "ImageWidth", 4096),
        "odd_tile": lambda p: set_tag(p, 0, "TileWidth", 100),
    }


def set_type(path: Path, page: int, name: str, dtype: int) -> Path:
    """Rewrite the type field of a tag's directory entry (a number read as bytes: BYTE = 1, ASCII = 2)."""
    off, bo, _, _, _ = tag_entry(path, page, name)
    data = bytearray(path.read_bytes())
    struct.pack_into(bo + "H", data, off + 2, dtype)
    path.write_bytes(bytes(data))
    return path
