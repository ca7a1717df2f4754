"""The training wizard: data → preprocessing → model → review, then launch.

Nothing touches the project until Launch: the pages work on the user's choices (a CSV read, a folder listed),
and the review's estimate runs on an in-memory copy of the project. Launch applies the data choices (linking
slides or a feature folder, copying the labels in, saving the manifest) and undoes them if any step fails, so a
failed launch leaves the project as it was. The plans go out through ``launch_requested``; the window that
owns the job queue decides how to run them.
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import html
from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPushButton, QRadioButton, QSizePolicy, QSpinBox, QTableWidget, QTableWidgetItem,
                               QTextBrowser, QVBoxLayout, QWidget, QWizard, QWizardPage)

from dnd_engine.bags import find_bags, read_labels
from dnd_engine.bags.labels import _ID_COLUMNS, _SPLIT_ALIASES, LabelTable
from dnd_engine.dnd.presets import PRESETS, describe_preset, preset_config
from dnd_engine.errors import DnDError
from dnd_engine.features.extract import find_slides
from dnd_engine.features.registry import get_spec, list_extractors
from dnd_engine.features.weights import locate_weights
from dnd_engine.models import model_names
from dnd_engine.project import (ExtractionPlan, Project, TrainingPlan, WorkEstimate, check_weights,
                                estimate_work, plan_warnings)
from dnd_engine.project.manifest import LABELS
from dnd_engine.slides.slide import slide_id

from .background import lower_this_thread

PAGE_DATA, PAGE_PREPROCESS, PAGE_MODEL, PAGE_REVIEW = range(4)
DEFAULT_FOLDS = TrainingPlan().folds
PREVIEW_MAX_ROWS = 5000          # a QTableWidget stays responsive well past this; beyond, the CSV is the place
REFRESH_DELAY_MS = 250           # typing a path re-reads the folder once the user pauses, not per keystroke

# readable on both themes' backgrounds
RED, AMBER, GREEN = "#e0524c", "#d08a00", "#3fa34d"
_PROBLEM_ROW = QColor(224, 82, 76, 60)

PRESET_LABELS = {"paper": "Paper", "authors-code": "Authors' code"}
MODEL_INFO = {
    "mean": ("Mean pooling", "an MLP scores every patch and the scores are averaged; the fastest, a baseline"),
    "max": ("Max pooling", "an MLP scores every patch and the highest score decides; fast, a baseline"),
    "abmil": ("ABMIL", "attention pooling (Ilse et al.): learns which patches matter; fast, a good first choice"),
    "transmil": ("TransMIL", "a Nyström-attention transformer over the patches (reads them in grid order); "
                             "slower to train, about 4× ABMIL's parameters"),
    "s4mil": ("S4MIL", "a state-space (S4D) layer over the patch sequence, then max pooling; moderate speed"),
    "mambamil": ("MambaMIL", "two Mamba (selective state-space) layers and attention pooling; the slowest here: "
                             "its scan runs in plain PyTorch"),
}


def default_run_name(now: Optional[_dt.datetime] = None) -> str:
    return (now or _dt.datetime.now()).strftime("run-%Y%m%d-%H%M")


def located_weights(extractor: str) -> Optional[Path]:
    """The weights file the engine would use without being told one, or None (a glob, never a load)."""
    spec = get_spec(extractor)
    if not spec.needs_weights:
        return None
    try:
        return locate_weights(extractor, None, spec.weight_candidates(), spec.weight_suggestion(), spec.how_to_get)
    except DnDError:
        return None


def default_extractor() -> str:
    return "resnet50_trunc" if located_weights("resnet50_trunc") is not None else "stain_stats"


def _tip(widget: QWidget, text: str) -> QWidget:
    widget.setToolTip(text)
    return widget


def _row(form: QFormLayout, label: str, field: QWidget, tip: str) -> QLabel:
    """A form row whose label carries the field's tooltip too: users hover the words, not the box."""
    lab = QLabel(label)
    lab.setToolTip(tip)
    field.setToolTip(tip)
    lab.setBuddy(field)
    form.addRow(lab, field)
    return lab


def _note(colour: Optional[str] = None) -> QLabel:
    lab = QLabel()
    lab.setWordWrap(True)
    lab.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    lab.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)   # wrap at the page's width
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if colour:
        lab.setStyleSheet(f"color: {colour};")
    return lab


def _bullets(lines: List[str], limit: int = 10) -> str:
    shown = lines[:limit] + ([f"… and {len(lines) - limit} more"] if len(lines) > limit else [])
    return "\n".join(f"• {s}" for s in shown)


class PathEdit(QWidget):
    """A path field with a Browse button; ``kind`` is 'dir' or a file-dialog filter."""

    changed = Signal(str)

    def __init__(self, kind: str, caption: str, placeholder: str, start_dir: str = ""):
        super().__init__()
        self.kind, self.caption, self.start_dir = kind, caption, start_dir
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setClearButtonEnabled(True)
        self.button = QPushButton("Browse…")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.button)
        self.button.clicked.connect(self.browse)
        self.edit.textChanged.connect(self.changed)

    def setToolTip(self, text: str) -> None:  # noqa: N802 (Qt naming)
        super().setToolTip(text)
        self.edit.setToolTip(text)
        self.button.setToolTip(text)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802
        self.edit.setText(text)

    def path(self) -> Optional[Path]:
        return Path(self.text()).expanduser() if self.text() else None

    def browse(self) -> None:
        here = self.text() or self.start_dir
        start = str(Path(here).parent) if here and Path(here).is_file() else here
        if self.kind == "dir":
            chosen = QFileDialog.getExistingDirectory(self, self.caption, start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, self.caption, start, self.kind)
        if chosen:
            self.edit.setText(chosen)


