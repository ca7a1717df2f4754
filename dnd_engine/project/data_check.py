"""Is this data trainable? One check of slides (or feature bags) against a labels CSV, for every caller.

The wizard's preview, ``dnd train`` and the project ask the same question; answering it in one place means they
cannot disagree (a GUI that accepted a CSV the engine refuses, or flagged a row the engine reads). The answer is a
:class:`DataReport`: every CSV row with its status, the blocking errors, the notes worth knowing, and the counts,
so a caller only shows or raises it. Cheap by design (reads the CSV, lists a folder; opens no slide), so a GUI may
run it on every edit.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..bags.labels import LabelRow, LabelsError, LabelTable, read_label_rows
from ..errors import DnDError
from ..slides.find import find_slides
from ..slides.slide import slide_id

PathLike = Union[str, os.PathLike]


@dataclass
class DataReport:
    """What :func:`check_data` found. ``errors`` block training whatever the folds; :meth:`fold_problems` are
    the ones a different number of folds would fix; ``notes`` do not block."""

    kind: str                                          # "slide" (slides to extract) or "bag" (features exist)
    rows: List[LabelRow] = field(default_factory=list)  # every CSV row, with its status ("ok", "no bag", …)
    table: Optional[LabelTable] = None                 # the usable rows (None: no CSV, or it cannot be read)
    available: Optional[List[str]] = None              # ids with a slide / a bag (None: no folder to list)
    slide_files: List[Path] = field(default_factory=list)   # the slides found (slides mode), resolved
    folder_errors: List[str] = field(default_factory=list)  # the slides / feature folder cannot be used
    label_errors: List[str] = field(default_factory=list)   # the labels CSV cannot be read or used
    notes: List[str] = field(default_factory=list)
    duplicates: List[str] = field(default_factory=list)     # ids two slide files share, or the CSV repeats
    unlabelled: List[str] = field(default_factory=list)     # in the folder, not in the CSV (left out)
    missing: List[str] = field(default_factory=list)        # in the CSV, without a slide / bag
    folds: int = 0

    @property
    def errors(self) -> List[str]:
        """Everything that blocks training whatever the folds: the folder's problems, then the labels'."""
        return self.folder_errors + self.label_errors

    @property
    def ok(self) -> bool:
        return not self.problems()

    def counts(self) -> Dict[str, int]:
        """Usable slides per class, in class-index order."""
        return self.table.counts() if self.table is not None else {}

    def split_counts(self) -> Dict[str, Dict[str, int]]:
        """Slides per split and class, when the CSV has a split column (else empty)."""
        if self.table is None or self.table.splits is None:
            return {}
        out: Dict[str, Dict[str, int]] = {}
        for lab, s in zip(self.table.labels, self.table.splits):
            out.setdefault(s, Counter())[lab] += 1
        return {s: dict(c) for s, c in out.items()}

    def small_classes(self, folds: Optional[int] = None) -> List[str]:
        """Classes with fewer slides than ``folds``-fold cross-validation needs (none with a split column)."""
        k = self.folds if folds is None else folds
        if self.table is None or self.table.splits is not None or not k:
            return []
        return [c for c, n in self.counts().items() if n < k]

    def fold_problems(self, folds: Optional[int] = None) -> List[str]:
        """Problems that only the number of folds causes (fixable where the folds are set)."""
        if self.table is None:
            return []
        k = self.folds if folds is None else folds
        base = set(self.table.find_problems(self.available, 0))
        return [p for p in self.table.find_problems(self.available, k) if p not in base]

    def problems(self, folds: Optional[int] = None) -> List[str]:
        return self.errors + self.fold_problems(folds)

    def raise_for_problems(self, folds: Optional[int] = None) -> "DataReport":
        """The first problem as a one-line :class:`LabelsError` (as ``LabelTable.check`` words it), or self."""
        problems = self.problems(folds)
        if problems:
            first = problems[0]
            if self.table is not None and self.table.path and first not in self.folder_errors:
                first = f"{self.table.path}: {first}"     # a problem of the CSV's content names the CSV
            raise LabelsError(first + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
        return self


def _more(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (" …" if len(items) > n else "")


def check_data(*, slides: Optional[Union[PathLike, Sequence[PathLike]]] = None, features: Optional[PathLike] = None,
               labels_csv: Optional[PathLike] = None, folds: int = 0, kind: Optional[str] = None) -> DataReport:
    """Check a slides folder (or list of slide files) or a feature folder against a labels CSV.

    Give ``slides`` or ``features`` (neither: the report says to choose one). ``folds``: the k of k-fold
    cross-validation the data is meant for (0: not checked). ``kind`` ("slide" or "bag") words the message
    when neither folder is chosen yet. Never raises on bad input: every problem is a one-line message.
    """
    kind = "bag" if features is not None or (slides is None and kind == "bag") else "slide"
    report = DataReport(kind=kind, folds=folds)
    if features is not None:
        try:
            from ..bags.store import find_bags   # torch and h5py: loaded only when bags are looked at
            report.available = sorted(find_bags(Path(features).expanduser()))
        except DnDError as exc:
            report.folder_errors.append(str(exc))
    elif slides is not None:
        _list_slides(report, slides)
    else:
        report.folder_errors.append("choose a feature folder" if kind == "bag" else "choose a slides folder")

    if labels_csv is None:
        report.label_errors.append("choose a labels CSV")
        return report
    try:
        rows = read_label_rows(Path(labels_csv).expanduser())
    except DnDError as exc:
        report.label_errors.append(str(exc))
        return report
    report.table = rows.table()
    report.rows = rows.rows
    report.duplicates += sorted({r.slide_id for r in rows.rows if r.status.startswith("duplicate")})
    report.label_errors += report.table.find_problems(report.available, 0)
    if report.available is not None:
        have = set(report.available)
        for r in report.rows:
            if r.ok and r.slide_id not in have:
                r.status = f"no {kind}"
        report.missing = [s for s in report.table.slide_ids if s not in have]
        report.unlabelled = sorted(have - set(report.table.slide_ids))
        if report.unlabelled:
            report.notes.append(f"{len(report.unlabelled)} {kind}(s) in the folder have no label and are left "
                                f"out: {_more(report.unlabelled)}")
    return report


def _list_slides(report: DataReport, slides: Union[PathLike, Sequence[PathLike]]) -> None:
    """Fill ``slide_files`` and ``available``; two files with one id is an error (they name the feature files)."""
    try:
        if isinstance(slides, (list, tuple)):
            files = [Path(p).expanduser().resolve() for p in slides]
        else:
            source = Path(slides).expanduser()
            files = [p.resolve() for p in find_slides(source)]
            if source.is_file():
                raise DnDError(f"{source} is a file: choose the folder that holds the slides")
    except DnDError as exc:
        report.folder_errors.append(str(exc))
        return
    ids: Dict[str, Path] = {}
    for p in files:
        sid = slide_id(p)
        if sid in ids:
            report.folder_errors.append(f"two slides share the id {sid!r}: {ids[sid].name} and {p.name}")
            report.duplicates.append(sid)
        ids[sid] = p
    report.slide_files = files
    if files:
        report.available = sorted(ids)


__all__ = ["DataReport", "check_data"]
