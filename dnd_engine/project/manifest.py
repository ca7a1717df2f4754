"""A project folder: the slides it links to, its labels, features, runs and the model it classifies with.

The manifest (``project.json``) is small, human-readable JSON. Paths inside the project are stored relative to
it, so the folder can be moved or shared; slides and feature folders the user already had are linked by absolute
path and never copied. Labels are copied in (a few kilobytes), so a later edit of the user's CSV cannot silently
change what a finished run was trained on; where they came from is kept.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Dict, List, Optional

from ..atomic import atomic_path, ensure_dir, write_json_atomic
from ..bags.labels import LabelTable, read_labels
from ..errors import DnDError
from ..slides.find import find_slides
from ..slides.overrides import MagnificationOverride, OverrideTable
from ..slides.slide import is_slide_path, slide_id
from .data_check import DataReport, check_data
from .schema import (Field, Invalid, check_document, dataclass_fields, dict_of, list_of, number, optional, record,
                     split_record, text)

MANIFEST = "project.json"
FORMAT = 1
LABELS = "labels.csv"


class ProjectError(DnDError):
    pass


def _slide_path(value, where):
    """An absolute path to a file of a slide type: what :meth:`Project.set_slides` stores (never a folder)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(where, "a slide path", value)
    # absolute on either system: a project saved on Windows and opened on Linux lists its slides as missing
    absolute = PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()
    if not absolute or not is_slide_path(value):
        raise Invalid(where, "the absolute path of a slide file (.svs, .tif, .ndpi, \u2026)", value)
    return value