# --- (a) data ----------------------------------------------------------------------------------------------
class DataPage(QWizardPage):
    """Where the slides (or their features) are and what each one is; the preview flags every problem."""

    MODE_SLIDES, MODE_FEATURES = "slides", "features"

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.setTitle("Data")
        self.setSubTitle("Choose the slides (or features you already extracted) and a labels CSV "
                         "(slide_id,label[,split]).")
        self.table: Optional[LabelTable] = None
        self.available: Optional[List[str]] = None      # ids with a slide (slides mode) or a bag (features mode)
        self.slide_files: List[Path] = []
        self.errors: List[str] = []                     # blocking, independent of the folds
        self.notes: List[str] = []
        self._stale = True

        self.slides_radio = _tip(QRadioButton("Slides folder (extract features)"),
                                 "Slide files (.svs, .tif, .ndpi, .mrxs, …) in one folder; features are extracted "
                                 "into the project. Slides are linked, never copied.")
        self.features_radio = _tip(QRadioButton("Existing feature folder (ours, CLAM or TRIDENT .h5/.pt)"),
                                   "Bags you already have: a folder of <slide_id>.h5 / .pt files, CLAM's output "
                                   "(h5_files/, pt_files/) or a TRIDENT features_<encoder>/ folder. Skips "
                                   "preprocessing.")
        self.mode_group = QButtonGroup(self)
        self.mode_group.addButton(self.slides_radio)
        self.mode_group.addButton(self.features_radio)
        start = str(project.root)
        self.slides_path = PathEdit("dir", "Slides folder", "a folder of slide files", start)
        self.slides_path.setToolTip("The folder that holds the slides; the slide id is the file name without "
                                    "its extension and must match the labels CSV's slide_id.")
        self.features_path = PathEdit("dir", "Feature folder", "a folder of .h5 / .pt feature bags", start)
        self.features_path.setToolTip("A folder of feature bags named <slide_id>.h5 or .pt (CLAM's and "
                                      "TRIDENT's layouts are found inside it). Linked, never copied.")
        self.labels_path = PathEdit("CSV files (*.csv);;All files (*)", "Labels CSV",
                                    "slide_id,label[,split]", start)
        self.labels_path.setToolTip("A CSV with a header: slide_id (or slide, id, case_id), label, and "
                                    "optionally split (train/val/test). It is copied into the project at "
                                    "launch.")

        grid = QGridLayout()
        grid.addWidget(self.slides_radio, 0, 0)
        grid.addWidget(self.slides_path, 0, 1)
        grid.addWidget(self.features_radio, 1, 0)
        grid.addWidget(self.features_path, 1, 1)
        labels_label = _tip(QLabel("Labels CSV"), self.labels_path.toolTip())
        grid.addWidget(labels_label, 2, 0)
        grid.addWidget(self.labels_path, 2, 1)
        grid.setColumnStretch(1, 1)

        self.preview = QTableWidget(0, 0)
        self.preview.setToolTip("The labels CSV as read: rows with a problem are highlighted and listed first")
        self.preview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.preview.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.preview.verticalHeader().setVisible(False)
        self.preview.setAlternatingRowColors(True)
        self.summary_label = _note()
        self.summary_label.setToolTip("What was found: labelled slides, slides or bags in the folder")
        self.balance_label = _note()
        self.balance_label.setToolTip("Slides per class; D&D's cross-validation needs every class in every fold")
        self.problems_label = _note(RED)
        self.problems_label.setToolTip("What must be fixed before training can start")
        self.notes_label = _note(AMBER)
        self.notes_label.setToolTip("Worth knowing, but training can start")
        side = QVBoxLayout()
        for w in (self.summary_label, self.balance_label, self.problems_label, self.notes_label):
            side.addWidget(w)
        side.addStretch(1)
        side_box = QWidget()
        side_box.setLayout(side)
        body = QHBoxLayout()
        body.addWidget(self.preview, 3)
        body.addWidget(side_box, 2)

        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addLayout(body, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        for w in (self.slides_path, self.features_path, self.labels_path):
            w.changed.connect(self._schedule)
        self.mode_group.buttonToggled.connect(lambda *_: self._mode_changed())
        self._prefill()

    def _prefill(self) -> None:
        p = self.project
        if p.features is not None:
            self.features_path.setText(str(p.features_dir))
            self.features_radio.setChecked(True)
        else:
            self.slides_radio.setChecked(True)
        parents = {str(Path(s).parent) for s in p.slides}
        if len(parents) == 1:
            self.slides_path.setText(parents.pop())
        src = p.labels_source if p.labels_source and Path(p.labels_source).is_file() else None
        if src is None and p.labels_path is not None and p.labels_path.is_file():
            src = str(p.labels_path)
        if src:
            self.labels_path.setText(src)
        self._mode_changed()

    # --- state ---------------------------------------------------------------------------------------------
    def mode(self) -> str:
        return self.MODE_FEATURES if self.features_radio.isChecked() else self.MODE_SLIDES

    def set_mode(self, mode: str) -> None:
        (self.features_radio if mode == self.MODE_FEATURES else self.slides_radio).setChecked(True)

    def source_path(self) -> Optional[Path]:
        return (self.features_path if self.mode() == self.MODE_FEATURES else self.slides_path).path()

    def _mode_changed(self) -> None:
        features = self.mode() == self.MODE_FEATURES
        self.features_path.setEnabled(features)
        self.slides_path.setEnabled(not features)
        self._schedule()

    def _schedule(self) -> None:
        self._stale = True
        self.completeChanged.emit()
        self._timer.start()

    def folds(self) -> int:
        wiz = self.wizard()
        return wiz.model_page.folds_spin.value() if isinstance(wiz, TrainingWizard) else DEFAULT_FOLDS

    def fold_problems(self, folds: int) -> List[str]:
        """Problems that depend on the number of folds: fixable on the model page, so they block there."""
        if self.table is None:
            return []
        base = set(self.table.find_problems(self.available, 0))
        return [p for p in self.table.find_problems(self.available, folds) if p not in base]

    def refresh(self) -> None:
        """Re-read the CSV and list the folder (cheap), then redraw the preview."""
        self._timer.stop()
        self._stale = False
        self.errors, self.notes, self.table, self.available, self.slide_files = [], [], None, None, []
        kind = "bag" if self.mode() == self.MODE_FEATURES else "slide"
        source = self.source_path()
        if source is None:
            self.errors.append("choose a feature folder" if kind == "bag" else "choose a slides folder")
        elif kind == "bag":
            try:
                self.available = sorted(find_bags(source))
            except DnDError as exc:
                self.errors.append(str(exc))
        else:
            try:
                self.slide_files = [p.resolve() for p in find_slides(source)]
                if source.is_file():
                    raise DnDError(f"{source} is a file: choose the folder that holds the slides")
            except DnDError as exc:
                self.errors.append(str(exc))
                self.slide_files = []
            ids: Dict[str, Path] = {}
            for p in self.slide_files:
                sid = slide_id(p)
                if sid in ids:
                    self.errors.append(f"two slides share the id {sid!r}: {ids[sid].name} and {p.name}")
                ids[sid] = p
            if self.slide_files:
                self.available = sorted(ids)
        csv_path = self.labels_path.path()
        if csv_path is None:
            self.errors.append("choose a labels CSV")
        else:
            try:
                self.table = read_labels(csv_path)
            except DnDError as exc:
                self.errors.append(str(exc))
        if self.table is not None:
            self.errors += self.table.find_problems(self.available, 0)
            if self.available is not None:
                unlabelled = sorted(set(self.available) - set(self.table.slide_ids))
                if unlabelled:
                    self.notes.append(f"{len(unlabelled)} {kind}(s) in the folder have no label and are left "
                                      f"out: {', '.join(unlabelled[:5])}{' …' if len(unlabelled) > 5 else ''}")
        self._show(kind)
        self.completeChanged.emit()

    def _show(self, kind: str) -> None:
        folds = self.folds()
        fold_problems = self.fold_problems(folds)
        rows = _preview_rows(self.labels_path.path(), self.available, kind) if self.table is not None else []
        has_split = self.table is not None and self.table.splits is not None
        cols = ["line", "slide_id", "label"] + (["split"] if has_split else []) + ["status"]
        self.preview.clear()
        self.preview.setColumnCount(len(cols))
        self.preview.setHorizontalHeaderLabels(cols)
        shown = rows[:PREVIEW_MAX_ROWS]
        self.preview.setRowCount(len(shown))
        for r, row in enumerate(shown):
            values = [str(row["line"]), row["slide_id"], row["label"]] + ([row["split"]] if has_split else []) \
                + [row["status"]]
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                if row["status"] != "ok":
                    item.setBackground(_PROBLEM_ROW)
                    item.setToolTip(row["status"])
                self.preview.setItem(r, c, item)
        head = self.preview.horizontalHeader()
        for c in range(len(cols)):
            head.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(len(cols) - 1, QHeaderView.ResizeMode.Stretch)

        found = "" if self.available is None else f"{len(self.available)} {kind}s in the folder"
        if self.table is not None:
            bad = sum(1 for row in rows if row["status"] != "ok")
            self.summary_label.setText(f"{len(self.table)} labelled slides"
                                       + (f" · {found}" if found else "")
                                       + (f" · {bad} row(s) with problems" if bad else "")
                                       + (f" (showing the first {PREVIEW_MAX_ROWS})"
                                          if len(rows) > PREVIEW_MAX_ROWS else ""))
            counts = self.table.counts()
            parts = []
            for c, n in counts.items():
                text = f"{html.escape(c)} {n}"
                small = self.table.splits is None and n < folds
                parts.append(f"<span style='color:{RED}'>{text}</span>" if small else text)
            self.balance_label.setText("<b>Class balance:</b> " + (" · ".join(parts) if parts else "none"))
        else:
            self.summary_label.setText(found)
            self.balance_label.setText("")
        problems = self.errors + [f"{p} — set the folds on the Model page" for p in fold_problems]
        self.problems_label.setText(_bullets(problems))
        self.problems_label.setVisible(bool(problems))
        self.notes_label.setText(_bullets(self.notes))
        self.notes_label.setVisible(bool(self.notes))

    def problems(self) -> List[str]:
        """Everything that blocks this page (fold-count problems block the model page, where folds are set)."""
        if self._stale:
            self.refresh()
        return list(self.errors)

    def initializePage(self) -> None:  # noqa: N802
        self.refresh()

    def isComplete(self) -> bool:  # noqa: N802
        return not self._stale and not self.errors

    def validatePage(self) -> bool:  # noqa: N802
        if self._stale:
            self.refresh()
        return not self.errors

    def nextId(self) -> int:  # noqa: N802
        return PAGE_MODEL if self.mode() == self.MODE_FEATURES else PAGE_PREPROCESS


def _preview_rows(path: Optional[Path], available: Optional[List[str]], kind: str) -> List[Dict[str, object]]:
    """One row per CSV line with a status, read as ``read_labels`` reads it (same id columns and split names),
    because the LabelTable keeps only the usable rows and the preview must show the others too."""
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    rows = [(i, r) for i, r in enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in r)]
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0][1]]
    id_col = next((header.index(c) for c in _ID_COLUMNS if c in header), None)
    if id_col is None or "label" not in header:
        return []
    lab_col = header.index("label")
    split_col = header.index("split") if "split" in header else None
    have = set(available) if available is not None else None
    seen: Dict[str, int] = {}
    out = []
    for lineno, r in rows[1:]:
        def cell(i):
            return r[i].strip() if i is not None and i < len(r) else ""
        sid, lab, split = cell(id_col), cell(lab_col), cell(split_col)
        if not sid or not lab:
            status = "empty slide_id or label"
        elif sid in seen:
            status = f"duplicate (of line {seen[sid]})"
        elif split_col is not None and split.lower() not in _SPLIT_ALIASES:
            status = "split not train/val/test"
        elif have is not None and sid not in have:
            status = f"no {kind}"
        else:
            status = "ok"
        if sid and sid not in seen:
            seen[sid] = lineno
        out.append({"line": lineno, "slide_id": sid, "label": lab, "split": split, "status": status})
    return sorted(out, key=lambda row: row["status"] == "ok")   # stable: problems first, then file order


