"""Shared fixtures: the real slides in ../shared/data (skipped cleanly when absent) and the bundled sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WSI = SHARED / "wsi"
BUNDLED_SLIDE = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"


def shared_file(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not present: {p}")
    return p


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    """The bundled real slide (CC0): Aperio SVS, 2220x2967, 20x, mpp 0.499, one level."""
    assert BUNDLED_SLIDE.exists(), "resources/sample_slides/CMU-1-Small-Region.svs is part of the repository"
    return BUNDLED_SLIDE


@pytest.fixture
def no_part_files():
    """Yields a checker that fails if any temporary `.part` file was left under a folder."""
    def check(folder: Path) -> None:
        left = [p for p in Path(folder).rglob("*.part")]
        assert not left, f"partial files left behind: {left}"
    return check


@pytest.fixture(scope="session")
def synth_features(tmp_path_factory):
    """A small labelled synthetic cohort run through `dnd extract` (stain_stats): (features dir, labels.csv)."""
    from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for
    from dnd_engine.synth import make_synthetic_cohort
    root = tmp_path_factory.mktemp("synth_cohort")
    cohort = make_synthetic_cohort(root / "cohort", n_slides=20, size=2048, seed=7)
    extract_cohort(root / "cohort" / "slides", root / "out",
                   ExtractConfig(extractor="stain_stats", num_workers=0, compile="off", device="cpu"))
    return feature_dir_for(root / "out", "stain_stats"), cohort.labels_csv


# --- the Jobs panel (GUI tests; Qt is imported only by the tests that ask for these) ---

@pytest.fixture
def queue():
    """A job queue of its own, shut down (its worker finished) after the test."""
    from dnd_gui.jobs.queue import JobQueue
    q = JobQueue()
    yield q
    assert q.shutdown(10_000)


@pytest.fixture
def panel(qtbot, queue):
    """A shown Jobs panel over ``queue``."""
    from dnd_gui.panels.jobs_panel import JobsPanel
    p = JobsPanel(queue)
    qtbot.addWidget(p)
    p.resize(760, 640)
    p.show()
    qtbot.waitExposed(p)
    return p
