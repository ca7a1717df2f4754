"""Base vs D&D on real data no one here made: the classic MIL benchmarks and the UCSB breast TMA features.

Each dataset in ``../shared/data`` is staged once as a folder of ``.pt`` bags plus ``labels.csv`` (the layout
``dnd train``/``dnd bench`` read), then ``dnd bench`` runs on it — the same engine code as the command line —
and the table lands in ``benchmarks/results/dnd_bench/<dataset>/table.md`` (+ ``table.csv``). Runs resume.

Usage::

    python benchmarks/dnd_real_data.py [--datasets musk1 ...] [--methods mean,max,abmil] [--preset paper]
        [--epochs 200 --student-epochs 300 ...any dnd bench option...] [--work DIR]

Everything after the known options goes to ``dnd bench`` unchanged, so the printed protocol is the command.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
DATASETS = ("musk1", "musk2", "fox", "tiger", "elephant", "ucsb_breast")


def load(name: str):
    """[(bag id, float32 (n, d), label 0/1)] from the staged benchmark files."""
    sys.path.insert(0, str(HERE))
    from mil_benchmarks import load_dataset
    if name == "ucsb_breast":
        return load_dataset("ucsb_breast_cancer_features", SHARED / "ucsb_breast")
    return load_dataset(name, SHARED / "mil_benchmarks")


def stage(name: str, work: Path) -> tuple[Path, Path]:
    """``work/<name>/bags/*.pt`` and ``work/<name>/labels.csv`` (negative/positive), written once."""
    import torch
    folder = work / name
    labels = folder / "labels.csv"
    if labels.is_file():
        return folder / "bags", labels
    bags = folder / "bags.part"
    shutil.rmtree(bags, ignore_errors=True)
    bags.mkdir(parents=True)
    rows = []
    for i, (bag_id, x, y) in enumerate(load(name)):
        sid = f"{name}_{i:04d}"
        torch.save(torch.from_numpy(x).float().contiguous(), bags / f"{sid}.pt")
        rows.append((sid, "positive" if y else "negative", bag_id))
    bags.rename(folder / "bags")
    with open(folder / "labels.part", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide_id", "label", "source_bag"])
        w.writerows(rows)
    os.replace(folder / "labels.part", labels)
    return folder / "bags", labels


def summary_table(results: Path) -> str:
    """One Markdown table (dataset × method) from the per-dataset ``table.csv`` files, in percent."""
    from dnd_engine.dnd.bench import _p, _pm, _signed
    lines = ["| data set | method | ACC base | ACC +D&D | ΔACC (p) | AUC base | AUC +D&D | ΔAUC (p) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in DATASETS:
        path = results / name / "table.csv"
        if not path.is_file():
            continue
        with open(path) as f:
            for r in csv.DictReader(f):
                v = {k: float(x) if k not in ("method",) else x for k, x in r.items()}
                lines.append(f"| {name} | {r['method']} | {_pm(v['base_acc_mean'], v['base_acc_std'])} | "
                             f"{_pm(v['dnd_acc_mean'], v['dnd_acc_std'])} | {_signed(v['diff_acc_mean'])} "
                             f"({_p(v['diff_acc_p'])}) | {_pm(v['base_auc_mean'], v['base_auc_std'])} | "
                             f"{_pm(v['dnd_auc_mean'], v['dnd_auc_std'])} | {_signed(v['diff_auc_mean'])} "
                             f"({_p(v['diff_auc_p'])}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--methods", default="mean,max,abmil")
    ap.add_argument("--work", default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                           / "dnd-studio" / "dnd_bench"),
                    help="where bags and runs go (default: ~/.cache/dnd-studio/dnd_bench)")
    ap.add_argument("--results", default=str(HERE / "results" / "dnd_bench"))
    ap.add_argument("--summary", action="store_true",
                    help="print one Markdown table of every finished dataset's results and exit")
    args, bench_args = ap.parse_known_args(argv)
    if args.summary:
        print(summary_table(Path(args.results)))
        return 0
    if not SHARED.is_dir():
        print(f"shared data not found at {SHARED}", file=sys.stderr)
        return 1
    from dnd_engine.cli.main import main as dnd
    work = Path(args.work)
    for name in args.datasets:
        feats, labels = stage(name, work)
        out = work / "runs" / name
        cmd = ["bench", "--features", str(feats), "--labels", str(labels), "--methods", args.methods,
               "--out", str(out), "--quiet", *bench_args]
        print(f"== {name}: dnd {' '.join(cmd[1:])}", flush=True)
        code = dnd(cmd)
        if code:
            return code
        dest = Path(args.results) / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("table.md", "table.csv"):
            shutil.copyfile(out / f, dest / f)
        with open(dest / "command.txt", "w") as f:
            f.write("dnd " + " ".join(c if not c.startswith(str(work)) else c.replace(str(work), "<work>")
                                      for c in cmd) + "\n")
        print(f"   table: {dest / 'table.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