# --- (b) preprocessing -------------------------------------------------------------------------------------
class _CheckSignals(QObject):
    done = Signal(int, bool, str)


def _check_in_background(signals: _CheckSignals, token: int, extractor: str, weights: Optional[str]) -> None:
    """Build the extractor on a pool thread: UNI is a 1.2 GB ViT-L, seconds of work the UI must not feel.

    ``signals`` belongs to the page (GUI thread); if the wizard was closed meanwhile, emitting fails and the
    answer is simply dropped."""
    def work() -> None:
        lower_this_thread()
        try:
            ok, message = True, check_weights(extractor, weights)
        except Exception as exc:   # any failure is the answer to "does it load?", never a crash
            ok, message = False, (str(exc) or type(exc).__name__)
        try:
            signals.done.emit(token, ok, message)
        except RuntimeError:
            pass
    QThreadPool.globalInstance().start(work)


class PreprocessPage(QWizardPage):
    """How patches are cut and turned into features; skipped when the features already exist."""

    weights_checked = Signal(bool, str)

    def __init__(self, project: Project):
        super().__init__()
        self.setTitle("Preprocessing")
        self.setSubTitle("How each slide is cut into patches and which encoder turns a patch into a feature "
                         "vector.")
        base = ExtractionPlan()
        try:
            base = ExtractionPlan.from_dict(project.extraction) if project.extraction else base
        except DnDError:
            pass
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)

        self.magnification_spin = QDoubleSpinBox()
        self.magnification_spin.setRange(0.5, 80.0)
        self.magnification_spin.setDecimals(2)
        self.magnification_spin.setSingleStep(5.0)
        self.magnification_spin.setSuffix(" ×")
        self.magnification_spin.setValue(base.magnification)
        _row(form, "Magnification", self.magnification_spin,
             f"Objective magnification the patches are cut at (default {base.magnification:g}×). Slides scanned "
             "at a higher power are read from a coarser level or downsampled. 20× is CLAM's usual setting; 10× "
             "gives 4× fewer patches and trains faster.")
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(16, 4096)
        self.patch_spin.setSingleStep(32)
        self.patch_spin.setSuffix(" px")
        self.patch_spin.setValue(base.patch_size)
        _row(form, "Patch size", self.patch_spin,
             f"Side of a square patch in pixels at the chosen magnification (default {base.patch_size}). The "
             "encoder resizes it to its own input (224 px for ResNet-50 and UNI).")
        self.tissue_spin = QDoubleSpinBox()
        self.tissue_spin.setRange(0.0, 1.0)
        self.tissue_spin.setSingleStep(0.05)
        self.tissue_spin.setValue(base.min_tissue)
        _row(form, "Minimum tissue", self.tissue_spin,
             f"Keep a patch when at least this fraction of it is tissue (default {base.min_tissue:g}); "
             "background glass is never a feature.")

        self.extractor_combo = QComboBox()
        for name in list_extractors():
            spec = get_spec(name)
            self.extractor_combo.addItem(name, name)
            self.extractor_combo.setItemData(self.extractor_combo.count() - 1,
                                             f"{spec.description} ({spec.dim}-d)", Qt.ItemDataRole.ToolTipRole)
        initial = base.extractor if project.extraction else default_extractor()
        self.extractor_combo.setCurrentIndex(max(0, self.extractor_combo.findData(initial)))
        _row(form, "Extractor", self.extractor_combo,
             "The patch encoder. stain_stats needs no weights (a quick, offline choice); resnet50_trunc is "
             "CLAM's ImageNet ResNet-50 and uni_v1 the UNI pathology foundation model; both need their weights "
             "file on this machine (nothing is downloaded).")
        # explicit short lines, unwrapped (a wrapped label in a form reserves gaps); one long line was cut off
        self.extractor_info = QLabel()
        self.extractor_info.setToolTip("What the chosen extractor is")
        form.addRow("", self.extractor_info)

        self.weights_path = PathEdit("Weights (*.pth *.pt *.bin *.safetensors);;All files (*)", "Weights file",
                                     "", str(project.root))
        if base.weights:
            self.weights_path.setText(base.weights)
        _row(form, "Weights file", self.weights_path,
             "The encoder's weights. Empty: the file the engine finds in its usual places (shown greyed). "
             "Check builds the encoder with it, off the UI thread, and says whether it loads.")
        self.check_button = _tip(QPushButton("Check weights"),
                                 "Build the encoder with these weights (on the CPU, in the background) and report "
                                 "whether they load")
        self.weights_status = _note()
        self.weights_status.setToolTip("The result of the last weights check")
        self.weights_status.setContentsMargins(0, 4, 0, 0)   # first line level with the button's text
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_button, 0, Qt.AlignmentFlag.AlignTop)
        check_row.addWidget(self.weights_status, 1)
        form.addRow("", self._wrap(check_row))
        self.problem_label = _note(RED)
        self.problem_label.setToolTip("Why this page cannot go on yet")

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.problem_label)
        lay.addStretch(1)

        self._token = 0
        self._pending: Dict[int, Tuple[str, str]] = {}    # token → (extractor, weights) being checked
        self._signals = _CheckSignals(self)
        self._signals.done.connect(self._check_done)
        self._checked: Dict[Tuple[str, str], Tuple[bool, str]] = {}
        self.extractor_combo.currentIndexChanged.connect(self._changed)
        self.weights_path.changed.connect(self._changed)
        self.check_button.clicked.connect(self.check_weights)
        self._changed()

    @staticmethod
    def _wrap(layout) -> QWidget:
        w = QWidget()
        layout.setContentsMargins(0, 0, 0, 0)
        w.setLayout(layout)
        return w

    def extractor(self) -> str:
        return self.extractor_combo.currentData()

    def _key(self) -> Tuple[str, str]:
        name = self.extractor()
        return name, (self.weights_path.text() if get_spec(name).needs_weights else "")

    def weights_problem(self) -> Optional[str]:
        name, weights = self._key()
        spec = get_spec(name)
        if not spec.needs_weights:
            return None
        if weights:
            p = Path(weights).expanduser()
            if not p.is_file():
                return f"no such weights file: {p}"
        elif located_weights(name) is None:
            return (f"{name} needs a weights file, not found on this machine: {spec.how_to_get}; put it at "
                    f"{spec.weight_suggestion()} or choose it with Browse")
        result = self._checked.get(self._key())
        if result is not None and not result[0]:
            return "the weights check failed: " + result[1]
        return None

    def _changed(self) -> None:
        name = self.extractor()
        spec = get_spec(name)
        found = located_weights(name)
        info = f"{spec.description}.\n{spec.dim}-d features."
        if not spec.needs_weights:
            info += " No weights file needed."
            others = [n for n in list_extractors() if get_spec(n).needs_weights and located_weights(n) is None]
            if others:
                info += f"\n{' and '.join(others)} need a weights file; none was found on this machine."
        self.extractor_info.setText(info)
        self.weights_path.edit.setPlaceholderText(
            "no weights needed" if not spec.needs_weights else
            f"found: {found}" if found is not None else f"not found: {spec.weight_suggestion()}")
        self.weights_path.setEnabled(spec.needs_weights)
        result = self._checked.get(self._key())
        self._show_check(result)
        problem = self.weights_problem()
        failed = result is not None and not result[0]   # then the check's own line already says why
        self.problem_label.setText(problem or "")
        self.problem_label.setVisible(bool(problem) and not failed)
        self.completeChanged.emit()

    def _show_check(self, result: Optional[Tuple[bool, str]]) -> None:
        if self._key() in self._pending.values():
            self.weights_status.setStyleSheet("")
            self.weights_status.setText("Checking…")
        elif result is None:
            self.weights_status.setStyleSheet("")
            self.weights_status.setText("not checked yet")
        else:
            self.weights_status.setStyleSheet(f"color: {GREEN if result[0] else RED};")
            self.weights_status.setText(("✓ " if result[0] else "✗ ") + result[1])

    def check_weights(self) -> None:
        """Start a check in the global pool; ``weights_checked`` answers (results for stale settings dropped)."""
        name, weights = self._key()
        self._token += 1
        self._pending[self._token] = (name, weights)
        self.check_button.setEnabled(False)
        self._show_check(None)
        _check_in_background(self._signals, self._token, name, weights or None)

    def _check_done(self, token: int, ok: bool, message: str) -> None:
        key = self._pending.pop(token, None)
        if key is None:
            return
        self._checked[key] = (ok, message)
        self.check_button.setEnabled(not self._pending)
        self._changed()
        self.weights_checked.emit(ok, message)

    def check_result(self) -> Optional[Tuple[bool, str]]:
        return self._checked.get(self._key())

    def plan(self, device: str = "auto") -> ExtractionPlan:
        return ExtractionPlan(extractor=self.extractor(), magnification=float(self.magnification_spin.value()),
                              patch_size=int(self.patch_spin.value()), weights=self._key()[1] or None,
                              device=device, min_tissue=float(self.tissue_spin.value()))

    def isComplete(self) -> bool:  # noqa: N802
        return self.weights_problem() is None

    def nextId(self) -> int:  # noqa: N802
        return PAGE_MODEL


