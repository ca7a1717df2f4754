"""Small synthetic feature bags for training tests: positive bags hide a few shifted instances."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch


def make_bags(n_per_class=(10, 10), dim=16, n_inst=(8, 20), signal=3.0, seed=0):
    """{slide_id: tensor}, {slide_id: label} — class c>0 bags get instances shifted along dimension c."""
    rng = np.random.default_rng(seed)
    bags, labels = {}, {}
    k = 0
    for c, n in enumerate(n_per_class):
        for _ in range(n):
            m = int(rng.integers(n_inst[0], n_inst[1] + 1))
            x = rng.normal(size=(m, dim)).astype(np.float32)
            if c > 0:
                idx = rng.choice(m, size=max(1, m // 4), replace=False)
                x[idx, c % dim] += signal
            sid = f"s{k:03d}"
            bags[sid] = torch.from_numpy(x)
            labels[sid] = f"class_{c}"
            k += 1
    return bags, labels


def write_bags(folder: Path, bags, labels, fmt="pt", splits=None) -> Path:
    """Write bags (pt or h5) and a labels.csv beside the folder; returns the labels path."""
    folder.mkdir(parents=True, exist_ok=True)
    for sid, x in bags.items():
        if fmt == "pt":
            torch.save(x, folder / f"{sid}.pt")
        else:
            with h5py.File(folder / f"{sid}.h5", "w") as f:
                f["features"] = x.numpy()
                f["coords"] = np.zeros((len(x), 2), dtype=np.int64)
    lab = folder.parent / "labels.csv"
    rows = ["slide_id,label" + (",split" if splits else "")]
    for sid in bags:
        rows.append(f"{sid},{labels[sid]}" + (f",{splits[sid]}" if splits else ""))
    lab.write_text("\n".join(rows) + "\n")
    return lab
