"""Labels CSV (``slide_id,label[,split]``): read, check and map class names to indices.

Problems are collected, not raised one by one, so the GUI's preview can flag them all; ``LabelTable.check``
raises the first as a one-line :class:`LabelsError` for the CLI.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import DnDError

SPLIT_NAMES = ("train", "val", "test")
_ID_COLUMNS = ("slide_id", "slide", "id", "case_id")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "test": "test", "testing": "test"}


class LabelsError(DnDError):
    """A labels CSV that cannot be used as it is."""


@dataclass
class LabelTable:
    slide_ids: List[str]
    labels: List[str]
    splits: Optional[List[str]] = None          # one of SPLIT_NAMES per row, when the CSV has a split column
    path: Optional[Path] = None
    problems: List[str] = field(default_factory=list)  # found while reading (duplicates, empty cells, ...)

    def __len__(self) -> int:
        return len(self.slide_ids)

    @property
    def classes(self) -> List[str]:
        """Class names in index order: numeric labels sort numerically, others alphabetically."""
        names = set(self.labels)
        try:
            return sorted(names, key=lambda s: (float(s), s))
        except ValueError:
            return sorted(names)

    @property
    def class_to_index(self) -> Dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def targets(self) -> List[int]:
        m = self.class_to_index
        return [m[x] for x in self.labels]

    def counts(self) -> Dict[str, int]:
        c = Counter(self.labels)
        return {k: c[k] for k in self.classes}

    def find_problems(self, available: Optional[Sequence[str]] = None, folds: int = 0,
                      class_names: Optional[Sequence[str]] = None) -> List[str]:
        """Everything wrong with this table for training, as one-line messages (empty list: usable).

        ``available``: slide ids that have feature bags; ``folds``: the k of k-fold cross-validation.
        """
        out = list(self.problems)
        if not self.slide_ids:
            out.append("the labels CSV has no rows")
            return out
        counts = self.counts()
        if len(counts) < 2:
            out.append(f"only one class ({next(iter(counts))!r}): a classifier needs at least two")
        if class_names is not None:
            unknown = sorted(set(self.labels) - set(class_names))
            if unknown:
                out.append(f"labels not among the model's classes {list(class_names)}: {unknown[:5]}")
        if available is not None:
            have = set(available)
            missing = [s for s in self.slide_ids if s not in have]
            if missing:
                more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
                out.append(f"{len(missing)} slide(s) in the labels CSV have no feature bag: "
                           f"{', '.join(missing[:5])}{more}")
        if self.splits is None and folds:
            small = {c: n for c, n in counts.items() if n < folds}
            if small:
                c, n = next(iter(small.items()))
                out.append(f"class {c!r} has {n} slide(s); {folds}-fold cross-validation needs at least {folds} "
                           f"per class (use fewer folds)")
        if self.splits is not None:
            tr = Counter(lab for lab, s in zip(self.labels, self.splits) if s == "train")
            if not tr:
                out.append("the split column marks no slide as 'train'")
            elif len(tr) < 2:
                out.append("the training split holds only one class")
        return out

    def check(self, available: Optional[Sequence[str]] = None, folds: int = 0) -> "LabelTable":
        problems = self.find_problems(available, folds)
        if problems:
            where = f"{self.path}: " if self.path else ""
            raise LabelsError(where + problems[0] + (f" (and {len(problems) - 1} more problem(s))"
                                                     if len(problems) > 1 else ""))
        return self


def read_labels(path: str | os.PathLike) -> LabelTable:
    """Read ``slide_id,label[,split]`` (header required; extra columns ignored). Never raises on content:
    duplicates, empty cells and bad split names become ``problems``. Raises only when the file is unreadable
    or has no usable header."""
    p = Path(path)
    if not p.is_file():
        raise LabelsError(f"labels CSV not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"cannot read labels CSV {p}: {e}") from None
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise LabelsError(f"labels CSV {p} is empty")
    header = [h.strip().lower() for h in rows[0]]
    id_col = next((header.index(c) for c in _ID_COLUMNS if c in header), None)
    if id_col is None or "label" not in header:
        raise LabelsError(f"labels CSV {p} needs a header with 'slide_id' and 'label' columns; found {rows[0]}")
    lab_col = header.index("label")
    split_col = header.index("split") if "split" in header else None
    ids, labels, splits, problems = [], [], [], []
    seen: Dict[str, int] = {}
    for lineno, r in enumerate(rows[1:], start=2):
        cell = lambda i: r[i].strip() if i is not None and i < len(r) else ""  # noqa: E731
        sid, lab = cell(id_col), cell(lab_col)
        if not sid or not lab:
            problems.append(f"line {lineno}: empty slide_id or label")
            continue
        if sid in seen:
            problems.append(f"duplicate slide id {sid!r} (lines {seen[sid]} and {lineno})")
            continue
        seen[sid] = lineno
        if split_col is not None:
            raw = cell(split_col).lower()
            if raw not in _SPLIT_ALIASES:
                problems.append(f"line {lineno}: split {cell(split_col)!r} is not one of train, val, test")
                continue
            splits.append(_SPLIT_ALIASES[raw])
        ids.append(sid)
        labels.append(lab)
    return LabelTable(ids, labels, splits if split_col is not None else None, p, problems)
