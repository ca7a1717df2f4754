"""Peak memory of `dnd extract` over a small and a large cohort: does it stay flat as the cohort grows?

A cohort of 1,000+ slides must not end with several times the memory of the first ten (TRIDENT #11, #176:
64-90 GB). This writes one synthetic cohort of ``--n2`` small slides, runs ``dnd extract`` (weight-free
``stain_stats`` extractor, in a subprocess of its own) on its first ``--n1`` slides and then on all ``--n2``, and
prints each run's peak resident memory:

- ``main``: the largest single process (the kernel's high-water mark, ``ru_maxrss`` from ``wait4``, over the
  ``dnd extract`` process and the children it reaped: the main process, which holds the encoder);
- ``children``: the largest reading or preparation process (its ``VmHWM``, sampled every 50 ms);
- ``all``: the sum of every process's high-water mark (an upper bound: pages a forked reader shares with its
  parent count twice, and the peaks need not coincide).

The last line is ``peak RSS N2/N1: R`` (main process); the goal is R ≤ 1.15.

Slides must be large enough that the small run fills encoder batches (default 2048 px: about ten 10x patches
each, so ten slides fill a batch of 64): the peak is reached while a full batch is encoded, and a cohort with
fewer patches than one batch encodes smaller ones. With 1024 px slides (two to four patches each) ten slides
never fill a batch and the ratio measures the batch size, not the cohort (1.17 at batch 64, 1.05 at batch 8).

Usage: .venv/bin/python benchmarks/extract_memory.py [--n1 10] [--n2 40] [--size 2048] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnd_engine.synth import make_synthetic_cohort  # noqa: E402


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _hwm_kib(pid: int) -> int:
    """The process's peak resident size so far (0 when it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _sample_tree(pid: int, peaks: dict) -> None:
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        peaks[p] = max(peaks.get(p, 0), _hwm_kib(p))
        todo += _children(p)


def run_extract(slides: Path, out: Path, workers: int | None, extra: list[str] = ()) -> dict:
    """Run ``dnd extract`` on ``slides`` in a subprocess; its peak memory (MiB) and wall time."""
    cmd = [sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(slides), "--out", str(out),
           "--extractor", "stain_stats", "--compile", "off", "--device", "cpu", "--quiet", *extra]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            _sample_tree(proc.pid, peaks)
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"dnd extract failed (exit {proc.returncode}): {output.strip().splitlines()[-1:]}")
    kids = [v for p, v in peaks.items() if p != proc.pid] or [0]
    return {"main_mib": usage.ru_maxrss / 1024, "children_mib": max(kids) / 1024,
            "all_mib": (usage.ru_maxrss + sum(kids)) / 1024, "seconds": time.perf_counter() - t0}


def measure(n1: int, n2: int, size: int, workers: int | None, root: Path, seed: int = 11,
            extra: list[str] = ()) -> tuple[dict, dict]:
    """(run over n1 slides, run over n2 slides): the first n1 slides of one synthetic cohort, then all n2."""
    cohort = make_synthetic_cohort(root / "cohort", n_slides=n2, size=size, seed=seed)
    paths = sorted(s.path for s in cohort.slides)
    runs = []
    for n in (n1, n2):
        d = root / f"slides_{n}"
        d.mkdir()
        for p in paths[:n]:
            os.symlink(p, d / p.name)
        runs.append(run_extract(d, root / f"out_{n}", workers, extra))
    return runs[0], runs[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=10)
    ap.add_argument("--n2", type=int, default=40)
    ap.add_argument("--size", type=int, default=2048, help="level-0 side of each synthetic slide (px)")
    ap.add_argument("--workers", type=int, default=None, help="reading processes (default: dnd's)")
    ap.add_argument("--batch-size", type=int, default=None, help="encoder batch (default: dnd's)")
    a = ap.parse_args()
    extra = [] if a.batch_size is None else ["--batch-size", str(a.batch_size)]
    with tempfile.TemporaryDirectory(prefix="dnd_mem_") as tmp:
        r1, r2 = measure(a.n1, a.n2, a.size, a.workers, Path(tmp), extra=extra)
    for n, r in ((a.n1, r1), (a.n2, r2)):
        print(f"{n:>4} slides: peak RSS main {r['main_mib']:6.0f} MiB, largest child {r['children_mib']:5.0f} MiB, "
              f"all processes {r['all_mib']:6.0f} MiB ({r['seconds']:.0f} s)")
    print(f"largest child N2/N1: {r2['children_mib'] / r1['children_mib']:.3f}")
    print(f"peak RSS N2/N1: {r2['main_mib'] / r1['main_mib']:.3f}")


if __name__ == "__main__":
    main()
