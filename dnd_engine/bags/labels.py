"""Labels CSV (``slide_id,label[,split]``): read, check and map class names to indices.

Problems are collected, not raised one by one, so the GUI's preview can flag them all; ``LabelTable.check``
raises the first as a one-line :class:`LabelsError` for the CLI. :func:`read_label_rows` is the one parser: it
keeps every row with its problem (what a preview shows), and :func:`read_labels` keeps the usable ones.
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
ID_COLUMNS = ("slide_id", "slide", "id", "case_id")       # accepted names of the slide id column, first wins
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
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


@dataclass
class LabelRow:
    """One non-blank data line of a labels CSV as written, with why it cannot be used (``problem``) or None."""
    line: int
    slide_id: str
    label: str
    split: str = ""                       # as written in the CSV ("" without a split column)
    problem: Optional[str] = None         # one-line message, as ``LabelTable.problems`` words it
    status: str = "ok"                    # the same, short, for a table cell

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class LabelRows:
    """Every row of a labels CSV: what :func:`read_labels` keeps and what it leaves out, and why."""
    path: Path
    rows: List[LabelRow]
    has_split: bool

    def table(self) -> LabelTable:
        good = [r for r in self.rows if r.ok]
        splits = [SPLIT_ALIASES[r.split.lower()] for r in good] if self.has_split else None
        return LabelTable([r.slide_id for r in good], [r.label for r in good], splits, self.path,
                          [r.problem for r in self.rows if r.problem])


def read_label_rows(path: str | os.PathLike) -> LabelRows:
    """Read ``slide_id,label[,split]`` (header required; id column also ``slide``, ``id`` or ``case_id``; split
    names in :data:`SPLIT_ALIASES`; extra columns ignored), keeping every row with its problem. Raises
    :class:`LabelsError` only when the file is unreadable or has no usable header."""
    p = Path(path)
    if not p.is_file():
        raise LabelsError(f"labels CSV not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"cannot read labels CSV {p}: {e}") from None
    rows = [(i, r) for i, r in enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in r)]
    if not rows:
        raise LabelsError(f"labels CSV {p} is empty")
    header = [h.strip().lower() for h in rows[0][1]]
    id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
    if id_col is None or "label" not in header:
        raise LabelsError(f"labels CSV {p} needs a header with 'slide_id' and 'label' columns; found {rows[0][1]}")
    lab_col = header.index("label")
    split_col = header.index("split") if "split" in header else None
    out: List[LabelRow] = []
    seen: Dict[str, int] = {}
    for lineno, r in rows[1:]:
        cell = lambda i: r[i].strip() if i is not None and i < len(r) else ""  # noqa: E731
        row = LabelRow(lineno, cell(id_col), cell(lab_col), cell(split_col))
        if not row.slide_id or not row.label:
            row.problem, row.status = f"line {lineno}: empty slide_id or label", "empty slide_id or label"
        elif row.slide_id in seen:
            first = seen[row.slide_id]
            row.problem = f"duplicate slide id {row.slide_id!r} (lines {first} and {lineno})"
            row.status = f"duplicate (of line {first})"
        else:
            seen[row.slide_id] = lineno
            if split_col is not None and row.split.lower() not in SPLIT_ALIASES:
                row.problem = f"line {lineno}: split {row.split!r} is not one of train, val, test"
                row.status = "split not train/val/test"
        out.append(row)
    return LabelRows(p, out, split_col is not None)


def read_labels(path: str | os.PathLike) -> LabelTable:
    """Read ``slide_id,label[,split]`` (header required; extra columns ignored). Never raises on content:
    duplicates, empty cells and bad split names become ``problems``. Raises only when the file is unreadable
    or has no usable header."""
    return read_label_rows(path).table()
