"""What the training curves plot, without Qt: per stage of a fold the epochs and values of each metric, and how
each stage is named, coloured and ordered (base, experts, student) wherever curves are shown.

Kept apart from :mod:`dnd_gui.panels.curves` (the widget: redraw pacing, plot items, the legend) so the bookkeeping
that runs hundreds of times a second on tiny cohorts reads and tests on its own.
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Tuple

METRICS: Tuple[Tuple[str, str], ...] = (("train_loss", "Training loss"), ("val_loss", "Validation loss"),
                                        ("val_auc", "Validation AUC"))

BASE_COLOUR = "#4c8bf5"
STUDENT_COLOUR = "#f28e2b"
OTHER_COLOUR = "#9aa0a8"
# the experts share one family (greens and teals), told apart by shade, so base/experts/student read at a glance
EXPERT_COLOURS = ("#59a14f", "#2bb39a", "#a3d36b", "#1f7a63", "#7fd1b9", "#6b9e3a", "#3fc1c9", "#c3e08c")

_EXPERT = re.compile(r"expert_(\d+)$")


def stage_colour(stage: str) -> str:
    """The same colour for a stage in every fold and every run."""
    if stage == "base":
        return BASE_COLOUR
    if stage == "student":
        return STUDENT_COLOUR
    m = _EXPERT.match(stage)
    if m:
        return EXPERT_COLOURS[int(m.group(1)) % len(EXPERT_COLOURS)]
    return OTHER_COLOUR


def stage_label(stage: str) -> str:
    m = _EXPERT.match(stage)
    return f"expert {int(m.group(1)) + 1}" if m else stage  # 1-based, as the inspector and the logs say


def stage_key(stage: str):
    m = _EXPERT.match(stage)
    if stage == "base":
        return (0, 0, "")
    if m:
        return (1, int(m.group(1)), "")
    if stage == "student":
        return (2, 0, "")
    return (3, 0, stage)


def nice_ceiling(x: float) -> float:
    """A round number a little above ``x``: the x axis moves in steps, not with every epoch."""
    x = max(float(x), 1.0) * 1.02
    scale = 10.0 ** math.floor(math.log10(x))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9, 10):
        if m * scale >= x:
            return m * scale
    return 10 * scale


class Series:
    """One stage of one fold: per metric, the epochs that had a value and the values (plain lists: appending
    is what happens hundreds of times; arrays are built only when drawn)."""

    __slots__ = ("x", "y", "last_epoch", "last")

    def __init__(self):
        self.x: Dict[str, List[float]] = {m: [] for m, _ in METRICS}
        self.y: Dict[str, List[float]] = {m: [] for m, _ in METRICS}
        self.last_epoch = -math.inf
        self.last: dict = {}

    def add(self, epoch: float, rec: dict) -> None:
        if epoch <= self.last_epoch:   # the stage started again (a run deleted and redone): drop the overlap
            for m, _ in METRICS:
                xs = self.x[m]
                cut = next((i for i, e in enumerate(xs) if e >= epoch), len(xs))
                del xs[cut:], self.y[m][cut:]
        for m, _ in METRICS:
            v = rec.get(m)
            if v is None or isinstance(v, bool):
                continue
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                self.x[m].append(epoch)
                self.y[m].append(v)
        self.last_epoch = epoch
        self.last = rec