def _inside_project(value, where):
    """A relative path that stays inside the project (labels are copied in; "../x" or "/etc/x" is not ours)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(where, "a file name inside the project (e.g. 'labels.csv')", value)
    p = Path(value)
    if p.is_absolute() or ".." in p.parts:
        raise Invalid(where, "a file name inside the project (e.g. 'labels.csv')", value)
    return value


_PATH = text("a path", empty=False)


def _extraction_settings(value, where):
    """The extraction the project last ran, which the wizard starts from: each setting of its type (a newer app's
    unknown settings are kept; the wizard then starts from the defaults)."""
    from .plans import ExtractionPlan   # plans imports this module
    return record(dataclass_fields(ExtractionPlan), "an object (the extraction's settings)")(value, where)


def _override_entry(value, where):
    known, extra = split_record(value, where, {
        "objective_power": Field(optional(number(what="a number (the objective power, e.g. 20)"))),
        "mpp": Field(optional(number(what="a number (the pixel size in \u00b5m/px, e.g. 0.5)"))),
        "name": Field(optional(text()))}, what="an object ({'objective_power' or 'mpp', 'name'})")
    return {**extra, **known}


#: project.json, field by field (unknown keys are kept as they are, and ignored)
MANIFEST_FIELDS = {
    "name": Field(text("a string (the project's name)")),
    "created": Field(text("a date (text)")),
    "slides": Field(list_of(_slide_path, "a list of slide paths")),
    "labels": Field(optional(_inside_project)),
    "labels_source": Field(optional(text("a path"))),
    "features": Field(optional(_PATH)),
    "extraction": Field(_extraction_settings),
    "runs": Field(list_of(_PATH, "a list of run folders")),
    "model": Field(optional(_PATH)),
    "slide_overrides": Field(dict_of(_override_entry, "an object (slide identity \u2192 its magnification)")),
}


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class Project:
    root: Path
    name: str
    created: str = field(default_factory=now_iso)
    slides: List[str] = field(default_factory=list)     # absolute paths, linked
    labels: Optional[str] = None                         # LABELS (a copy inside the project) or None
    labels_source: Optional[str] = None                  # the file the user picked
    features: Optional[str] = None                      # a folder of bags: relative (extracted here) or absolute
    extraction: Dict[str, object] = field(default_factory=dict)  # settings of the extraction that made them
    runs: List[str] = field(default_factory=list)        # relative run folders, oldest first
    model: Optional[str] = None                          # the model used for classification
    # objective power / pixel size users set for slides whose files lack them: slide identity → entry
    # (dnd_engine.slides.overrides.OverrideTable; keyed by content, not name, so moved slides keep theirs)
    slide_overrides: Dict[str, dict] = field(default_factory=dict)
    # keys of project.json this version does not know (a newer app's): kept on save, never used
    unknown_keys: Dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    # --- create / open / save ----------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, name: Optional[str] = None) -> "Project":
        root = Path(root).expanduser().resolve()
        if (root / MANIFEST).is_file():
            raise ProjectError(f"{root} is already a project; open it instead")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root} is a file, not a folder")
        ensure_dir(root)
        project = cls(root=root, name=name or root.name)
        project.save()
        return project

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Project":
        root = Path(root).expanduser().resolve()
        if root.name == MANIFEST:
            root = root.parent
        path = root / MANIFEST
        if not path.is_file():
            raise ProjectError(f"{root} is not a D&D Studio project (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{path}: unreadable project manifest ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProjectError(f"{path}: not a project manifest of format {FORMAT} "
                               f"(found {data.get('format') if isinstance(data, dict) else type(data).__name__})")
        checked = cls.check_manifest(data)
        checked.setdefault("name", root.name)   # a hand-written manifest may leave it out: the folder names it
        return cls(root=root, **checked)

    @staticmethod
    def check_manifest(data: dict) -> Dict[str, object]:
        """The constructor's keyword arguments from a manifest's JSON, every field checked (type, range, paths);
        a wrong one is a :class:`ProjectError` naming it. Unknown keys go to ``unknown_keys``."""
        known, extra = check_document(data, lambda value, where: split_record(value, where, MANIFEST_FIELDS),
                                      MANIFEST, ProjectError)
        ids: Dict[str, str] = {}
        for p in known.get("slides", []):
            sid = slide_id(p)
            if sid in ids:
                raise ProjectError(f"{MANIFEST}: 'slides' links two slides with the id {sid!r} "
                                   f"({ids[sid]} and {p}); their feature files would overwrite each other")
            ids[sid] = p
        for key in ("format", "app", "saved"):   # written by save() on every save: not carried over
            extra.pop(key, None)
        return {**known, "unknown_keys": extra}

    def save(self) -> None:
        known = asdict(self)
        known.pop("root")
        data = {**self.unknown_keys, "format": FORMAT, "app": "D&D Studio", "saved": now_iso(),
                **{k: v for k, v in known.items() if k != "unknown_keys"}}
        write_json_atomic(self.root / MANIFEST, data)

    # --- paths -------------------------------------------------------------------------------------------
    def resolve(self, path: Optional[str]) -> Optional[Path]:
        if path is None:
            return None
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def relative(self, path: str | os.PathLike) -> str:
        """Inside the project: relative (the folder stays movable); outside: absolute."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    @property
    def labels_path(self) -> Optional[Path]:
        return self.resolve(self.labels)

    @property
    def features_dir(self) -> Optional[Path]:
        return self.resolve(self.features)

    @property
    def model_path(self) -> Optional[Path]:
        return self.resolve(self.model)

    def run_dirs(self) -> List[Path]:
        return [self.resolve(r) for r in self.runs]

    # --- slides ------------------------------------------------------------------------------------------
    def set_slides(self, source: str | os.PathLike | List[str]) -> List[Path]:
        """Link a folder of slides or a list of files; ids must be unique (they name the feature files)."""
        if isinstance(source, (list, tuple)):
            paths = [Path(p).expanduser().resolve() for p in source]
            bad = [p.name for p in paths if not p.is_file() or not is_slide_path(p)]
            if bad:
                raise ProjectError(f"not slide files: {', '.join(bad[:5])}")
        else:
            paths = [p.resolve() for p in find_slides(Path(source).expanduser())]
        seen: Dict[str, Path] = {}
        for p in paths:
            sid = slide_id(p)
            if sid in seen:
                raise ProjectError(f"two slides share the id {sid!r}: {seen[sid]} and {p}")
            seen[sid] = p
        self.slides = [str(p) for p in paths]
        return paths

    def add_slides(self, source: str | os.PathLike | List[str]) -> List[Path]:
        """Link more slides (a folder's, or a list of files) to those already linked; returns the newly linked
        ones. A slide already linked is skipped; one whose id another linked slide has is refused (ids name the
        feature files), and then nothing is linked."""
        if isinstance(source, (list, tuple)):
            paths = [Path(p).expanduser().resolve() for p in source]
            bad = [p.name for p in paths if not p.is_file() or not is_slide_path(p)]
            if bad:
                raise ProjectError(f"not slide files: {', '.join(bad[:5])}")
        else:
            try:
                paths = [p.resolve() for p in find_slides(Path(source).expanduser())]
            except DnDError as exc:
                raise ProjectError(str(exc)) from None
        linked = {str(Path(p)) for p in self.slides}
        seen: Dict[str, Path] = {slide_id(p): Path(p) for p in self.slides}
        new: List[Path] = []
        for p in paths:
            if str(p) in linked or p in new:
                continue
            sid = slide_id(p)
            if sid in seen:
                raise ProjectError(f"two slides share the id {sid!r}: {seen[sid]} and {p}")
            seen[sid] = p
            new.append(p)
        self.slides = self.slides + [str(p) for p in new]
        return new

    def remove_slides(self, paths: List[str | os.PathLike]) -> List[str]:
        """Unlink slides (the files are left alone; their features and runs stay); returns those unlinked."""
        gone = {str(Path(p).expanduser().resolve()) for p in paths} | {str(p) for p in paths}
        removed = [p for p in self.slides if p in gone or str(Path(p).resolve()) in gone]
        self.slides = [p for p in self.slides if p not in removed]
        return removed

    def next_step(self) -> str:
        """What a user does next in this project: 'add slides' (none linked, no features), 'train' (no run
        finished yet) or 'classify' (a model is ready)."""
        if not self.slides and not self.features:
            return "add slides"
        if self.model is None and not self.runs:
            return "train"
        return "classify"

    def slide_paths(self) -> Dict[str, Path]:
        return {slide_id(p): Path(p) for p in self.slides}

    def missing_slides(self) -> List[str]:
        return [p for p in self.slides if not Path(p).is_file()]

    def slide_path(self, sid: str) -> Optional[Path]:
        return self.slide_paths().get(sid)

    def override_table(self) -> OverrideTable:
        """The users' magnification settings of this project's slides (edits go to ``slide_overrides``; call
        :meth:`save` after)."""
        return OverrideTable(self.slide_overrides)

    def slide_override(self, path: str | os.PathLike) -> Optional[MagnificationOverride]:
        return self.override_table().get(path)

    def set_slide_override(self, path: str | os.PathLike, override: Optional[MagnificationOverride]) -> None:
        """Set (None: forget) the objective power / pixel size of the slide at ``path``, and save."""
        self.override_table().set(path, override)
        self.save()

    def overrides_by_path(self) -> Dict[str, Dict[str, float]]:
        """{absolute path: override} for the linked slides that have one: what extraction takes."""
        return self.override_table().for_paths(self.slides) if self.slide_overrides else {}

    # --- labels and features -----------------------------------------------------------------------------
    def set_labels(self, csv_path: str | os.PathLike) -> LabelTable:
        """Copy the CSV in; a file that cannot be read is refused and the project's labels stay as they were."""
        src = Path(csv_path).expanduser().resolve()
        table = read_labels(src)
        with atomic_path(self.root / LABELS) as tmp:
            shutil.copyfile(src, tmp)
        self.labels, self.labels_source = LABELS, str(src)
        return table

    def label_table(self) -> Optional[LabelTable]:
        return read_labels(self.labels_path) if self.labels_path is not None else None

    def set_features(self, folder: str | os.PathLike) -> Dict[str, Path]:
        """Use an existing folder of bags (ours, CLAM's or TRIDENT's); it must hold at least one bag."""
        from ..bags.store import find_bags  # torch and h5py: loaded only when features are linked
        bags = find_bags(Path(folder).expanduser().resolve())
        self.features = self.relative(Path(folder).expanduser())
        return bags

    def available_ids(self) -> List[str]:
        """Slide ids training can use: those with feature bags, else the linked slides (to be extracted)."""
        if self.features_dir is not None and self.features_dir.is_dir():
            from ..bags.store import find_bags  # torch and h5py: loaded only when features are looked at
            try:
                return sorted(find_bags(self.features_dir))
            except DnDError:
                pass
        return sorted(self.slide_paths())

    def data_report(self, folds: int = 0) -> DataReport:
        """:func:`check_data` on what the project holds: its feature bags when it has them, else its slides."""
        feats = self.features_dir
        if feats is not None and feats.is_dir():
            from ..bags.store import find_bags  # torch and h5py: loaded only when features are looked at
            try:
                find_bags(feats)
                return check_data(features=feats, labels_csv=self.labels_path, folds=folds)
            except DnDError:
                pass
        return check_data(slides=list(self.slides), labels_csv=self.labels_path, folds=folds)

    def label_problems(self, folds: int = 0) -> List[str]:
        if self.labels_path is None:
            return ["no labels CSV chosen"]
        return self.data_report(folds).problems()

    def apply_data(self, *, labels: str | os.PathLike, slides: Optional[str | os.PathLike | List[str]] = None,
                   features: Optional[str | os.PathLike] = None) -> LabelTable:
        """Link ``slides`` (a folder or files; the features to come are extracted from them) or use the bags in
        ``features``, copy ``labels`` in, and save: all or nothing. On any failure the manifest's fields, the
        project's labels file and ``project.json`` are as they were, and the error is raised."""
        if (slides is None) == (features is None):
            raise ProjectError("give either a slides folder or a feature folder")
        saved = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "root"}
        labels_file = self.root / LABELS
        old_labels = labels_file.read_bytes() if labels_file.is_file() else None
        try:
            if features is not None:
                self.set_features(features)
            else:
                self.set_slides(slides)
                self.features, self.extraction = None, {}    # the extraction to come makes the features
            table = self.set_labels(labels)
            self.save()
            return table
        except BaseException:
            for k, v in saved.items():
                setattr(self, k, v)
            self._restore_labels(labels_file, old_labels)
            raise

    def preview_data(self, *, labels: str | os.PathLike, slides: Optional[List[str | os.PathLike]] = None,
                     features: Optional[str | os.PathLike] = None) -> "Project":
        """An in-memory copy with the data of :meth:`apply_data` in place, for estimates before anything is
        applied: never saved, nothing copied or linked (``slides`` is the list of slide files)."""
        p = copy.copy(self)
        p.labels = str(Path(labels).expanduser().resolve())
        if features is not None:
            p.features, p.slides = str(Path(features).expanduser().resolve()), []
        else:
            p.features, p.slides = None, [str(s) for s in (slides or [])]
        return p

    @staticmethod
    def _restore_labels(labels_file: Path, old: Optional[bytes]) -> None:
        try:
            if old is None:
                labels_file.unlink(missing_ok=True)
            elif not labels_file.is_file() or labels_file.read_bytes() != old:
                with atomic_path(labels_file) as tmp:
                    tmp.write_bytes(old)
        except OSError:
            pass    # the original error is the one to report

    # --- runs and the model ------------------------------------------------------------------------------
    def runs_root(self) -> Path:
        return self.root / "runs"

    def add_run(self, folder: str | os.PathLike) -> None:
        rel = self.relative(folder)
        if rel not in self.runs:
            self.runs.append(rel)

    def set_model(self, path: Optional[str | os.PathLike]) -> None:
        if path is not None and not Path(path).is_file():
            raise ProjectError(f"{path}: no such model file")
        self.model = None if path is None else self.relative(path)


__all__ = ["FORMAT", "LABELS", "MANIFEST", "Project", "ProjectError", "now_iso"]
