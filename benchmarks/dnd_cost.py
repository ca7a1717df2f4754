"""What D&D costs: the whole four-stage run against training the base model alone, and per-slide inference of
the distilled student against running the base model and every expert.

Both measured in one process on the same synthetic bags (random features, a planted signal so training is
real), as ratios, at the paper's epochs (200 base, 200 per expert, 300 student) unless told otherwise. By design
the training ratio is (E_base + E_expert + E_student) / E_base = 3.5 for the training steps (each expert sees 1/C
of the slides); what comes on top is validation (every expert is selected on the whole validation split, every
epoch), clustering, the one teacher pass (soft targets cached), and per-epoch checkpoints.

Usage::

    python benchmarks/dnd_cost.py [--model abmil] [--slides 60] [--instances 256] [--dim 1024]
                                  [--base-epochs 200 --expert-epochs 200 --student-epochs 300] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_split(n_slides: int, n_inst: int, dim: int, seed: int = 0):
    from dnd_engine.bags import BagDataset
    rng = np.random.default_rng(seed)
    bags, labels = {}, {}
    for i in range(n_slides):
        y = i % 2
        m = int(rng.integers(n_inst // 2, n_inst + 1))
        x = rng.normal(size=(m, dim)).astype(np.float32)
        if y:
            x[rng.choice(m, max(1, m // 10), replace=False), :8] += 1.5
        bags[f"s{i:04d}"], labels[f"s{i:04d}"] = torch.from_numpy(x), f"c{y}"
    ds = BagDataset.from_tensors(bags, labels)
    ids = ds.slide_ids
    n_val = max(2, round(0.125 * n_slides))      # 5-fold CV with 10 % validation: val ≈ train / 7
    return ds.subset(ids[n_val:]), ds.subset(ids[:n_val])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="abmil")
    ap.add_argument("--slides", type=int, default=60, help="training + validation slides")
    ap.add_argument("--instances", type=int, default=256, help="largest bag (bags hold half to all of it)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--base-epochs", type=int, default=200)
    ap.add_argument("--expert-epochs", type=int, default=200)
    ap.add_argument("--student-epochs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=50, help="inference passes per slide for the timing")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from dnd_engine.dnd import preset_config, run_dnd
    from dnd_engine.models import build_model
    from dnd_engine.training.trainer import train_model

    train, val = make_split(args.slides, args.instances, args.dim)
    cfg = preset_config("paper", args.model)
    cfg.base.epochs, cfg.expert.epochs, cfg.student.epochs = args.base_epochs, args.expert_epochs, args.student_epochs
    for part in (cfg.base, cfg.expert, cfg.student):
        part.device = "cpu"
    print(f"{args.model}, {len(train)} training + {len(val)} validation slides of ≤{args.instances}×{args.dim}, "
          f"epochs {cfg.base.epochs}/{cfg.expert.epochs}/{cfg.student.epochs}, C={cfg.n_clusters}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    with tempfile.TemporaryDirectory() as d:
        from dataclasses import replace       # warm-up: imports, allocator, first checkpoint write
        warm = build_model(args.model, in_dim=args.dim, n_classes=2, **cfg.model_options)
        train_model(warm, train.subset(train.slide_ids[:4]), val, replace(cfg.base, epochs=2), Path(d) / "warm")
        torch.manual_seed(cfg.base.seed)
        base = build_model(args.model, in_dim=args.dim, n_classes=2, **cfg.model_options)
        t0 = time.perf_counter()
        train_model(base, train, val, cfg.base, Path(d) / "base_alone")
        t_base = time.perf_counter() - t0
        starts = {}                              # "stage k/4" → when its first log line came

        def log(msg):
            if msg.startswith("stage "):
                starts.setdefault(msg.split(":")[0], time.perf_counter())
        t0 = time.perf_counter()
        res = run_dnd(train, val, cfg, Path(d) / "dnd", log=log)
        t_dnd = time.perf_counter() - t0
        t_end = t0 + t_dnd
    print(f"base training alone:       {t_base:8.1f} s")
    print(f"whole D&D run:             {t_dnd:8.1f} s")
    marks = sorted(starts.items(), key=lambda kv: kv[1])
    ends = [t for _, t in marks[1:]] + [t_end]
    labels = {"stage 1/4": "base", "stage 2/4": "clustering", "stage 3/4": "experts", "stage 4/4": "teachers+student"}
    print("  by stage (s): " + ", ".join(f"{labels.get(k, k)} {e - t:.1f}" for (k, t), e in zip(marks, ends)))

    # per-slide inference: the student alone vs base + every expert (what routing or an ensemble would cost)
    teachers = [res.base] + res.experts
    bags = [val[i][0] for i in range(len(val))]
    with torch.inference_mode():
        for m in [res.student] + teachers:
            m.eval()(bags[0], scores=False)       # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for x in bags:
                res.student(x, scores=False)
        t_student = (time.perf_counter() - t0) / (args.repeats * len(bags))
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for x in bags:
                for m in teachers:
                    m(x, scores=False)
        t_all = (time.perf_counter() - t0) / (args.repeats * len(bags))
    print(f"inference per slide: student {t_student * 1e3:.2f} ms, base + {len(res.experts)} experts "
          f"{t_all * 1e3:.2f} ms ({t_all / t_student:.1f}x the student)")
    print(f"D&D training cost: {t_dnd / t_base:.2f}x base training alone (goal ≤ 3.5x at the paper's epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
