"""The wizard's preprocessing page: how patches are cut and which encoder turns them into features.

Skipped when the features already exist. "Does this encoder load with these weights?" can take seconds (UNI is a
1.2 GB ViT-L), so the check runs on a :class:`LatestOnly` worker: the newest check's answer is the one shown.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget, QWizardPage)

from dnd_engine.errors import DnDError
from dnd_engine.features.registry import default_extractor, get_spec, list_extractors
from dnd_engine.project import ExtractionPlan, Project, check_weights
from dnd_engine.text import one_line

from ..jobs.background import lower_this_thread
from ..workers import LatestOnly
from .widgets import GREEN, PAGE_MODEL, RED, PathEdit, form_row, note, tip


def _check(extractor: str, weights: Optional[str]) -> str:
    """Build the encoder on a worker thread, at the lower priority every worker runs at."""
    lower_this_thread()
    return check_weights(extractor, weights)


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
        form_row(form, "Magnification", self.magnification_spin,
             f"Objective magnification the patches are cut at (default {base.magnification:g}×). Slides scanned "
             "at a higher power are read from a coarser level or downsampled. 20× is CLAM's usual setting; 10× "
             "gives 4× fewer patches and trains faster.")
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(16, 4096)
        self.patch_spin.setSingleStep(32)
        self.patch_spin.setSuffix(" px")
        self.patch_spin.setValue(base.patch_size)
        form_row(form, "Patch size", self.patch_spin,
             f"Side of a square patch in pixels at the chosen magnification (default {base.patch_size}). The "
             "encoder resizes it to its own input (224 px for ResNet-50 and UNI).")
        self.tissue_spin = QDoubleSpinBox()
        self.tissue_spin.setRange(0.0, 1.0)
        self.tissue_spin.setSingleStep(0.05)
        self.tissue_spin.setValue(base.min_tissue)
        form_row(form, "Minimum tissue", self.tissue_spin,
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
        form_row(form, "Extractor", self.extractor_combo,
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
        form_row(form, "Weights file", self.weights_path,
             "The encoder's weights. Empty: the file the engine finds in its usual places (shown greyed). "
             "Check builds the encoder with it, off the UI thread, and says whether it loads.")
        self.check_button = tip(QPushButton("Check weights"),
                                 "Build the encoder with these weights (on the CPU, in the background) and report "
                                 "whether they load")
        self.weights_status = note()
        self.weights_status.setToolTip("The result of the last weights check")
        self.weights_status.setContentsMargins(0, 4, 0, 0)   # first line level with the button's text
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_button, 0, Qt.AlignmentFlag.AlignTop)
        check_row.addWidget(self.weights_status, 1)
        form.addRow("", self._wrap(check_row))
        self.problem_label = note(RED)
        self.problem_label.setToolTip("Why this page cannot go on yet")

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.problem_label)
        lay.addStretch(1)

        # no Qt parent: the worker outlives a closed wizard without blocking on a running check; closing only
        # supersedes it, so a late answer finds nobody to deliver to
        self._checker = LatestOnly()
        self.destroyed.connect(self._checker.cancel)
        self._checking: Optional[Tuple[str, str]] = None      # (extractor, weights) being checked
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
        problem = get_spec(name).weights_problem(weights or None)
        if problem is not None:
            return problem + ("" if weights else " or choose it with Browse")
        result = self._checked.get(self._key())
        if result is not None and not result[0]:
            return "the weights check failed: " + result[1]
        return None

    def _changed(self) -> None:
        name = self.extractor()
        spec = get_spec(name)
        found = spec.located()
        info = f"{spec.description}.\n{spec.dim}-d features."
        if not spec.needs_weights:
            info += " No weights file needed."
            others = [n for n in list_extractors() if get_spec(n).needs_weights and get_spec(n).located() is None]
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
        if self._checking == self._key():
            self.weights_status.setStyleSheet("")
            self.weights_status.setText("Checking…")
        elif result is None:
            self.weights_status.setStyleSheet("")
            self.weights_status.setText("not checked yet")
        else:
            self.weights_status.setStyleSheet(f"color: {GREEN if result[0] else RED};")
            self.weights_status.setText(("✓ " if result[0] else "✗ ") + result[1])

    def check_weights(self) -> None:
        """Check on the worker; ``weights_checked`` answers (a newer check supersedes an older one)."""
        key = self._key()
        self._checking = key
        self.check_button.setEnabled(False)
        self._show_check(None)
        self._checker.submit(_check, key[0], key[1] or None,
                             on_done=lambda message: self._check_done(key, True, message),
                             on_error=lambda exc: self._check_done(key, False, one_line(exc, None)))

    def _check_done(self, key: Tuple[str, str], ok: bool, message: str) -> None:
        self._checked[key] = (ok, message)
        self._checking = None
        self.check_button.setEnabled(True)
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
