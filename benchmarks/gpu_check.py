"""GPU checks for feature extraction (run where CUDA exists): bf16/channels_last/compile agree with fp32, and
encoder throughput per precision. Prints one line per figure; exits non-zero if a check fails."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnd_engine.features import build_extractor  # noqa: E402
from dnd_engine.features.patch_dataset import PatchDataset  # noqa: E402


def real_patches(n: int = 64) -> torch.Tensor:
    slide = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"
    ys, xs = np.mgrid[512:2400:224, 300:1900:224]
    coords = np.stack([xs.ravel(), ys.ravel()], 1)[:n]
    ds = PatchDataset(str(slide), coords, 0, 448, 224)
    return torch.stack([ds[i] for i in range(len(ds))])


def throughput(e, x: torch.Tensor, reps: int = 5) -> float:
    e(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        e(x)
    torch.cuda.synchronize()
    return reps * len(x) / (time.perf_counter() - t)


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__}")
    x = real_patches()
    ok = True
    for name in ("resnet50_trunc", "uni_v1", "stain_stats"):
        ref = build_extractor(name, random_init=True, device="cuda", precision="fp32")
        ref.channels_last = False
        f_ref = ref(x)
        for prec in ("bf16", "fp16") if name != "stain_stats" else ("fp32",):
            e = build_extractor(name, random_init=True, device="cuda", precision=prec)
            cos = torch.nn.functional.cosine_similarity(e(x), f_ref, dim=1)
            good = bool(cos.min() >= 0.999) if name != "uni_v1" else bool(cos.min() >= 0.99)
            ok &= good
            print(f"{name} {prec} (channels_last={e.channels_last}) vs fp32: cosine min {cos.min():.5f} "
                  f"mean {cos.mean():.5f} {'ok' if good else 'LOW'}")
    big = x.repeat(4, 1, 1, 1)[:256]
    for name, precs in (("resnet50_trunc", ("fp32", "bf16")), ("uni_v1", ("fp32", "fp16"))):
        for prec in precs:
            e = build_extractor(name, random_init=True, device="cuda", precision=prec)
            print(f"{name} {prec} eager: {throughput(e, big):8.0f} patches/s (batch 256)")
        if name != "resnet50_trunc":
            continue
        e = build_extractor(name, random_init=True, device="cuda", precision=precs[1])
        e.enable_compile(256)
        t = time.perf_counter()
        e(big)
        torch.cuda.synchronize()
        print(f"{name} {precs[1]} compiled: {throughput(e, big):8.0f} patches/s (compile {time.perf_counter() - t:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
