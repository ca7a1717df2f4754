"""Training speed and memory of every registered MIL model, on one device, in one run.

For each model (whatever ``dnd_engine.models`` registers; expected ones that are missing are reported):

(a) seconds per training step (forward + backward + SGD step, one bag) at N = 1k and 10k instances, median of a few
    steps after a warm-up step; MambaMIL's time is divided by S4MIL's measured in the same process and printed
    against the goal (≤ 10×);
(b) seconds per epoch over a fixed synthetic set (default 200 bags × 2k instances; bags are drawn from a seeded
    generator and only the training steps are timed);
(c) peak memory of one forward + backward on a 100k-instance bag: RSS (``ru_maxrss``) of a fresh subprocess per
    model on CPU, ``torch.cuda.max_memory_allocated`` on CUDA (also in a fresh subprocess).

Usage: .venv/bin/python benchmarks/train_speed.py [--device auto|cpu|cuda] [--models mambamil s4mil ...]
       [--sizes [1000 10000 ...]] [--steps 3] [--bags 200] [--instances 2000] [--skip-epoch] [--skip-memory]
       [--memory-n 100000] [--threads K] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnd_engine.models import build_model, model_names  # noqa: E402

EXPECTED = ["mean", "max", "abmil", "transmil", "s4mil", "mambamil"]
GOAL = 10.0  # MambaMIL step time ≤ GOAL × S4MIL's


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).logits, y)
    loss.backward()
    opt.step()


def step_seconds(name: str, n: int, dim: int, steps: int, device: torch.device):
    """Median wall seconds per step, and median process CPU seconds (all threads; less disturbed by other load)."""
    torch.manual_seed(0)
    model = build_model(name, in_dim=dim, n_classes=2).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(n, dim, device=device)
    y = torch.tensor([1], device=device)
    train_step(model, opt, x, y)  # warm-up
    wall, cpu = [], []
    for _ in range(steps):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(model, opt, x, y)
        sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def epoch_seconds(name: str, bags: int, instances: int, dim: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model(name, in_dim=dim, n_classes=2).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1234)
    total = 0.0
    for i in range(bags):
        x = torch.randn(instances, dim, generator=gen).to(device)
        y = torch.tensor([i % 2], device=device)
        sync(device)
        t0 = time.perf_counter()
        train_step(model, opt, x, y)
        sync(device)
        total += time.perf_counter() - t0
    return total


def memory_child(name: str, n: int, dim: int, device: torch.device) -> dict:
    """Runs in a fresh process: one forward + backward on an (n, dim) bag; prints its peak memory as JSON."""
    torch.manual_seed(0)
    model = build_model(name, in_dim=dim, n_classes=2).to(device).train()
    x = torch.randn(n, dim, device=device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB → GiB
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    F.cross_entropy(model(x).logits, torch.tensor([1], device=device)).backward()
    sync(device)
    out = {"seconds": time.perf_counter() - t0, "rss_gib_before": before,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    if device.type == "cuda":
        out["cuda_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return out


def memory_of(name: str, n: int, dim: int, device: torch.device) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", name, "--memory-n", str(n),
           "--dim", str(dim), "--device", device.type, "--threads", str(torch.get_num_threads())]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit code {p.returncode}"]
        return {"error": tail[0][:200]}
    return json.loads(lines[-1])


def fmt(v, unit="") -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.3f}{unit}" if v < 100 else f"{v:.1f}{unit}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    ap.add_argument("--sizes", nargs="*", type=int, default=[1000, 10000],
                    help="instances per bag for (a); none (a bare --sizes) skips (a)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per size (after one warm-up)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--bags", type=int, default=200)
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--memory-n", type=int, default=100_000)
    ap.add_argument("--skip-epoch", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.memory_n, args.dim, device)))
        return 0

    registered = model_names()
    missing = [m for m in EXPECTED if m not in registered]
    names = args.models or registered
    unknown = [m for m in names if m not in registered]
    names = [m for m in names if m in registered]
    dev_desc = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"# train_speed on {dev_desc}; torch {torch.__version__}")
    if missing:
        print(f"missing (not registered): {', '.join(missing)}")
    if unknown:
        print(f"unknown names skipped: {', '.join(unknown)}")

    results = {"device": dev_desc, "missing": missing, "models": {}}
    for name in names:
        r = results["models"].setdefault(name, {})
        for n in args.sizes:
            try:
                r[f"step_s_{n}"], r[f"step_cpu_s_{n}"] = step_seconds(name, n, args.dim, args.steps, device)
            except Exception as e:  # report and go on with the other models
                r[f"step_s_{n}"] = f"error: {type(e).__name__}: {str(e)[:80]}"
            print(f"  {name} N={n}: {fmt(r[f'step_s_{n}'], ' s')} (process CPU {fmt(r.get(f'step_cpu_s_{n}'), ' s')})",
                  flush=True)
        if not args.skip_epoch:
            try:
                r["epoch_s"] = epoch_seconds(name, args.bags, args.instances, args.dim, device)
            except Exception as e:
                r["epoch_s"] = f"error: {type(e).__name__}: {str(e)[:80]}"
            print(f"  {name} epoch: {fmt(r['epoch_s'], ' s')}", flush=True)
        if not args.skip_memory:
            r["memory"] = memory_of(name, args.memory_n, args.dim, device)
            print(f"  {name} memory at N={args.memory_n}: {r['memory']}", flush=True)

    # tables
    print()
    head = ["model"] + [f"step s @ {n}" for n in args.sizes]
    if not args.skip_epoch:
        head.append(f"epoch s ({args.bags}×{args.instances})")
    if not args.skip_memory:
        head.append(f"peak {'GPU alloc' if device.type == 'cuda' else 'RSS'} GiB @ {args.memory_n}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in names:
        r = results["models"][name]
        row = [name] + [fmt(r.get(f"step_s_{n}")) for n in args.sizes]
        if not args.skip_epoch:
            row.append(fmt(r.get("epoch_s")))
        if not args.skip_memory:
            m = r.get("memory", {})
            row.append(m.get("error", fmt(m.get("cuda_peak_gib" if device.type == "cuda" else "peak_rss_gib"))))
        print("| " + " | ".join(row) + " |")

    m, s = results["models"].get("mambamil"), results["models"].get("s4mil")
    if m and s:
        print()
        ratios = {}
        for n in args.sizes:
            a, b = m.get(f"step_s_{n}"), s.get(f"step_s_{n}")
            if isinstance(a, float) and isinstance(b, float) and b > 0:
                ratios[n] = a / b
                verdict = "meets" if a / b <= GOAL else "MISSES"
                line = f"MambaMIL / S4MIL step time at N={n}: {a / b:.2f}× ({verdict} the ≤{GOAL:g}× goal)"
                ca, cb = m.get(f"step_cpu_s_{n}"), s.get(f"step_cpu_s_{n}")
                if device.type == "cpu" and ca and cb:
                    line += f"; process CPU time {ca / cb:.2f}×"
                print(line)
        results["mambamil_over_s4mil"] = ratios
    elif "mambamil" in names or "s4mil" in names:
        print("\nMambaMIL / S4MIL ratio needs both models in this run")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
