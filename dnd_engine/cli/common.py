"""What every ``dnd`` command shares: progress bars, argument range checks, log lines and the results tables.

Command modules (``train_cmd``, ``bench_cmd``, ``predict_cmd`` and ``main``'s) import from here and from
``training_options``, never from one another, so the CLI's imports have no cycle. Nothing heavy is imported at
module level: ``dnd --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, Optional

from ..errors import DnDError


def say(msg: str) -> None:
    """A log line for the user, on stderr (stdout holds the results)."""
    print(msg, file=sys.stderr)


# --- progress ----------------------------------------------------------------------------------------------------
class ProgressBar:
    """A ``progress(done, total, message)`` callback drawing one tqdm bar on stderr (nothing when ``quiet``).

    ``per_item``: the bar follows one item at a time (a slide's patches): a new total or ``done == 0`` starts a
    new bar, named after the message's text before its first ':' unless ``desc`` is given; the bar is removed when
    done. Otherwise one bar runs for the whole command, with the message shown after it."""

    def __init__(self, quiet: bool, unit: str = "bag", desc: Optional[str] = "D&D", *,
                 position: Optional[int] = None, per_item: bool = False, postfix: int = 48):
        self.quiet, self.unit, self.desc, self.position = quiet, unit, desc, position
        self.per_item, self.postfix, self.bar = per_item, postfix, None

    def __call__(self, done: int, total: int, msg: str) -> None:
        if self.quiet or (self.per_item and total <= 0):
            return
        from tqdm import tqdm
        if self.bar is not None and self.per_item and (self.bar.total != total or done == 0):
            self.close()
        if self.bar is None:
            desc = self.desc if self.desc is not None else msg.split(":")[0][:24]
            self.bar = tqdm(total=total, desc=desc, unit=self.unit, position=self.position,
                            leave=not self.per_item, dynamic_ncols=True, mininterval=0.5)
        if total != self.bar.total:
            self.bar.total = total
        if not self.per_item:
            self.bar.set_postfix_str(msg.strip()[:self.postfix], refresh=False)
        if done >= self.bar.n:
            self.bar.update(done - self.bar.n)
        else:                      # a resumed step or a new round counts again from less
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CohortBars:
    """Two bars for work over slides: the cohort (slides done) and the slide in progress (its patches)."""

    def __init__(self, quiet: bool):
        self.cohort_progress = ProgressBar(quiet, unit="slide", desc="cohort", position=0, postfix=40)
        self.slide_progress = ProgressBar(quiet, unit="patch", desc=None, position=1, per_item=True)

    def close(self) -> None:
        self.slide_progress.close()
        self.cohort_progress.close()


# --- argument checks: what argparse's types cannot say (ranges), refused before any work starts ------------------
MAX_POWER = 100.0


def check_range(flag: str, value, lo, hi, what: str = "a number") -> None:
    """Refuse ``flag``'s value outside lo..hi (None: not given) with one line naming the flag."""
    if value is not None and not (lo <= value <= hi):     # NaN fails both comparisons, so it is refused too
        raise DnDError(f"{flag} must be {what} from {lo:g} to {hi:g}, got {value:g}")


def check_power(flag: str, value) -> None:
    if value is not None and not (0 < value <= MAX_POWER):
        raise DnDError(f"{flag} must be an objective power above 0 and at most {MAX_POWER:g}x, got {value:g}")


# --- results tables ------------------------------------------------------------------------------------------------
def _cell(v) -> str:
    return "   -  " if v is None else f"{v:.3f}"


def mean_std_text(summary: Dict[str, Dict[str, float]]) -> Callable[[str], str]:
    """``key → "mean±std"`` for a run summary ({key: {"mean", "std"}}); "-" where undefined."""
    def ms(k):
        m, sd = summary[k]["mean"], summary[k]["std"]
        return "-" if m != m else f"{m:.3f}±{sd:.3f}"
    return ms


def mil_table(res) -> str:
    """The table ``dnd train`` prints for a plain cross-validation run (``CVResult``)."""
    lines = ["fold  n_test  test_acc  test_bal_acc  test_auc  val_acc  best_epoch"]
    for r in res.folds:
        lines.append(f"{r['fold']:>4}  {r['n_test']:>6}  {_cell(r.get('test_acc')):>8}  "
                     f"{_cell(r.get('test_balanced_acc')):>12}  {_cell(r.get('test_auc')):>8}  "
                     f"{_cell(r.get('val_acc')):>7}  {r['best_epoch']:>10}")
    ms = mean_std_text(res.summary)
    lines.append(f"mean±std      {ms('test_acc'):>12}  {ms('test_balanced_acc'):>10}  {ms('test_auc'):>10}")
    return "\n".join(lines)


def dnd_table(res) -> str:
    """The table ``dnd train --preset`` prints for a D&D run (``DnDCVResult``): base vs D&D per fold, the
    mean ± std and the paired difference."""
    lines = ["fold  n_test  base_acc  dnd_acc  base_auc  dnd_auc  clusters"]
    for r in res.folds:
        lines.append(f"{r['fold']:>4}  {r['n_test']:>6}  {_cell(r.get('base_test_acc')):>8}  "
                     f"{_cell(r.get('dnd_test_acc')):>7}  {_cell(r.get('base_test_auc')):>8}  "
                     f"{_cell(r.get('dnd_test_auc')):>7}  {r.get('cluster_sizes')}")
    s = res.summary
    ms = mean_std_text(s)
    lines.append(f"mean±std      {ms('base_test_acc')}  {ms('dnd_test_acc')}  {ms('base_test_auc')}  "
                 f"{ms('dnd_test_auc')}")
    for k in ("acc", "auc"):
        d = s[f"diff_test_{k}"]
        lines.append(f"D&D − base {k}: {d['mean']:+.3f} ± {d['std']:.3f}, p = {d['p']:.3g} ({d['test']})"
                     if d["mean"] == d["mean"] else f"D&D − base {k}: n/a")
    return "\n".join(lines)


__all__ = ["CohortBars", "MAX_POWER", "ProgressBar", "check_power", "check_range", "dnd_table", "mean_std_text",
           "mil_table", "say"]
