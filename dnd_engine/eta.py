"""Time left for a long job: from the measured time per epoch of each training stage and the work left in every
stage, or (for work that is not epochs) from the progress rate; smoothed, so the figure counts down steadily.

Why not the plain progress fraction: a D&D run's progress counts bag steps, and a step costs very different times
in different stages (an expert trains on a fraction of the slides but validates on all of them every epoch; the
student computes a distillation loss; clustering and teacher targets are between stages). A rate measured in one
stage mispredicts the next, so the old figure swung (2:50 → 1:40 → 9:40). Here each stage kind keeps its own
seconds per epoch, the remaining epochs of every stage are counted, and the shown figure follows the raw estimate
only gradually (an exponential pull with a time constant), counting down between updates in the meantime; when
the work runs a little behind, the figure holds still instead of going back up.
Qt-free: the GUI asks :meth:`EtaEstimator.seconds_left` and shows the number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

SMOOTHING_S = 30.0        # time constant of the pull from the shown figure towards the raw estimate
MIN_ELAPSED_S = 3.0       # nothing is promised before this much time has passed ...
MIN_FRACTION = 0.01       # ... and this much of the work is done (rate estimates only)
# a raw estimate above the shown one by no more than this is waited out (the figure holds still); beyond it the
# figure rises (gradually): the work really is slower than thought
RISE_TOLERANCE = 0.25
RISE_SLACK_S = 2.0
MIN_SMOOTHING_S = 3.0     # the time constant never falls below this (see seconds_left)


@dataclass(frozen=True)
class StageWork:
    """One training stage of the plan: its key as epoch records name it and its epochs."""
    fold: int
    stage: str        # base | expert_<c> | student | model
    epochs: int

    @property
    def kind(self) -> str:
        """Stages that cost alike per epoch share a measurement: every expert is an ``expert``."""
        return re.sub(r"_\d+$", "", self.stage)


def dnd_work(n_clusters: int, epochs_base: int, epochs_expert: int, epochs_student: int,
             folds: int) -> List[StageWork]:
    """The stages of a cross-validated D&D run in the order they run: per fold a base model, ``n_clusters``
    experts and a student."""
    out: List[StageWork] = []
    for f in range(folds):
        out.append(StageWork(f, "base", int(epochs_base)))
        out.extend(StageWork(f, f"expert_{c}", int(epochs_expert)) for c in range(n_clusters))
        out.append(StageWork(f, "student", int(epochs_student)))
    return out


def dnd_work_for(cfg, folds: int) -> List[StageWork]:
    """:func:`dnd_work` from an engine ``DnDConfig`` (its stage settings and cluster count)."""
    return dnd_work(cfg.n_clusters, cfg.base.epochs, cfg.expert.epochs, cfg.student.epochs, folds)


class EtaEstimator:
    """Feed it progress and epoch records with their time; ask for the seconds left.

    With a plan (a list of :class:`StageWork`), epoch records (``fold``, ``stage``, ``epoch``, ``seconds``) give
    the position in the plan and the seconds per epoch of each stage kind; stages not yet measured borrow the
    slowest measured (an overestimate for experts, corrected downwards once one runs), and the time between
    stages (clustering, teacher targets, testing a fold) is measured as it happens. Without a plan, or before the
    first epoch, the estimate is the remaining fraction over the mean progress rate.
    """

    def __init__(self, plan: Optional[Sequence[StageWork]] = None, *, smoothing_s: float = SMOOTHING_S,
                 min_elapsed_s: float = MIN_ELAPSED_S, min_fraction: float = MIN_FRACTION):
        self.plan: List[StageWork] = list(plan or [])
        self._index = {(w.fold, w.stage): i for i, w in enumerate(self.plan)}
        self.smoothing_s = smoothing_s
        self.min_elapsed_s = min_elapsed_s
        self.min_fraction = min_fraction
        self._started: Optional[float] = None
        self._base: Optional[Tuple[float, float]] = None        # (time, fraction) of the first progress
        self._last: Optional[Tuple[float, float]] = None        # the latest progress
        self._per_epoch: dict = {}                              # stage kind → smoothed seconds per epoch
        self._pos: Optional[Tuple[int, int]] = None             # (plan index, epochs done in it)
        self._pos_at: Optional[float] = None                    # when the latest epoch record came
        self._gap: Optional[float] = None                       # smoothed seconds between two stages
        self._shown: Optional[Tuple[float, float]] = None       # (seconds left, when) last returned

    # --- input -------------------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._started = now

    def progress(self, fraction: float, now: float) -> None:
        """The job's overall fraction done; a fraction that falls (the total grew) restarts the rate."""
        if self._started is None:
            self._started = now
        if self._last is None or fraction < self._last[1] - 1e-9:
            self._base = (now, fraction)
        self._last = (now, fraction)

    def epoch(self, record: dict, now: float) -> None:
        """One finished epoch record of a planned stage; records of stages not in the plan are ignored."""
        if self._started is None:
            self._started = now
        try:
            key = (int(record.get("fold") or 0), str(record.get("stage") or "model"))
            done = int(record["epoch"])
        except (KeyError, TypeError, ValueError):
            return
        i = self._index.get(key)
        if i is None:
            return
        work = self.plan[i]
        seconds = record.get("seconds")
        interval = now - self._pos_at if self._pos_at is not None else None
        per = float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0 \
            else interval
        if per is not None:
            old = self._per_epoch.get(work.kind)
            self._per_epoch[work.kind] = per if old is None else 0.8 * old + 0.2 * per
        if self._pos is not None and i != self._pos[0] and interval is not None and per is not None:
            gap = max(0.0, interval - per)            # a stage boundary: clustering, teacher targets, tests
            self._gap = gap if self._gap is None else 0.7 * self._gap + 0.3 * gap
        self._pos, self._pos_at = (i, min(done, work.epochs)), now

    # --- output ------------------------------------------------------------------------------------------
    def raw_seconds_left(self, now: float) -> Optional[float]:
        """The unsmoothed estimate, None while nothing credible is known."""
        if self._pos is not None and self._per_epoch:
            return self._planned_left(now)
        if self._base is None or self._last is None:
            return None
        (t0, f0), (t1, f1) = self._base, self._last
        if f1 - f0 < self.min_fraction or t1 <= t0:
            return None
        rate = (f1 - f0) / (t1 - t0)
        return max(0.0, (1.0 - f1) / rate - (now - t1))

    def _planned_left(self, now: float) -> float:
        measured = list(self._per_epoch.values())
        fallback = max(measured)   # an unmeasured stage borrows the slowest: corrected downwards, not up
        i, done = self._pos
        left = 0.0
        boundaries = 0
        for k in range(i, len(self.plan)):
            w = self.plan[k]
            epochs = w.epochs - done if k == i else w.epochs
            left += max(0, epochs) * self._per_epoch.get(w.kind, fallback)
            boundaries += k > i
        left += boundaries * (self._gap or 0.0)
        return max(0.0, left - (now - self._pos_at))

    def seconds_left(self, now: float) -> Optional[float]:
        """The smoothed estimate: it counts down by the time passed, and is pulled towards the raw estimate
        by ``1 - exp(-dt / tau)`` of the difference (independent of how often it is asked)."""
        if self._started is None or now - self._started < self.min_elapsed_s:
            return None
        raw = self.raw_seconds_left(now)
        if raw is None:
            return None if self._shown is None else max(0.0, self._shown[0] - (now - self._shown[1]))
        if self._shown is None:
            value = raw
        else:
            shown, at = self._shown
            dt = max(0.0, now - at)
            predicted = max(0.0, shown - dt)
            # a short remainder follows faster: 30 s of lag would leave "a few seconds left" for half a minute
            tau = min(self.smoothing_s, max(MIN_SMOOTHING_S, 0.2 * shown))
            value = predicted + (1.0 - math.exp(-dt / tau)) * (raw - predicted) if dt > 0 else shown
            if raw <= shown * (1.0 + RISE_TOLERANCE) + RISE_SLACK_S:
                value = min(value, shown)   # a little behind: stop counting down rather than go back up
        self._shown = (value, now)
        return value


__all__ = ["EtaEstimator", "StageWork", "dnd_work", "dnd_work_for"]
