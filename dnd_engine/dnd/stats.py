"""The paired comparison of D&D against its base model over the same folds.

Folds share their test slides between the two arms, so the test is paired: a two-sided paired t-test on the
per-fold differences (the headline p), with the Wilcoxon signed-rank test beside it for those who distrust
normality — with 5 folds its smallest possible two-sided p is 0.0625, so it can never reach 0.05.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Sequence

import numpy as np

PAIRED_TEST = "paired t-test (two-sided) over folds"


def paired_comparison(base: Sequence[float], dnd: Sequence[float]) -> Dict[str, object]:
    """Mean and std of dnd − base over the folds where both are defined, with t-test and Wilcoxon p-values."""
    b = np.asarray(base, dtype=np.float64)
    d = np.asarray(dnd, dtype=np.float64)
    ok = np.isfinite(b) & np.isfinite(d)
    diff = d[ok] - b[ok]
    n = int(ok.sum())
    out: Dict[str, object] = {"test": PAIRED_TEST, "n": n,
                              "mean": float(diff.mean()) if n else math.nan,
                              "std": float(diff.std(ddof=1)) if n > 1 else (0.0 if n else math.nan),
                              "t": math.nan, "p": math.nan, "p_wilcoxon": math.nan}
    if n < 2:
        return out
    if np.allclose(diff, diff[0]):
        # no spread: the t statistic is undefined; identical arms are "no evidence of a difference"
        out["p"] = 1.0 if diff[0] == 0 else 0.0
        out["p_wilcoxon"] = 1.0 if diff[0] == 0 else math.nan
        return out
    from scipy import stats
    t = stats.ttest_rel(d[ok], b[ok])
    out["t"], out["p"] = float(t.statistic), float(t.pvalue)
    if np.any(diff != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["p_wilcoxon"] = float(stats.wilcoxon(diff).pvalue)
    return out


__all__ = ["PAIRED_TEST", "paired_comparison"]