# --- (c) model ---------------------------------------------------------------------------------------------
class ModelPage(QWizardPage):
    """Which MIL methods, which D&D preset and the few numbers worth changing."""

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.setTitle("Model")
        self.setSubTitle("One cross-validated base-vs-D&D run per MIL method. Empty fields take the preset's "
                         "value, shown greyed.")
        defaults = TrainingPlan()

        self.name_edit = QLineEdit(default_run_name())
        self.name_edit.setMaxLength(64)
        form_top = QFormLayout()
        _row(form_top, "Run name", self.name_edit,
             "Names the run's folder under runs/ in the project: letters, digits, '.', '_' or '-'. A name that "
             "exists continues that run from its checkpoints.")

        methods_box = QGroupBox("MIL methods")
        methods_box.setToolTip("Each checked method gets its own base model and D&D (C experts, a student) on "
                               "every fold; they run one after another")
        mgrid = QGridLayout(methods_box)
        self.method_checks: Dict[str, QCheckBox] = {}
        for i, name in enumerate(model_names()):
            title, what = MODEL_INFO.get(name, (name, ""))
            box = QCheckBox(f"{title} ({name})")
            box.setToolTip(f"{title}: {what}" if what else title)
            box.setChecked(name in defaults.methods)
            box.toggled.connect(self._changed)
            self.method_checks[name] = box
            mgrid.addWidget(box, i // 3, i % 3)

        left = QFormLayout()
        right = QFormLayout()
        self.preset_combo = QComboBox()
        for p in PRESETS:
            self.preset_combo.addItem(PRESET_LABELS.get(p, p), p)
        self.preset_combo.setCurrentIndex(self.preset_combo.findData(defaults.preset))
        preset_tip = self._preset_tip()
        preset_label = _tip(QLabel("Preset"), preset_tip)
        self.preset_combo.setToolTip(preset_tip)
        self.preset_info = QLabel()   # two explicit lines, unwrapped: a wrapped label beside a form reserves gaps
        self.preset_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preset_info.setToolTip("What the preset trains with; hover the Preset box for every value and its "
                                    "source")
        preset_row = QHBoxLayout()
        preset_row.addWidget(preset_label)
        preset_row.addWidget(self.preset_combo)
        preset_row.addSpacing(16)
        preset_row.addWidget(self.preset_info, 1)
        self.clusters_spin = QSpinBox()
        self.clusters_spin.setRange(1, 32)
        _row(left, "Clusters (C)", self.clusters_spin,
             "How many groups the training slides are divided into, one expert each. Set to the preset's when "
             "the preset changes (paper 3, authors' code 5).")
        preset = preset_config(defaults.preset)
        self.lambda_base_spin = self._double(0.0, 100.0, 0.1, preset.lambda_base)
        _row(left, "λ base", self.lambda_base_spin,
             f"Weight of the distillation loss from the base model (default {preset.lambda_base:g}, both "
             "presets)")
        self.lambda_expert_spin = self._double(0.0, 100.0, 0.1, preset.lambda_expert)
        _row(left, "λ experts", self.lambda_expert_spin,
             f"Weight of the distillation loss from the experts, averaged over them (default "
             f"{preset.lambda_expert:g}, both presets)")
        self.temperature_spin = self._double(0.0, 100.0, 0.1, 0.0)
        _row(left, "Temperature", self.temperature_spin,
             "Softmax temperature of distillation. At the lowest value it shows, and uses, the preset's "
             "(paper 1.0, authors' code 0.2).")

        self.epochs_base_spin = self._epochs()
        _row(right, "Epochs: base", self.epochs_base_spin,
             "Training epochs of the base model. At 0 the preset's value is used (shown).")
        self.epochs_expert_spin = self._epochs()
        _row(right, "Epochs: experts", self.epochs_expert_spin,
             "Training epochs of each expert. At 0 the preset's value is used (shown).")
        self.epochs_student_spin = self._epochs()
        _row(right, "Epochs: student", self.epochs_student_spin,
             "Training epochs of the distilled student. At 0 the preset's value is used (shown).")
        self.folds_spin = QSpinBox()
        self.folds_spin.setRange(2, 20)
        self.folds_spin.setValue(defaults.folds)
        _row(right, "Folds", self.folds_spin,
             f"k of k-fold cross-validation (default {defaults.folds}); every class needs at least k slides. "
             "A labels CSV with a split column uses its own split instead.")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(defaults.seed)
        _row(left, "Seed", self.seed_spin,
             f"Seeds the fold split, clustering and training (default {defaults.seed}); the same seed and data "
             "give the same run.")
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto (GPU if present)", "auto")
        self.device_combo.addItem("cpu", "cpu")
        for dev in _cuda_devices():
            self.device_combo.addItem(dev, dev)
        _row(right, "Device", self.device_combo,
             "Where extraction and training run: auto uses a CUDA GPU when there is one, else the CPU")

        cols = QHBoxLayout()
        cols.addLayout(left, 1)
        cols.addSpacing(24)
        cols.addLayout(right, 1)
        self.problems_label = _note(RED)
        self.notes_label = _note(AMBER)

        lay = QVBoxLayout(self)
        lay.addLayout(form_top)
        lay.addWidget(methods_box)
        lay.addLayout(preset_row)
        lay.addSpacing(6)
        lay.addLayout(cols)
        lay.addWidget(self.problems_label)
        lay.addWidget(self.notes_label)
        lay.addStretch(1)

        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        for w in (self.clusters_spin, self.folds_spin, self.seed_spin, self.epochs_base_spin,
                  self.epochs_expert_spin, self.epochs_student_spin):
            w.valueChanged.connect(self._changed)
        for w in (self.lambda_base_spin, self.lambda_expert_spin, self.temperature_spin):
            w.valueChanged.connect(self._changed)
        self.name_edit.textChanged.connect(self._changed)
        self._preset_changed()

    @staticmethod
    def _double(lo: float, hi: float, step: float, value: float) -> QDoubleSpinBox:
        s = QDoubleSpinBox()
        s.setRange(lo, hi)
        s.setDecimals(2)
        s.setSingleStep(step)
        s.setValue(value)
        return s

    @staticmethod
    def _epochs() -> QSpinBox:
        s = QSpinBox()   # 0 means the preset's value, shown by the special-value text
        s.setRange(0, 10000)
        s.setSingleStep(10)
        return s

    @staticmethod
    def _preset_tip() -> str:
        parts = ["<b>paper</b> follows the D&D paper (the authors' code where it is silent); <b>authors' code</b> "
                 "follows the released code's defaults."]
        for p in PRESETS:
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td>"
                           f"<td>{html.escape(src)}</td></tr>" for k, v, src in describe_preset(p))
            parts.append(f"<p><b>{html.escape(PRESET_LABELS.get(p, p))}</b></p><table>{rows}</table>")
        return "".join(parts)

    def preset(self) -> str:
        return self.preset_combo.currentData()

    def _preset_changed(self) -> None:
        cfg = preset_config(self.preset())
        self.clusters_spin.setValue(cfg.n_clusters)
        self.temperature_spin.setSpecialValueText(f"preset: {cfg.temperature:g}")
        for spin, part in ((self.epochs_base_spin, cfg.base), (self.epochs_expert_spin, cfg.expert),
                           (self.epochs_student_spin, cfg.student)):
            spin.setSpecialValueText(f"preset: {part.epochs}")
        opt = lambda t: f"{t.optimizer.upper()} lr {t.lr:g}"  # noqa: E731
        self.preset_info.setText(
            f"base and experts: {opt(cfg.base)}, {cfg.base.epochs}/{cfg.expert.epochs} epochs; student: "
            f"{opt(cfg.student)}, {cfg.student.epochs} epochs\nC = {cfg.n_clusters}, T = {cfg.temperature:g}; "
            f"clusters on {cfg.cluster_on}, {'size-constrained' if cfg.constrained else 'plain'} k-means")
        self._changed()

    def methods(self) -> List[str]:
        return [m for m, box in self.method_checks.items() if box.isChecked()]

    def set_methods(self, methods: List[str]) -> None:
        for m, box in self.method_checks.items():
            box.setChecked(m in methods)

    def device(self) -> str:
        return self.device_combo.currentData()

    def plan(self) -> TrainingPlan:
        """Only what the user changed: a box still at the preset's value leaves the plan's None (the preset's)."""
        def opt(spin):
            return spin.value() or None
        cfg = preset_config(self.preset())
        def changed(value, preset_value):
            return None if value == preset_value else value
        return TrainingPlan(name=self.name_edit.text().strip(), methods=self.methods(), preset=self.preset(),
                            n_clusters=changed(int(self.clusters_spin.value()), cfg.n_clusters),
                            lambda_base=changed(float(self.lambda_base_spin.value()), cfg.lambda_base),
                            lambda_expert=changed(float(self.lambda_expert_spin.value()), cfg.lambda_expert),
                            temperature=(float(self.temperature_spin.value()) or None),
                            epochs_base=opt(self.epochs_base_spin), epochs_expert=opt(self.epochs_expert_spin),
                            epochs_student=opt(self.epochs_student_spin), folds=int(self.folds_spin.value()),
                            seed=int(self.seed_spin.value()), device=self.device())

    def problems(self) -> List[str]:
        out = []
        try:
            self.plan().validate()
        except DnDError as exc:
            out.append(str(exc))
        wiz = self.wizard()
        if isinstance(wiz, TrainingWizard):
            out += wiz.data_page.fold_problems(self.folds_spin.value())
        return out

    def notes(self) -> List[str]:
        out = []
        name = self.name_edit.text().strip()
        if name and (self.project.runs_root() / name).exists():
            out.append(f"runs/{name} exists: its finished stages are reused (a new name starts afresh)")
        slow = [MODEL_INFO[m][0] for m in self.methods() if m in ("transmil", "mambamil")]
        if slow:
            out.append(f"{' and '.join(slow)} train{'s' if len(slow) == 1 else ''} markedly slower than ABMIL")
        wiz = self.wizard()
        if isinstance(wiz, TrainingWizard):
            out += plan_warnings(wiz.data_page.table, self.plan())   # the engine's cohort checks
        return out

    def _changed(self, *_) -> None:
        problems, notes = self.problems(), self.notes()
        self.problems_label.setText(_bullets(problems))
        self.problems_label.setVisible(bool(problems))
        self.notes_label.setText(_bullets(notes))
        self.notes_label.setVisible(bool(notes))
        self.completeChanged.emit()

    def initializePage(self) -> None:  # noqa: N802
        self._changed()

    def isComplete(self) -> bool:  # noqa: N802
        return not self.problems()


