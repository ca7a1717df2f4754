"""Mutate TIFF slides for the fuzz test: random byte flips and header-field mutations (tag values, counts,
offsets), each mutant written beside the others with a name that says how it was made (to reproduce a find).

Header mutations go through the file's own directory entries (found with tifffile, which parses them without
decoding pixels), so they hit what a native decoder trusts: sizes, offsets, byte counts and counts.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import tifffile

#: tags whose values a reader trusts to size, place and count its reads
TAGS = ("ImageWidth", "ImageLength", "TileWidth", "TileLength", "TileOffsets", "TileByteCounts", "StripOffsets",
        "StripByteCounts", "RowsPerStrip", "SamplesPerPixel", "BitsPerSample", "Compression", "PlanarConfiguration",
        "PhotometricInterpretation", "JPEGTables", "SubIFDs", "NewSubfileType", "ImageDepth")
_FMT = {1: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}


@dataclass
class Entry:
    """One directory entry: where it is in the file and what it holds."""
    offset: int          # of the entry (tag code)
    code: int
    dtype: int
    count: int
    valueoffset: int     # of the value(s), inline or not


def entries(path: Path) -> tuple[str, bool, list[Entry]]:
    """(byte order, BigTIFF, entries of the tags in :data:`TAGS` over every directory) of a TIFF file."""
    out: list[Entry] = []
    with tifffile.TiffFile(str(path)) as tf:
        for page in tf.pages:
            for tag in page.tags.values():
                if tag.name in TAGS and int(tag.dtype) in _FMT:
                    out.append(Entry(tag.offset, tag.code, int(tag.dtype), tag.count, tag.valueoffset))
        return tf.byteorder, tf.is_bigtiff, out


def interesting(rng: random.Random, size: int, old: int) -> int:
    """A value a crafted header would hold: edges of integer types, the file's size, near the old value."""
    return rng.choice([0, 1, 2, 7, 15, 16, 17, 255, 256, 4095, 65535, 65536, 1 << 20, (1 << 31) - 1, 1 << 31,
                       (1 << 32) - 1, size - 1, size, size + 1, old + 1, old - 1, old * 2, old // 2,
                       old * 16, rng.randrange(0, 1 << 32)])


def _put(data: bytearray, fmt: str, at: int, value: int) -> None:
    width = struct.calcsize(fmt)
    if 0 <= at and at + width <= len(data):
        value &= (1 << (8 * width)) - 1
        if fmt[-1].islower():                      # signed: wrap into range
            value -= (1 << (8 * width)) if value >= 1 << (8 * width - 1) else 0
        struct.pack_into(fmt, data, at, value)


def mutate(data: bytes, path_entries, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of ``data`` and a short word for what was done."""
    bo, big, ents = path_entries
    buf = bytearray(data)
    kind = rng.choice(["flip", "flip_header", "value", "value", "array", "count", "truncate"]) if ents else "flip"
    if kind == "flip":                             # a few random bytes anywhere
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "flip_header":                    # bytes inside directory entries
        for _ in range(rng.randint(1, 4)):
            e = rng.choice(ents)
            at = e.offset + rng.randrange(20 if big else 12)
            if at < len(buf):
                buf[at] ^= 1 << rng.randrange(8)
    elif kind in ("value", "array"):               # a tag value (its first or a random item) to an odd one
        e = rng.choice(ents)
        fmt = bo + _FMT[e.dtype]
        width = struct.calcsize(fmt)
        item = 0 if kind == "value" or e.count <= 1 else rng.randrange(min(e.count, 1 << 16))
        at = e.valueoffset + item * width
        old = struct.unpack_from(fmt, buf, at)[0] if at + width <= len(buf) else 0
        _put(buf, fmt, at, interesting(rng, len(buf), int(old)))
    elif kind == "count":                          # the entry's count field
        e = rng.choice(ents)
        _put(buf, bo + ("Q" if big else "I"), e.offset + 4, interesting(rng, len(buf), e.count))
    else:                                          # cut short
        buf = buf[: rng.randrange(8, len(buf))]
    return bytes(buf), kind


def write_mutants(sources: list[Path], out: Path, n: int, seed: int) -> list[Path]:
    """``n`` mutants of ``sources`` (round robin) in folder ``out``: ``<source>__<k>_<kind>.<ext>``."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    parsed = {p: (p.read_bytes(), entries(p)) for p in sources}
    files = []
    for k in range(n):
        src = sources[k % len(sources)]
        data, ents = parsed[src]
        mutant, kind = mutate(data, ents, rng)
        stem, ext = src.name.split(".", 1)
        p = out / f"{stem.replace('.', '_')}__{k:05d}_{kind}.{ext}"
        p.write_bytes(mutant)
        files.append(p)
    return files
