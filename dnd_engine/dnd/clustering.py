"""Stage 2: cluster the base model's slide representations, keeping every assignment tied to its slide id.

The authors' released code reads the representations through a shuffling loader and then uses row positions as
dataset indices (MIL_REFERENCE §1.5), so its experts train on random partitions of the cluster sizes. Here the
representations are computed in dataset order and stored with their slide ids; the released behaviour exists
only as the explicitly named ``legacy_random_partition``. New slides go to the nearest centre: the fitted
``KMeansConstrained.predict`` would enforce the size bounds on the new batch, which is not what a lone slide needs.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..atomic import write_json_atomic, write_text_atomic
from ..bags import BagDataset
from ..device import resolve_device
from ..errors import DnDError
from ..models import MILModel
from ..progress import CancelFn, check_cancelled


@torch.no_grad()
def slide_representations(model: MILModel, ds: BagDataset, kind: str = "embedding", device="cpu",
                          cancelled: Optional[CancelFn] = None) -> np.ndarray:
    """Row ``i`` is slide ``ds.slide_ids[i]``'s embedding or logits, from an eval-mode pass in dataset order."""
    if kind not in ("embedding", "logits"):
        raise DnDError(f"cannot cluster on {kind!r}: choose embedding or logits")
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for i in range(len(ds)):
            check_cancelled(cancelled)
            x, _, _ = ds[i]
            out = model(x.to(device), scores=False)
            rows.append((out.embedding if kind == "embedding" else out.logits).float()[0].cpu().numpy())
    finally:
        model.train(was_training)
    return np.stack(rows).astype(np.float64) if rows else np.zeros((0, 0))


@dataclass
class Clustering:
    """Which training slide belongs to which cluster, and the centres new slides are matched against."""

    slide_ids: List[str]
    assignments: np.ndarray            # (N,) cluster index per slide id, same order
    centres: np.ndarray                # (C, d)
    method: str                        # constrained-kmeans | kmeans | legacy-random-partition
    size_min: Optional[int] = None
    size_max: Optional[int] = None
    input: str = "embedding"
    seed: int = 1
    inertia: float = float("nan")
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.centres.shape[0])

    def sizes(self) -> List[int]:
        return np.bincount(self.assignments, minlength=self.n_clusters).tolist()

    def members(self, c: int) -> List[str]:
        return [s for s, a in zip(self.slide_ids, self.assignments) if a == c]

    def of(self, slide_id: str) -> int:
        try:
            return int(self.assignments[self.slide_ids.index(slide_id)])
        except ValueError:
            raise DnDError(f"slide {slide_id!r} was not clustered") from None

    def to_json(self) -> Dict[str, object]:
        return {"method": self.method, "input": self.input, "n_clusters": self.n_clusters, "seed": self.seed,
                "size_min": self.size_min, "size_max": self.size_max, "sizes": self.sizes(),
                "inertia": None if np.isnan(self.inertia) else float(self.inertia),
                "centres": self.centres.tolist(), "slide_ids": list(self.slide_ids),
                "assignments": [int(a) for a in self.assignments], **self.extra}

    @classmethod
    def from_json(cls, d: Dict[str, object]) -> "Clustering":
        known = {"method", "input", "n_clusters", "seed", "size_min", "size_max", "sizes", "inertia", "centres",
                 "slide_ids", "assignments"}
        return cls(slide_ids=list(d["slide_ids"]), assignments=np.asarray(d["assignments"], dtype=np.int64),
                   centres=np.asarray(d["centres"], dtype=np.float64), method=d["method"],
                   size_min=d.get("size_min"), size_max=d.get("size_max"), input=d.get("input", "embedding"),
                   seed=int(d.get("seed", 1)),
                   inertia=float("nan") if d.get("inertia") is None else float(d["inertia"]),
                   extra={k: v for k, v in d.items() if k not in known})

    def save(self, folder: str | Path) -> None:
        """``clusters.json`` (everything, centres included) and ``clusters.csv`` (slide_id,cluster)."""
        folder = Path(folder)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["slide_id", "cluster"])
        for s, a in zip(self.slide_ids, self.assignments):
            w.writerow([s, int(a)])
        write_text_atomic(folder / "clusters.csv", buf.getvalue())
        write_json_atomic(folder / "clusters.json", self.to_json())


