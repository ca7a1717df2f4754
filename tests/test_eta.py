"""The time left shown for a training job: steady work gives a figure that falls steadily (issue 19, item 8).

A fake clock drives a job through a cross-validated D&D run whose stages cost different times per bag step (an
expert trains on half the slides but validates on all of them; the student's loss costs more; clustering and the
teacher targets sit between stages). The old estimate, from the overall progress rate, swung at every stage
change; the engine's per-stage estimate must count down without going back up and without jumps.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from dnd_engine.eta import EtaEstimator, StageWork, dnd_work
from dnd_gui.jobs import queue as jobs_module
from dnd_gui.jobs.queue import Job

FOLDS, CLUSTERS, EPOCHS, N = 2, 2, 8, 20
SECONDS = {"base": 2.0, "expert": 1.5, "student": 2.5}   # per epoch, validation included
GAPS = {"expert_0": 5.0, "student": 3.0, "base": 4.0}   # before the stage: clustering, teacher targets, testing


def _steady_run():
    """Yield (time, event) for a steady run: ('progress', done, total) every 0.25 s, ('epoch', record) at each
    epoch's end, in the order and at the times the engine would send them."""
    steps = {"base": N, "expert": N // CLUSTERS, "student": N}
    plan = dnd_work(CLUSTERS, EPOCHS, EPOCHS, EPOCHS, FOLDS)
    total = sum(w.epochs * steps[w.kind] for w in plan) + FOLDS * N   # + teacher targets, one step a slide
    t, done = 0.0, 0
    for w in plan:
        gap = GAPS.get(w.stage, 0.0) if (w.fold, w.stage) != (0, "base") else 0.0
        extra = N if w.stage == "student" else 0
        for k in range(int(gap / 0.25)):                 # between stages: a little progress, if any
            t += 0.25
            done += extra * (k + 1) // int(gap / 0.25) - extra * k // int(gap / 0.25)
            yield t, ("progress", done, total)
        per, n = SECONDS[w.kind], steps[w.kind]
        for e in range(1, w.epochs + 1):
            ticks = int(per / 0.25)
            for k in range(ticks):
                t += 0.25
                yield t, ("progress", done + n * (k + 1) // ticks, total)
            done += n
            yield t, ("epoch", {"fold": w.fold, "stage": w.stage, "epoch": e, "seconds": per})
    yield t, ("end",)


def _shown_every_second(monkeypatch, job: Job):
    clock = [0.0]
    monkeypatch.setattr(jobs_module.time, "monotonic", lambda: clock[0])
    job._on_progress(-1, -1, "")
    shown, next_tick = [], 1.0
    for t, event in _steady_run():
        while next_tick <= t:                            # the panel asks once a second
            clock[0] = next_tick
            shown.append(job.eta_seconds())
            next_tick += 1.0
        clock[0] = t
        if event[0] == "progress":
            job._on_progress(event[1], event[2], "training")
        elif event[0] == "epoch":
            job._post_epoch(event[1])
            job._deliver_epochs()
    return shown, t


def test_eta_of_a_steady_dnd_run_falls_steadily(qtbot, monkeypatch):
    job = Job("Train abmil + D&D", lambda ctx: None, kind="train",
              work=dnd_work(CLUSTERS, EPOCHS, EPOCHS, EPOCHS, FOLDS))
    shown, end = _shown_every_second(monkeypatch, job)
    values = [v for v in shown if v is not None]
    first = shown.index(values[0])
    assert first <= 5 and None not in shown[first:]      # an estimate within seconds, then always one
    steps = [b - a for a, b in zip(values, values[1:])]
    assert max(steps) <= 1e-9, f"the estimate went up by {max(steps):.1f} s"          # never back up
    assert min(steps) >= -3.0, f"the estimate jumped down by {-min(steps):.1f} s in 1 s"  # no jumps
    # and it is an estimate of the truth: within a fifth of the real time left half-way through
    mid = len(shown) // 2
    assert shown[mid] == pytest.approx(end - (mid + 1), rel=0.2)


def test_eta_without_a_plan_follows_the_progress_rate():
    """A job that is not training (a batch of slides) gets the remaining fraction over the mean rate."""
    eta = EtaEstimator()
    eta.start(0.0)
    for t in range(11):
        eta.progress(t / 100, float(t))
    assert eta.seconds_left(10.0) == pytest.approx(90.0)
    assert eta.seconds_left(12.0) == pytest.approx(88.0)   # counts down between reports


def test_eta_plan_positions_a_resumed_run_by_its_records():
    """A resumed run's first record is in fold 1: everything before it in the plan is done."""
    plan = dnd_work(2, 10, 10, 10, 2)
    eta = EtaEstimator(plan, min_elapsed_s=0)
    eta.start(0.0)
    eta.epoch({"fold": 1, "stage": "student", "epoch": 5, "seconds": 2.0}, 1.0)
    assert eta.raw_seconds_left(1.0) == pytest.approx(10.0)   # 5 student epochs of 2 s
    assert [w.stage for w in plan[:4]] == ["base", "expert_0", "expert_1", "student"]
    assert StageWork(0, "expert_1", 3).kind == "expert"
