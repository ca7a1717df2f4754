"""A labelled set of feature bags: one item per slide, bags loaded on demand and kept while memory allows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .labels import LabelTable, LabelsError
from .store import BagError, bag_info, find_bags, load_bag

DEFAULT_CACHE_BYTES = int(os.environ.get("DND_BAG_CACHE_GB", "8")) * 2 ** 30


class BagDataset:
    """``ds[i]`` → ``(bag (N, D) float32, target int, slide_id)``.

    Bags are read when first asked for and cached up to ``cache_bytes`` (shared by datasets built with
    ``share_cache_with``), so epochs after the first do not touch the disk on ordinary cohorts.
    """

    def __init__(self, paths: Dict[str, Path], table: LabelTable, slide_ids: Optional[Sequence[str]] = None,
                 class_names: Optional[Sequence[str]] = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 share_cache_with: Optional["BagDataset"] = None):
        self.class_names = list(class_names) if class_names is not None else table.classes
        index = {c: i for i, c in enumerate(self.class_names)}
        label_of = dict(zip(table.slide_ids, table.labels))
        ids = list(slide_ids) if slide_ids is not None else list(table.slide_ids)
        missing = [s for s in ids if s not in paths]
        if missing:
            raise BagError(f"{len(missing)} slide(s) have no feature bag: {', '.join(missing[:5])}")
        unknown = sorted({label_of[s] for s in ids if label_of[s] not in index})
        if unknown:
            raise LabelsError(f"labels {unknown} are not among the classes {self.class_names}")
        self.slide_ids = ids
        self.paths = [paths[s] for s in ids]
        self.targets = [index[label_of[s]] for s in ids]
        if share_cache_with is not None:
            self._cache, self._budget = share_cache_with._cache, share_cache_with._budget
        else:
            self._cache: Dict[Path, torch.Tensor] = {}
            self._budget = [int(cache_bytes)]

    @classmethod
    def from_tensors(cls, bags: Dict[str, torch.Tensor], labels: Dict[str, str],
                     class_names: Optional[Sequence[str]] = None) -> "BagDataset":
        """Bags already in memory (benchmarks, tests, the GUI's single-slide predictions)."""
        ids = list(bags)
        table = LabelTable(ids, [str(labels[s]) for s in ids])
        paths = {s: Path(f"<memory>/{s}") for s in ids}
        ds = cls(paths, table, class_names=class_names, cache_bytes=0)
        for s, p in paths.items():
            x = bags[s]
            if x.dim() != 2 or x.shape[0] == 0:
                raise BagError(f"bag {s}: expected a non-empty (N, D) tensor, got shape {tuple(x.shape)}")
            ds._cache[p] = x.float()
        return ds

    @classmethod
    def from_folder(cls, features_dir, table: LabelTable, **kw) -> "BagDataset":
        return cls(find_bags(features_dir), table, **kw)

    def __len__(self) -> int:
        return len(self.slide_ids)

    def subset(self, slide_ids: Sequence[str]) -> "BagDataset":
        """A dataset over some of these slides sharing this one's cache and class list."""
        pos = {s: i for i, s in enumerate(self.slide_ids)}
        out = object.__new__(BagDataset)
        out.class_names = self.class_names
        out.slide_ids = list(slide_ids)
        out.paths = [self.paths[pos[s]] for s in slide_ids]
        out.targets = [self.targets[pos[s]] for s in slide_ids]
        out._cache, out._budget = self._cache, self._budget
        return out

    def bag(self, i: int) -> torch.Tensor:
        p = self.paths[i]
        x = self._cache.get(p)
        if x is None:
            x = load_bag(p)
            size = x.numel() * 4
            if size <= self._budget[0]:
                self._cache[p] = x
                self._budget[0] -= size
        return x

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int, str]:
        return self.bag(i), self.targets[i], self.slide_ids[i]

    def feature_dim(self) -> int:
        """The common feature dimension; a one-line error names the first bag that differs."""
        dims: Dict[int, Path] = {}
        for p in self.paths:
            d = (self._cache[p].shape[1] if p in self._cache else bag_info(p).dim)
            dims.setdefault(d, p)
            if len(dims) > 1:
                (d0, p0), (d1, p1) = list(dims.items())[:2]
                raise BagError(f"feature dimensions differ: {p0.name} has {d0}, {p1.name} has {d1}")
        if not dims:
            raise BagError("no bags")
        return next(iter(dims))

    def validate(self, progress=None, cancelled=None) -> int:
        """Load every bag once (caching what fits) so that empty, non-finite or mismatched bags are refused
        before anything is written; returns the common feature dimension."""
        from ..progress import check_cancelled
        dim, first = None, None
        for i, p in enumerate(self.paths):
            check_cancelled(cancelled)
            x = self.bag(i)
            if dim is None:
                dim, first = x.shape[1], p
            elif x.shape[1] != dim:
                raise BagError(f"feature dimensions differ: {first.name} has {dim}, {p.name} has {x.shape[1]}")
            if progress is not None:
                progress(i + 1, len(self.paths), f"checking bags: {self.slide_ids[i]}")
        if dim is None:
            raise BagError("no bags")
        return int(dim)

    def class_counts(self) -> List[int]:
        return [self.targets.count(c) for c in range(len(self.class_names))]
