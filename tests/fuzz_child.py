"""The fuzz test's child process: open and read each slide named on the command line, in this process (no
isolation: a native abort here is a finding), printing one line per file before and after.

    BEGIN <path>            before touching the file (the last BEGIN without an end names a crasher)
    OK <path>               opened, thumbnail and a few regions of every level read
    ERR <path>\t<message>   refused with a DnDError (the message must be one line)
    BUG <path>\t<type>: <message>   any other exception: what the user would see as an internal error
"""

from __future__ import annotations

import sys
import warnings


def read_all(path: str) -> None:
    from dnd_engine.slides import open_slide
    with open_slide(path) as s:
        s.info()
        s.get_thumbnail(256)
        for level in range(s.level_count):
            w, h = s.level_dimensions[level]
            for fx, fy in ((0, 0), (0.5, 0.5), (0.999, 0.999)):
                s.read_region((int(fx * w * s.level_downsamples[level]), int(fy * h * s.level_downsamples[level])),
                              level, (64, 64))


def main(paths: list[str]) -> None:
    from dnd_engine.errors import DnDError
    warnings.simplefilter("ignore")
    for p in paths:
        print(f"BEGIN {p}", flush=True)
        try:
            read_all(p)
        except DnDError as exc:
            print(f"ERR {p}\t{str(exc).replace(chr(10), '<NL>')}", flush=True)
        except Exception as exc:  # the finding: not a clear message
            print(f"BUG {p}\t{type(exc).__name__}: {str(exc).replace(chr(10), '<NL>')[:300]}", flush=True)
        else:
            print(f"OK {p}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
