"""MambaMIL's training step on a GPU against S4MIL's: the fused Triton scan at several kernel shapes, and the
blocked PyTorch scan (the path taken without Triton) as the reference.

Prints, per N, S4MIL's step, MambaMIL's step with the blocked scan, and with the Triton scan for each
(T tokens per chunk, BD channels per program, warps) — each as a ratio to S4MIL measured in the same process —
plus the scan alone (forward + backward at MambaMIL's shapes: 2 × 1024 channels, d_state 16).

Usage (CUDA only): python benchmarks/mamba_scan_gpu.py [--sizes 1000 10000] [--quick] [--profile]
(the shape sweep runs at the largest size; ``--quick`` keeps the default shape only)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnd_engine.models import build_model  # noqa: E402
from dnd_engine.models import scan_triton as st  # noqa: E402
from dnd_engine.models import selective_scan as ss  # noqa: E402


def _median_time(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def step_time(model, x, y, reps: int = 5) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x).logits, y).backward()
        opt.step()
    return _median_time(step, reps)


def scan_time(L: int, reps: int = 5) -> float:
    """Forward + backward of the scan alone (no D term) at MambaMIL's shapes."""
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    u = torch.randn(L, 2048, device=dev, generator=g)
    dl = F.softplus(torch.randn(L, 2048, device=dev, generator=g) - 1)
    A = -torch.exp(torch.randn(2048, 16, device=dev, generator=g))
    B, C = (torch.randn(L, 2, 16, device=dev, generator=g) for _ in range(2))
    dy = torch.randn(L, 2048, device=dev, generator=g)
    sizes = ss.default_sizes(dev)

    def run():
        _, _, starts = ss.scan_forward(u, dl, A, B, C, None, *sizes)
        ss.scan_backward(u, dl, A, B, C, starts, dy, None, *sizes)
    return _median_time(run, reps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10_000])
    ap.add_argument("--quick", action="store_true", help="only the default Triton shape")
    ap.add_argument("--profile", action="store_true", help="kernel table of one MambaMIL step at the last size")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 1
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
          f"{getattr(st.triton, '__version__', 'absent')}", flush=True)
    default = dict(st.CONFIG)
    sweep = [(16, 16, 4), (16, 16, 8), (32, 8, 4), (32, 16, 4), (32, 16, 8), (32, 32, 8), (64, 8, 4), (64, 16, 8)]
    for n in args.sizes:
        # the sweep at the largest size only; the default shape everywhere
        shapes = [tuple(default.values())] + ([] if args.quick or n != max(args.sizes) else
                                              [c for c in sweep if c != tuple(default.values())])
        x, y = torch.randn(n, 1024, device=dev), torch.tensor([1], device=dev)

        def fresh(name):
            torch.manual_seed(0)
            return build_model(name, in_dim=1024, n_classes=2).to(dev).train()
        s4 = step_time(fresh("s4mil"), x, y)
        print(f"N={n}: s4mil {s4 * 1e3:.1f} ms per step", flush=True)
        os.environ["DND_SCAN_TRITON"] = "0"
        t = step_time(fresh("mambamil"), x, y, 3)
        print(f"  mambamil, blocked PyTorch scan: {t * 1e3:.1f} ms = {t / s4:.1f}x; scan alone "
              f"{scan_time(n) * 1e3:.1f} ms", flush=True)
        os.environ["DND_SCAN_TRITON"] = "1"
        for T, bd, warps in shapes:
            st.CONFIG.update(T=T, BD=bd, warps=warps)
            try:
                t = step_time(fresh("mambamil"), x, y)
                print(f"  mambamil, Triton T={T} BD={bd} warps={warps}: {t * 1e3:.1f} ms = {t / s4:.1f}x; "
                      f"scan alone {scan_time(n) * 1e3:.2f} ms", flush=True)
            except Exception as e:  # a shape that does not compile (registers, shared memory) is reported
                print(f"  Triton T={T} BD={bd} warps={warps}: failed: {type(e).__name__}: {str(e)[:200]}")
        st.CONFIG.update(default)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        m = build_model("mambamil", in_dim=1024, n_classes=2).to(dev).train()
        step_time(m, x, y, 1)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            F.cross_entropy(m(x).logits, y).backward()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