def fit_clusters(x: np.ndarray, slide_ids: Sequence[str], n_clusters: int, *, constrained: bool = True,
                 size_min: Optional[int] = None, size_max: Optional[int] = None, seed: int = 1,
                 input_name: str = "embedding") -> Clustering:
    """k-means (size-constrained when ``constrained``) on the rows of ``x``, one row per slide id.

    Library defaults otherwise (k-means++, n_init 10, max_iter 300), as the authors call it; plain k-means
    pins n_init=10, the default of the scikit-learn they pinned (1.3.2).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(slide_ids)
    if x.ndim != 2 or x.shape[0] != n:
        raise DnDError(f"{x.shape[0] if x.ndim else 0} representations for {n} slides")
    if n_clusters > n:
        raise DnDError(f"cannot make {n_clusters} clusters from {n} training slides")
    if not np.isfinite(x).all():
        raise DnDError("the base model's slide representations contain NaN or infinity; the base model diverged")
    if n_clusters == 1:
        return Clustering(list(slide_ids), np.zeros(n, dtype=np.int64), x.mean(axis=0, keepdims=True),
                          "single", input=input_name, seed=seed, inertia=float(((x - x.mean(0)) ** 2).sum()))
    if constrained:
        from k_means_constrained import KMeansConstrained
        km = KMeansConstrained(n_clusters=n_clusters, size_min=size_min, size_max=size_max, random_state=seed)
        labels = km.fit_predict(x)
        method = "constrained-kmeans"
    else:
        from sklearn.cluster import KMeans
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
        labels = km.fit_predict(x)
        method = "kmeans"
    labels = np.asarray(labels, dtype=np.int64)
    return Clustering(list(slide_ids), labels, np.asarray(km.cluster_centers_, dtype=np.float64), method,
                      size_min=size_min, size_max=size_max, input=input_name, seed=seed,
                      inertia=float(getattr(km, "inertia_", float("nan"))))


def legacy_random_partition(clustering: Clustering, seed: int = 1) -> Clustering:
    """The released code's effective behaviour: the same cluster sizes, filled with a random permutation.

    Their ``extract_logits`` walks a shuffled loader, so cluster label r lands on whichever slide sits at
    dataset position r — a uniformly random relabelling of the training slides with the sizes kept.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(clustering.slide_ids))
    new = np.empty_like(clustering.assignments)
    new[perm] = clustering.assignments
    return Clustering(list(clustering.slide_ids), new, clustering.centres, "legacy-random-partition",
                      clustering.size_min, clustering.size_max, clustering.input, clustering.seed,
                      clustering.inertia, {"clustered_assignments": [int(a) for a in clustering.assignments],
                                           "partition_seed": seed})


def assign_nearest(centres: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cluster of each new row: the nearest centre (Euclidean), with no size bound."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    centres = np.asarray(centres, dtype=np.float64)
    if x.shape[1] != centres.shape[1]:
        raise DnDError(f"representations have {x.shape[1]} values but the centres {centres.shape[1]}")
    d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return d.argmin(axis=1)


def cluster_label_counts(clustering: Clustering, ds: BagDataset) -> List[Dict[str, int]]:
    """Per cluster, how many slides of each class: a check a user reads before trusting the experts."""
    by_id = dict(zip(ds.slide_ids, ds.targets))
    out = []
    for c in range(clustering.n_clusters):
        counts = {name: 0 for name in ds.class_names}
        for s in clustering.members(c):
            counts[ds.class_names[by_id[s]]] += 1
        out.append(counts)
    return out


__all__ = ["Clustering", "assign_nearest", "cluster_label_counts", "fit_clusters", "legacy_random_partition",
           "slide_representations"]