def _cuda_devices() -> List[str]:
    try:
        import torch
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        n = 0
    return ["cuda"] if n == 1 else [f"cuda:{i}" for i in range(n)]


# --- (d) review --------------------------------------------------------------------------------------------
class ReviewPage(QWizardPage):
    """Everything chosen, in words, and how much work it is; problems found at this point block the launch."""

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.setTitle("Review")
        self.setSubTitle("Check the settings and the amount of work, then Launch: the jobs are queued and run "
                         "one after another.")
        self.estimate: Optional[WorkEstimate] = None
        self._problems: List[str] = []
        self.estimate_label = _note()
        f = QFont(self.estimate_label.font())
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.estimate_label.setFont(f)
        self.estimate_label.setToolTip("Counts, not times: slides, patches (exact for existing features, else "
                                       "an upper bound), cross-validation runs, models and epochs")
        self.summary = QTextBrowser()
        self.summary.setOpenLinks(False)
        self.summary.setToolTip("Every setting of this launch")
        self.warnings_label = _note(AMBER)
        self.warnings_label.setToolTip("The run will train, but these numbers will be noise")
        self.problems_label = _note(RED)
        self.problems_label.setToolTip("What must be fixed (go Back) before launching")
        self.error_label = _note(RED)
        self.error_label.setToolTip("Launching failed; the project was left as it was")
        lay = QVBoxLayout(self)
        lay.addWidget(self.estimate_label)
        lay.addWidget(self.summary, 1)
        lay.addWidget(self.warnings_label)
        lay.addWidget(self.problems_label)
        lay.addWidget(self.error_label)

    def initializePage(self) -> None:  # noqa: N802
        self.error_label.hide()
        self.refresh()

    def refresh(self) -> None:
        wiz: TrainingWizard = self.wizard()
        wiz.data_page.refresh()
        extraction, training = wiz.plans()
        problems = list(wiz.data_page.errors)
        problems += wiz.data_page.fold_problems(training.folds)
        for plan in (extraction, training):
            if plan is None:
                continue
            try:
                plan.validate()
            except DnDError as exc:
                problems.append(str(exc))
        if extraction is not None:
            weights = wiz.preprocess_page.weights_problem()
            if weights:
                problems.append(weights)
        self.estimate = None
        if not problems:
            try:
                self.estimate = estimate_work(wiz.preview_project(), extraction, training)
            except DnDError as exc:
                problems.append(str(exc))
        self._problems = problems
        if self.estimate is not None:
            lines = self.estimate.lines()
            self.estimate_label.setText("<b>Work:</b> " + html.escape(lines[0]) + "<br>"
                                        + "<br>".join(html.escape(s) for s in lines[1:]))
        else:
            self.estimate_label.setText("<b>Work:</b> cannot be estimated until the problems below are fixed")
        self.summary.setHtml(wiz.summary_html())
        warnings = self.estimate.warnings if self.estimate is not None else []
        self.warnings_label.setText(_bullets(warnings))
        self.warnings_label.setVisible(bool(warnings))
        self.problems_label.setText(_bullets(problems))
        self.problems_label.setVisible(bool(problems))
        self.completeChanged.emit()

    def problems(self) -> List[str]:
        return list(self._problems)

    def show_error(self, message: str) -> None:
        self.error_label.setText(f"Could not launch: {message}")
        self.error_label.show()

    def isComplete(self) -> bool:  # noqa: N802
        return not self._problems and self.estimate is not None


