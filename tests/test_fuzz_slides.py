"""Fuzz test of our own: mutated slides (random byte flips, and header fields: tag values, array items, counts,
truncation) of the real shared slides and a synthetic pyramid, opened and extracted in child processes.

The property: the child never dies by a signal, and each mutant either reads or fails with a DnDError of one
clear line (no traceback, no Python internals). Opening runs without isolation (a native abort there means the
precheck let a crafted layout through); `dnd extract` runs as users run it (a native abort in its reader
processes must be a failed row). A small seeded budget runs by default; the long run is on demand:

    DND_FUZZ_N=2000 pytest -m slow tests/test_fuzz_slides.py     (DND_FUZZ_SEED picks another set)
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crafted import good_pyramid
from fuzz_mutate import write_mutants

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("fuzz_child.py")
SEED = int(os.environ.get("DND_FUZZ_SEED", "22"))
#: what a user must never read: Python's own words about our code or a library's
INTERNALS = re.compile(r"Traceback|not supported between instances|argument must be|has no attribute|"
                       r"division or modulo|unhashable|is not (subscriptable|iterable|callable)|"
                       r"unexpected keyword|NoneType|internal error")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """A synthetic pyramid, and the real shared slides when present (without them, the synthetic one only)."""
    from conftest import WSI
    d = tmp_path_factory.mktemp("fuzz_sources")
    out = [good_pyramid(d / "synth.svs", size=1024, seed=3)]
    if WSI.is_dir():
        for p in sorted(WSI.glob("*.*")):
            if p.is_file():
                out.append(Path(shutil.copy(p, d / p.name)))
    return out


def open_each(files: list[Path], timeout: float = 900) -> dict[str, tuple[str, str]]:
    """path -> (OK | ERR | BUG | CRASH | HANG, message), opening the files one after another in a child process
    (restarted after the file that killed it)."""
    todo, res = [str(p) for p in files], {}
    while todo:
        try:
            r = subprocess.run([sys.executable, str(CHILD), *todo], capture_output=True, text=True, env=_env(),
                               timeout=timeout)
            out, rc = r.stdout, r.returncode
        except subprocess.TimeoutExpired as exc:
            out, rc = (exc.stdout or b"").decode(errors="replace"), None
        current = None
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            path, _, msg = rest.partition("\t")
            if kind == "BEGIN":
                current = path
            elif kind in ("OK", "ERR", "BUG"):
                res[path], current = (kind, msg), None
        if current is None:
            if rc != 0:         # died outside any file: the harness itself
                pytest.fail(f"fuzz child exited with {rc}: {r.stderr[-2000:]}")
            break
        if rc is None:
            res[current] = ("HANG", f"no answer in {timeout:g} s")
        else:
            how = signal.Signals(-rc).name if rc < 0 else f"exit code {rc}"
            res[current] = ("CRASH", how)
        todo = todo[todo.index(current) + 1:]
    return res


def findings(files: list[Path], res: dict) -> list[str]:
    """Every mutant that broke the property, with how (empty when all held)."""
    bad = []
    for p in files:
        kind, msg = res.get(str(p), ("MISSING", "no result"))
        if kind in ("CRASH", "HANG", "BUG", "MISSING"):
            bad.append(f"{p.name}: {kind} {msg}")
        elif kind == "ERR" and ("<NL>" in msg or INTERNALS.search(msg) or not msg.startswith(p.name)):
            bad.append(f"{p.name}: unclear message: {msg}")
    return bad


def test_mutated_slides_open_or_fail_with_one_clear_line(sources, tmp_path):
    files = write_mutants(sources, tmp_path / "mutants", 80, SEED)
    res = open_each(files)
    assert findings(files, res) == []
    kinds = {k for k, _ in res.values()}
    assert "ERR" in kinds           # the mutations do reach the checks (not all harmless)


def test_a_crafted_header_mutant_is_refused_before_a_native_reader_sees_it(tmp_path):
    """The fuzz harness sees a refusal as such: the issue's own crafted file (tile size 2^20) fails clearly."""
    from crafted import set_tag
    p = good_pyramid(tmp_path / "huge.svs")
    set_tag(p, 0, "TileWidth", 1 << 20)
    set_tag(p, 0, "TileLength", 1 << 20)        # OpenSlide would allocate 3 TiB for one tile and abort
    res = open_each([p])
    assert res[str(p)][0] == "ERR" and "damaged or crafted" in res[str(p)][1]
    assert findings([p], res) == []


def extract_each(files: list[Path], out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """`dnd extract` over a folder of ``files`` as a user runs it; (the process, summary rows by slide id)."""
    d = out / "slides"
    d.mkdir(parents=True)
    for p in files:
        shutil.copy(p, d / p.name)
    r = subprocess.run([sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(d), "--out",
                        str(out / "features"), "--workers", "1", "--quiet"], capture_output=True, text=True,
                       env=_env(), cwd=out, timeout=1800)
    summary = out / "features" / "features_stain_stats" / "extraction_summary.csv"
    rows = {row["slide_id"]: row for row in csv.DictReader(open(summary))} if summary.is_file() else {}
    return r, rows


def check_extraction(r: subprocess.CompletedProcess, rows: dict, n: int) -> None:
    assert r.returncode in (0, 3), (r.returncode, r.stderr[-3000:])     # never a signal, never a crash
    assert "Traceback" not in r.stderr
    assert len(rows) == n
    for sid, row in rows.items():
        assert row["status"] in ("done", "failed"), row
        if row["status"] == "failed":
            assert row["error"] and "\n" not in row["error"] and not INTERNALS.search(row["error"]), row


def test_mutated_slides_through_dnd_extract_fail_their_own_rows_only(sources, tmp_path):
    files = write_mutants(sources, tmp_path / "mutants", 16, SEED + 1)
    r, rows = extract_each(files, tmp_path)
    check_extraction(r, rows, len(files))


@pytest.mark.slow
def test_long_fuzz_run(sources, tmp_path):
    """On demand: DND_FUZZ_N mutants (default 2000) opened, a tenth of them extracted as well."""
    n = int(os.environ.get("DND_FUZZ_N", "2000"))
    files = write_mutants(sources, tmp_path / "mutants", n, SEED + 7)
    res = open_each(files, timeout=max(900, n))
    bad = findings(files, res)
    some = files[:: 10]
    r, rows = extract_each(some, tmp_path / "extract")
    check_extraction(r, rows, len(some))
    assert bad == [], "\n".join(bad)


def test_fuzz_finding_a_number_tag_retyped_as_bytes_is_refused_clearly(tmp_path):
    """Found by the long run (seed 12, mutant 1527): PhotometricInterpretation's type flipped to BYTE made
    tifffile compare bytes with an int ("'>' not supported between instances of 'bytes' and 'int')."""
    from conftest import shared_file
    from crafted import set_type
    p = Path(shutil.copy(shared_file("wsi", "HE_example.ome.tif"), tmp_path / "retyped.ome.tif"))
    set_type(p, 0, "PhotometricInterpretation", 1)
    res = open_each([p])
    assert findings([p], res) == []
    assert res[str(p)] == ("ERR", "retyped.ome.tif: tag PhotometricInterpretation holds bytes or text where a "
                                  "TIFF has a number: it is damaged or crafted")
