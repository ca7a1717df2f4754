"""Where MambaMIL's training step goes on a GPU: S4MIL as the reference, a sweep of the scan's (block, sub-chunk)
sizes, a profile of one step (kernel launches, the costliest ops) and ``torch.compile`` of the whole model.

Usage (CUDA only): python benchmarks/mamba_scan_gpu.py [--n 10000] [--skip-compile]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dnd_engine.models.selective_scan as ss  # noqa: E402
from dnd_engine.models import build_model  # noqa: E402


def step_time(model, x, y, reps: int = 5) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x).logits, y).backward()
        opt.step()
    step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--skip-compile", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 1
    dev = torch.device("cuda")
    x, y = torch.randn(args.n, 1024, device=dev), torch.tensor([1], device=dev)

    def fresh(name):
        torch.manual_seed(0)
        return build_model(name, in_dim=1024, n_classes=2).to(dev).train()
    s4 = step_time(fresh("s4mil"), x, y)
    print(f"{torch.cuda.get_device_name()}, N={args.n}: s4mil {s4 * 1e3:.1f} ms per step", flush=True)
    default = ss.DEFAULTS["cuda"]
    for block, sub in itertools.product((8, 16, 32, 64), (2048, 10000, 16384)):
        ss.DEFAULTS["cuda"] = (block, sub)
        t = step_time(fresh("mambamil"), x, y, 3)
        print(f"mambamil block {block} sub {sub}: {t * 1e3:.1f} ms = {t / s4:.1f}x s4mil", flush=True)
    ss.DEFAULTS["cuda"] = default
    m = fresh("mambamil")
    step_time(m, x, y, 1)
    from torch.profiler import ProfilerActivity, profile
    opt = torch.optim.SGD(m.parameters(), lr=1e-4)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        opt.zero_grad()
        F.cross_entropy(m(x).logits, y).backward()
        opt.step()
        torch.cuda.synchronize()
    ev = prof.key_averages()
    print("kernel launches", sum(e.count for e in ev if e.key.startswith("cudaLaunchKernel")))
    print(ev.table(sort_by="self_cpu_time_total", row_limit=12))
    if not args.skip_compile:
        t0 = time.perf_counter()
        cm = torch.compile(m)
        t = step_time(cm, x, y)
        print(f"torch.compile (whole model): {t * 1e3:.1f} ms per step (compile + warm-up {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