# --- the wizard --------------------------------------------------------------------------------------------
class TrainingWizard(QWizard):
    """Data, preprocessing, model, review → ``launch_requested(extraction plan or None, training plan)``."""

    launch_requested = Signal(object, object)

    def __init__(self, project: Project, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.project = project
        self.setWindowTitle(f"Train a model — {project.name}")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setOption(QWizard.WizardOption.HaveHelpButton, False)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Launch")
        self.data_page = DataPage(project)
        self.preprocess_page = PreprocessPage(project)
        self.model_page = ModelPage(project)
        self.review_page = ReviewPage(project)
        for pid, page in ((PAGE_DATA, self.data_page), (PAGE_PREPROCESS, self.preprocess_page),
                          (PAGE_MODEL, self.model_page), (PAGE_REVIEW, self.review_page)):
            self.setPage(pid, page)
        self.setStartId(PAGE_DATA)
        self.model_page.folds_spin.valueChanged.connect(lambda *_: self.data_page.refresh())
        self.resize(900, 650)
        self.setMinimumSize(760, 560)

    # --- what was chosen -----------------------------------------------------------------------------------
    def plans(self) -> Tuple[Optional[ExtractionPlan], TrainingPlan]:
        training = self.model_page.plan()
        extraction = None
        if self.data_page.mode() == DataPage.MODE_SLIDES:
            extraction = self.preprocess_page.plan(device=training.device)
        return extraction, training

    def preview_project(self) -> Project:
        """An in-memory copy with the data choices applied, for the estimate: never saved, nothing copied."""
        p = copy.copy(self.project)
        p.labels = str(self.data_page.labels_path.path().resolve())
        if self.data_page.mode() == DataPage.MODE_FEATURES:
            p.features, p.slides = str(self.data_page.source_path().resolve()), []
        else:
            p.features, p.slides = None, [str(s) for s in self.data_page.slide_files]
        return p

    def summary_html(self) -> str:
        extraction, training = self.plans()
        d = self.data_page
        rows: List[Tuple[str, str]] = [("Project", str(self.project.root))]
        if d.mode() == DataPage.MODE_FEATURES:
            rows.append(("Features", f"{d.source_path()} (existing; no extraction)"))
        else:
            rows.append(("Slides", f"{d.source_path()} ({len(d.slide_files)} slide files, linked)"))
        rows.append(("Labels", f"{d.labels_path.path()} (copied into the project as {LABELS})"))
        if d.table is not None:
            rows.append(("Classes", " · ".join(f"{c} {n}" for c, n in d.table.counts().items())))
        if extraction is not None:
            check = self.preprocess_page.check_result()
            located = located_weights(extraction.extractor)
            weights = extraction.weights or (str(located) if located else "none needed")
            rows += [("Extractor", f"{extraction.extractor} ({get_spec(extraction.extractor).dim}-d)"),
                     ("Weights", weights + ("" if not get_spec(extraction.extractor).needs_weights else
                                            " — checked, loads" if check and check[0] else " — not checked")),
                     ("Patches", f"{extraction.patch_size} px at {extraction.magnification:g}×, kept with ≥ "
                                 f"{extraction.min_tissue:.0%} tissue")]
        try:
            cfg = training.dnd_config(training.methods[0] if training.methods else "abmil")
        except DnDError:
            cfg = None
        rows += [("Run name", f"{training.name} (runs/{training.name}/<method>)"),
                 ("MIL methods", ", ".join(f"{MODEL_INFO.get(m, (m,))[0]}" for m in training.methods) or "none"),
                 ("Preset", PRESET_LABELS.get(training.preset, training.preset))]
        if cfg is not None:
            def mark(value, own):
                return f"{value}" + ("" if own is not None else " (preset)")
            rows += [("Clusters (C)", mark(cfg.n_clusters, training.n_clusters)),
                     ("λ base / λ experts", f"{mark(f'{cfg.lambda_base:g}', training.lambda_base)} / "
                                            f"{mark(f'{cfg.lambda_expert:g}', training.lambda_expert)}"),
                     ("Temperature", mark(f"{cfg.temperature:g}", training.temperature)),
                     ("Epochs base / experts / student",
                      f"{mark(cfg.base.epochs, training.epochs_base)} / "
                      f"{mark(cfg.expert.epochs, training.epochs_expert)} / "
                      f"{mark(cfg.student.epochs, training.epochs_student)}"),
                     ("Optimisers", f"base and experts {cfg.base.optimizer.upper()}, student "
                                    f"{cfg.student.optimizer.upper()} (preset)")]
        split = d.table is not None and d.table.splits is not None
        rows += [("Validation", "the CSV's split column" if split else f"{training.folds}-fold cross-validation"),
                 ("Seed", str(training.seed)), ("Device", training.device)]
        body = "".join(f"<tr><td style='padding:2px 14px 2px 0'><b>{html.escape(k)}</b></td>"
                       f"<td style='padding:2px 0'>{html.escape(v)}</td></tr>"
                       for k, v in rows)
        return f"<table>{body}</table>"

    # --- launch --------------------------------------------------------------------------------------------
    def apply_to_project(self) -> None:
        """Link the data and copy the labels in; on any failure restore the manifest fields and labels file."""
        p = self.project
        saved = {f.name: copy.deepcopy(getattr(p, f.name)) for f in fields(p) if f.name != "root"}
        labels_file = p.root / LABELS
        old_labels = labels_file.read_bytes() if labels_file.is_file() else None
        d = self.data_page
        try:
            if d.mode() == DataPage.MODE_FEATURES:
                p.set_features(d.source_path())
            else:
                p.set_slides(d.source_path())
                p.features, p.extraction = None, {}    # the launched extraction makes the features
            p.set_labels(d.labels_path.path())
            p.save()
        except BaseException:
            for k, v in saved.items():
                setattr(p, k, v)
            try:
                if old_labels is None:
                    labels_file.unlink(missing_ok=True)
                elif not labels_file.is_file() or labels_file.read_bytes() != old_labels:
                    labels_file.write_bytes(old_labels)
            except OSError:
                pass
            raise

    def accept(self) -> None:
        self.review_page.refresh()
        if not self.review_page.isComplete():
            return
        extraction, training = self.plans()
        try:
            self.apply_to_project()
        except Exception as exc:
            self.review_page.show_error(str(exc) or type(exc).__name__)
            return
        self.launch_requested.emit(extraction, training)
        super().accept()


__all__ = ["DataPage", "ModelPage", "PreprocessPage", "ReviewPage", "TrainingWizard", "default_extractor",
           "default_run_name", "located_weights"]
