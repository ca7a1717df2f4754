"""``dnd bench``: base vs D&D for several MIL methods on the same folds, as the paper's Table 1.

One D&D cross-validation run per method under ``out/<method>/`` (resumable), then ``table.csv`` and
``table.md``: ACC and macro AUC as mean ± std over folds for the base model and the distilled student, the
difference and its paired test (``stats.PAIRED_TEST``).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..atomic import ensure_dir, write_text_atomic
from ..errors import DnDError
from ..models import ALIASES, model_names
from ..progress import CancelFn, ProgressFn, check_cancelled
from .dnd_cv import CVSettings, run_dnd_cv
from .presets import DnDConfig
from .stats import PAIRED_TEST


def parse_methods(text: str) -> List[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise DnDError("no methods given")
    known = set(model_names()) | set(ALIASES)
    bad = [m for m in names if m not in known]
    if bad:
        raise DnDError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(model_names())}")
    return [ALIASES.get(m, m) for m in names]


def run_bench(features_dir: str | Path, labels_csv: str | Path, out_dir: str | Path, methods: Sequence[str],
              make_config: Callable[[str], DnDConfig], cv: CVSettings = CVSettings(), *,
              progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None,
              log: Optional[Callable[[str], None]] = None) -> List[Dict[str, object]]:
    """Rows of the table, one per method; ``make_config(method)`` gives that method's D&D settings."""
    say = log or (lambda msg: None)
    out = ensure_dir(out_dir)
    rows: List[Dict[str, object]] = []
    for k, method in enumerate(methods):
        check_cancelled(cancelled)
        say(f"[{k + 1}/{len(methods)}] {method}")

        def method_progress(done, total, msg, _k=k, _m=method):
            if progress is not None:
                progress(done, total, f"{_m} ({_k + 1}/{len(methods)}) {msg}")
        res = run_dnd_cv(features_dir, labels_csv, out / method, make_config(method), cv,
                         progress=method_progress, cancelled=cancelled, log=lambda m, _m=method: say(f"  {_m} {m}"))
        rows.append(table_row(method, res))
        write_tables(out, rows, describe(make_config(methods[0]), cv, features_dir))
    return rows


def table_row(method: str, res) -> Dict[str, object]:
    """One method's row of the table from its cross-validated D&D result (``DnDCVResult``)."""
    s = res.summary
    return {"method": method, "folds": len(res.folds), "classes": len(res.class_names),
            **{f"{arm}_{k}_{stat}": s[f"{arm}_test_{k}"][stat]
               for arm in ("base", "dnd") for k in ("acc", "auc") for stat in ("mean", "std")},
            **{f"diff_{k}_{stat}": s[f"diff_test_{k}"][stat] for k in ("acc", "auc")
               for stat in ("mean", "std", "p", "p_wilcoxon")}}


def describe(cfg: DnDConfig, cv: CVSettings, features_dir) -> str:
    return (f"preset {cfg.preset}; C={cfg.n_clusters} ({'constrained' if cfg.constrained else 'plain'} k-means on "
            f"{cfg.cluster_on}); base/experts {cfg.base.optimizer} lr {cfg.base.lr:g} {cfg.base.epochs}/"
            f"{cfg.expert.epochs} epochs; student {cfg.student.optimizer} {cfg.student.epochs} epochs; "
            f"T={cfg.temperature:g}; {cv.folds} folds (seed {cv.split_seed}, val {cv.val_frac:g}); "
            f"features {Path(features_dir).name}")


def _pm(m: float, s: float, scale: float = 100.0) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    return f"{m * scale:.1f} ± {s * scale:.1f}"


def _signed(m: float, scale: float = 100.0) -> str:
    return "n/a" if m is None or math.isnan(m) else f"{m * scale:+.1f}"


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def markdown_table(rows: List[Dict[str, object]], protocol: str = "") -> str:
    head = ("| method | ACC base | ACC +D&D | ΔACC | p (ACC) | AUC base | AUC +D&D | ΔAUC | p (AUC) |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['method']} | {_pm(r['base_acc_mean'], r['base_acc_std'])} | {_pm(r['dnd_acc_mean'], r['dnd_acc_std'])} "
        f"| {_signed(r['diff_acc_mean'])} | {_p(r['diff_acc_p'])} | {_pm(r['base_auc_mean'], r['base_auc_std'])} "
        f"| {_pm(r['dnd_auc_mean'], r['dnd_auc_std'])} | {_signed(r['diff_auc_mean'])} | {_p(r['diff_auc_p'])} |\n"
        for r in rows)
    note = (f"\nMean ± std over folds, in percent. p: {PAIRED_TEST} on the per-fold differences."
            + (f" Protocol: {protocol}." if protocol else "") + "\n")
    return head + body + note


def write_tables(out: Path, rows: List[Dict[str, object]], protocol: str = "") -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text_atomic(out / "table.csv", buf.getvalue())
    write_text_atomic(out / "table.md", markdown_table(rows, protocol))


__all__ = ["markdown_table", "parse_methods", "run_bench", "table_row", "write_tables"]
