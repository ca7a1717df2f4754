"""Slides per hour and patches/s of `dnd extract` on one machine, by how many processes share the cohort.

One run, the same synthetic cohort (``dnd synth``), each arm into a fresh output folder, timed from the
command's start to its end as a user waits for it (start-up, model building and every slide included):

- **1 process**: ``dnd extract`` as a user runs it on one device; every other arm is reported against it;
- **--devices**: ``dnd extract --devices cpu,cpu`` on a CPU (two encoder processes splitting the cores); on a
  GPU box every GPU (``--devices cuda:0,...,cuda:N-1``), or ``cuda:0,cuda:0`` when it has one;
- **2 processes**: two ``dnd extract`` commands started at once on the same folders, splitting the cohort by the
  per-slide lock files (issue 21 item 4). The arm runs when ``dnd_engine.features.claims`` exists (the locks);
  without it both commands would extract every slide, so it is skipped with a line;
- **Ray local**: ``dnd extract --ray local`` (a local Ray cluster; issue 21 item 5), skipped with a line when this
  ``dnd`` has no ``--ray`` or Ray is not installed.

Every arm's features are compared with the 1-process arm's (same files; features within rtol 1e-5) and the line
says so. The last line is the best arm's speed-up over one process, e.g. ``best: --devices cpu,cpu 1.31x``.

Usage: .venv/bin/python benchmarks/extract_scale.py                    # a few minutes on a 2-core CPU
       .venv/bin/python benchmarks/extract_scale.py --slides 40 --size 8192 --device cuda --extractor \\
           resnet50_trunc --weights ~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the per-slide lock files of issue 21 item 4: two `dnd extract` on one folder split the cohort only with them.
#: COORDINATOR: the 2-process arm turns itself on once that module is merged; set False to force it off.
LOCKS_MERGED = importlib.util.find_spec("dnd_engine.features.claims") is not None
#: what the Ray arm passes to ``dnd extract --ray`` (issue 21 item 5; COORDINATOR: match the merged option)
RAY_ADDRESS = "local"


@dataclass
class Arm:
    name: str
    commands: list                  # one argv per process started at once
    skipped: str = ""               # why it does not run here
    seconds: float = 0.0
    slides: int = 0
    patches: int = 0
    equal: Optional[bool] = None
    error: str = ""


def dnd(*args: str) -> list:
    return [sys.executable, "-m", "dnd_engine.cli", *args]


def has_ray_option() -> bool:
    """Whether this ``dnd extract`` takes ``--ray`` and Ray is installed (issue 21 item 5)."""
    if importlib.util.find_spec("ray") is None:
        return False
    help_text = subprocess.run(dnd("extract", "--help"), capture_output=True, text=True, env=_env()).stdout
    return "--ray" in help_text


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def features(out: Path, extractor: str) -> dict:
    """{slide id: features} of a finished run."""
    got = {}
    for p in sorted((out / f"features_{extractor}" / "h5_files").glob("*.h5")):
        with h5py.File(p, "r") as f:
            got[p.stem] = f["features"][:]
    return got


def run_arm(arm: Arm, out: Path, extractor: str) -> None:
    """Start the arm's processes at once on ``out`` and wait for all of them."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd + ["--out", str(out)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd in arm.commands]
    outs = [p.communicate() for p in procs]
    arm.seconds = time.perf_counter() - t0
    bad = [(p.returncode, o[1].strip().splitlines()[-1:] or [""]) for p, o in zip(procs, outs) if p.returncode]
    if bad:
        arm.error = f"exit {bad[0][0]}: {bad[0][1][0][:200]}"
    feats = features(out, extractor)
    arm.slides = len(feats)
    arm.patches = sum(len(f) for f in feats.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slides", type=int, default=8, help="synthetic slides in the cohort (default 8)")
    ap.add_argument("--size", type=int, default=6144, help="level-0 side of each slide in pixels (default 6144)")
    ap.add_argument("--extractor", default="stain_stats")
    ap.add_argument("--weights", default=None, help="the extractor's weights file, where it needs one")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: the 1-process arm's device, and the kind "
                                                     "--devices lists")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="off",
                    help="torch.compile in every process (default off: its one-off cost is per process)")
    ap.add_argument("--workers", type=int, default=None, help="dnd extract --workers (per process)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--keep", type=Path, default=None, help="keep the cohort and outputs in this folder")
    args = ap.parse_args()

    import torch
    work = Path(tempfile.mkdtemp(prefix="extract_scale_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        slides = work / "cohort" / "slides"
        if not slides.is_dir() or len(list(slides.glob("*.tif"))) != args.slides:
            shutil.rmtree(work / "cohort", ignore_errors=True)
            subprocess.run(dnd("synth", "--out", str(work / "cohort"), "--n-slides", str(args.slides), "--size",
                               str(args.size)), check=True, env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        common = ["extract", "--slides", str(slides), "--extractor", args.extractor, "--precision",
                  args.precision, "--compile", args.compile, "--batch-size", str(args.batch_size), "--quiet"]
        if args.weights:
            common += ["--weights", args.weights]
        if args.workers is not None:
            common += ["--workers", str(args.workers)]
        if args.device.startswith("cuda"):
            n_gpu = torch.cuda.device_count()
            devices = ",".join(f"cuda:{k}" for k in range(n_gpu)) if n_gpu > 1 else "cuda:0,cuda:0"
        else:
            devices = "cpu,cpu"
        arms = [
            Arm("1 process", [dnd(*common, "--device", args.device)]),
            Arm(f"--devices {devices}", [dnd(*common, "--devices", devices)]),
            # COORDINATOR: the 2-process arm (issue 21 item 4's locks); see LOCKS_MERGED above
            Arm("2 processes, one folder", [dnd(*common, "--device", args.device)] * 2,
                skipped="" if LOCKS_MERGED else "needs the per-slide lock files (dnd_engine.features.claims)"),
            Arm("Ray local", [dnd(*common, "--ray", RAY_ADDRESS)],
                skipped="" if has_ray_option() else
                "needs dnd extract --ray and Ray (pip install 'dnd-studio[cluster]')"),
        ]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        gpu = f", {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}" if torch.cuda.is_available() else ""
        print(f"extract_scale: {args.slides} synthetic slides of {args.size} px, {args.extractor} on {args.device}; "
              f"{cores} cores{gpu}; {platform.processor() or platform.machine()}, torch {torch.__version__}")
        ref = None
        for k, arm in enumerate(arms):
            if arm.skipped:
                continue
            run_arm(arm, work / f"out{k}", args.extractor)
            got = features(work / f"out{k}", args.extractor)
            if ref is None:
                ref = got
            else:
                arm.equal = got.keys() == ref.keys() and all(
                    a.shape == ref[s].shape and np.allclose(a, ref[s], rtol=1e-5, atol=1e-6) for s, a in got.items())
        base = arms[0]
        print(f"{'arm':<30} {'seconds':>8} {'slides':>7} {'slides/h':>9} {'patches/s':>10} {'vs 1 proc':>9}  outputs")
        for arm in arms:
            if arm.skipped:
                print(f"{arm.name:<30} skipped: {arm.skipped}")
                continue
            sph = arm.slides / arm.seconds * 3600 if arm.seconds else 0.0
            pps = arm.patches / arm.seconds if arm.seconds else 0.0
            ratio = base.seconds / arm.seconds if arm.seconds and base.seconds else 0.0
            eq = "reference" if arm is base else ("equal" if arm.equal else "DIFFER")
            print(f"{arm.name:<30} {arm.seconds:>8.1f} {arm.slides:>4}/{args.slides:<2} {sph:>9.0f} {pps:>10.1f} "
                  f"{ratio:>8.2f}x  {eq}" + (f"  ({arm.error})" if arm.error else ""))
        ran = [a for a in arms[1:] if not a.skipped and a.seconds]
        if ran:
            best = min(ran, key=lambda a: a.seconds)
            print(f"best: {best.name} {base.seconds / best.seconds:.2f}x")
        return 0 if all(not a.error and a.equal in (None, True) for a in arms) else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
