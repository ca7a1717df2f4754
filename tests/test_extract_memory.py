"""Memory flat over a cohort (issue 21, item 6): `dnd extract` over 16 slides peaks within 15 % of 4 slides, and
the main process gives the C heap's free pages back after each slide (benchmarks/extract_memory.py measures the
same at 10 and 40 slides for the README)."""

from __future__ import annotations

import sys
from pathlib import Path

from dnd_engine.features import ExtractConfig, extract_cohort
from dnd_engine.features import extract as extract_mod
from dnd_engine.synth import make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import extract_memory  # noqa: E402


def test_peak_rss_of_16_slides_is_within_15_percent_of_4(tmp_path):
    """Batches of 16 so that both runs encode full batches (the peak is a full batch's encoding, see the
    benchmark's docstring); peak RSS is memory, not time, so a loaded machine does not change it much."""
    small, large = extract_memory.measure(4, 16, 2048, 1, tmp_path, extra=["--batch-size", "16"])
    ratio = large["main_mib"] / small["main_mib"]
    assert ratio <= 1.15, (small, large)


def test_the_heap_is_trimmed_after_every_slide(tmp_path, monkeypatch):
    make_synthetic_cohort(tmp_path / "c", n_slides=3, size=1024, seed=5)
    calls = []
    monkeypatch.setattr(extract_mod, "trim_heap", lambda: calls.append(1))
    res = extract_cohort(tmp_path / "c" / "slides", tmp_path / "out",
                         ExtractConfig(num_workers=0, compile="off", device="cpu"))
    assert [r.status for r in res] == ["done"] * 3 and len(calls) == 3
    extract_mod.trim_heap()            # the real one: harmless where there is no glibc
