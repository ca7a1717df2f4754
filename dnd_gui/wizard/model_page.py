"""The wizard's model page: which MIL methods, which D&D preset and the few numbers worth changing.

The methods and their descriptions come from the model registry, the devices from the engine, the preset values
from the presets table: a box still at the preset's value leaves the plan's None, "the preset's".
"""

from __future__ import annotations

import html
from typing import Dict, List

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QSpinBox, QVBoxLayout, QWizardPage)

from dnd_engine.device import list_devices
from dnd_engine.dnd.presets import PRESETS, describe_preset, preset_config
from dnd_engine.errors import DnDError
from dnd_engine.models import model_class, model_names
from dnd_engine.project import Project, TrainingPlan, plan_warnings

from .widgets import AMBER, PRESET_LABELS, RED, default_run_name, form_row, note, show_lines, tip

DEVICE_LABELS = {"auto": "auto (GPU if present)"}


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
        form_row(form_top, "Run name", self.name_edit,
             "Names the run's folder under runs/ in the project: letters, digits, '.', '_' or '-'. A name that "
             "exists continues that run from its checkpoints.")

        methods_box = QGroupBox("MIL methods")
        methods_box.setToolTip("Each checked method gets its own base model and D&D (C experts, a student) on "
                               "every fold; they run one after another")
        mgrid = QGridLayout(methods_box)
        self.method_checks: Dict[str, QCheckBox] = {}
        for i, name in enumerate(model_names()):
            cls = model_class(name)
            title, what = cls.title or name, cls.summary
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
        preset_label = tip(QLabel("Preset"), preset_tip)
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
        form_row(left, "Clusters (C)", self.clusters_spin,
             "How many groups the training slides are divided into, one expert each. Set to the preset's when "
             "the preset changes (paper 3, authors' code 5).")
        preset = preset_config(defaults.preset)
        self.lambda_base_spin = self._double(0.0, 100.0, 0.1, preset.lambda_base)
        form_row(left, "λ base", self.lambda_base_spin,
             f"Weight of the distillation loss from the base model (default {preset.lambda_base:g}, both "
             "presets)")
        self.lambda_expert_spin = self._double(0.0, 100.0, 0.1, preset.lambda_expert)
        form_row(left, "λ experts", self.lambda_expert_spin,
             f"Weight of the distillation loss from the experts, averaged over them (default "
             f"{preset.lambda_expert:g}, both presets)")
        self.temperature_spin = self._double(0.0, 100.0, 0.1, 0.0)
        form_row(left, "Temperature", self.temperature_spin,
             "Softmax temperature of distillation. At the lowest value it shows, and uses, the preset's "
             "(paper 1.0, authors' code 0.2).")

        self.epochs_base_spin = self._epochs()
        form_row(right, "Epochs: base", self.epochs_base_spin,
             "Training epochs of the base model. At 0 the preset's value is used (shown).")
        self.epochs_expert_spin = self._epochs()
        form_row(right, "Epochs: experts", self.epochs_expert_spin,
             "Training epochs of each expert. At 0 the preset's value is used (shown).")
        self.epochs_student_spin = self._epochs()
        form_row(right, "Epochs: student", self.epochs_student_spin,
             "Training epochs of the distilled student. At 0 the preset's value is used (shown).")
        self.folds_spin = QSpinBox()
        self.folds_spin.setRange(2, 20)
        self.folds_spin.setValue(defaults.folds)
        form_row(right, "Folds", self.folds_spin,
             f"k of k-fold cross-validation (default {defaults.folds}); every class needs at least k slides. "
             "A labels CSV with a split column uses its own split instead.")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(defaults.seed)
        form_row(left, "Seed", self.seed_spin,
             f"Seeds the fold split, clustering and training (default {defaults.seed}); the same seed and data "
             "give the same run.")
        self.device_combo = QComboBox()
        for dev in list_devices():
            self.device_combo.addItem(DEVICE_LABELS.get(dev, dev), dev)
        form_row(right, "Device", self.device_combo,
             "Where extraction and training run: auto uses a CUDA GPU when there is one, else the CPU")

        cols = QHBoxLayout()
        cols.addLayout(left, 1)
        cols.addSpacing(24)
        cols.addLayout(right, 1)
        self.problems_label = note(RED)
        self.notes_label = note(AMBER)

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
        data_page = getattr(self.wizard(), "data_page", None)   # the wizard's, when this page is in one
        if data_page is not None:
            out += data_page.fold_problems(self.folds_spin.value())
        return out

    def notes(self) -> List[str]:
        out = []
        name = self.name_edit.text().strip()
        if name and (self.project.runs_root() / name).exists():
            out.append(f"runs/{name} exists: its finished stages are reused (a new name starts afresh)")
        slow = [model_class(m).title for m in self.methods() if model_class(m).slow]
        if slow:
            out.append(f"{' and '.join(slow)} train{'s' if len(slow) == 1 else ''} markedly slower than ABMIL")
        data_page = getattr(self.wizard(), "data_page", None)
        if data_page is not None:
            out += plan_warnings(data_page.table, self.plan())   # the engine's cohort checks
        return out

    def _changed(self, *_) -> None:
        problems, notes = self.problems(), self.notes()
        show_lines(self.problems_label, problems)
        show_lines(self.notes_label, notes)
        self.completeChanged.emit()

    def initializePage(self) -> None:  # noqa: N802
        self._changed()

    def isComplete(self) -> bool:  # noqa: N802
        return not self.problems()
