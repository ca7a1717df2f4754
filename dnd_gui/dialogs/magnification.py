"""Asking the user for a slide's objective power or pixel size, and remembering the answer per slide.

Two slides in four of a typical download (a TCGA frozen section, a kidney strip TIFF) carry neither; without one
the engine cannot cut patches at the model's magnification. The app asks instead of guessing: the dialog shows
the usual value (20\u00d7, 0.5 \u00b5m/px) ready to accept, and Cancel cancels that slide's classification.

:class:`SlideScaleStore` decides where an answer is kept: in the open project (``project.json``, so the
wizard's extraction uses it too), else in the app's settings; both are keyed by the file's identity
(:mod:`dnd_engine.slides.overrides`). The engine applies it; this module only asks and stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from PySide6.QtWidgets import (QButtonGroup, QDialog, QDialogButtonBox, QDoubleSpinBox, QGridLayout, QLabel,
                               QRadioButton, QVBoxLayout, QWidget)

from dnd_engine.errors import DnDError
from dnd_engine.slides.overrides import (DEFAULT_MPP, DEFAULT_POWER, MPP_RANGE, POWER_RANGE, MagnificationOverride,
                                         needs_magnification)

#: returned by :func:`ask_magnification` when the user chose to forget a value set earlier
FORGET = object()


class MagnificationDialog(QDialog):
    """Objective power or pixel size for one slide, with the common scan proposed (not silently assumed)."""

    def __init__(self, slide_name: str, current: Optional[MagnificationOverride] = None, *, missing: bool = True,
                 where: str = "", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle(f"Magnification of {slide_name}")
        self.forget = False
        intro = (f"<b>{slide_name}</b> does not say at what magnification it was scanned (its file has no "
                 "objective power and no pixel size). Give one so its patches are cut at the model's "
                 "magnification." if missing else
                 f"Set the objective power or the pixel size of <b>{slide_name}</b>; it replaces what the file "
                 "says.")
        text = QLabel(intro + (f"<br><br>It is kept for this slide {where}." if where else ""))
        text.setWordWrap(True)
        hint = QLabel("Usual scans: 40\u00d7 \u2248 0.25 \u00b5m/px, 20\u00d7 \u2248 0.5 \u00b5m/px, "
                      "10\u00d7 \u2248 1 \u00b5m/px. The scanner's report or the file's source says which.")
        hint.setWordWrap(True)
        hint.setEnabled(False)
        self.power_radio = QRadioButton("Objective power")
        self.mpp_radio = QRadioButton("Pixel size")
        group = QButtonGroup(self)
        group.addButton(self.power_radio)
        group.addButton(self.mpp_radio)
        self.power_box = QDoubleSpinBox()
        self.power_box.setRange(*POWER_RANGE)
        self.power_box.setDecimals(1)
        self.power_box.setSuffix(" \u00d7")
        self.power_box.setValue(current.objective_power if current and current.objective_power else DEFAULT_POWER)
        self.mpp_box = QDoubleSpinBox()
        self.mpp_box.setRange(*MPP_RANGE)
        self.mpp_box.setDecimals(4)
        self.mpp_box.setSingleStep(0.01)
        self.mpp_box.setSuffix(" \u00b5m/px")
        self.mpp_box.setValue(current.mpp if current and current.mpp else DEFAULT_MPP)
        use_mpp = bool(current and current.mpp and not current.objective_power)
        (self.mpp_radio if use_mpp else self.power_radio).setChecked(True)
        self.power_radio.toggled.connect(self._sync)
        grid = QGridLayout()
        grid.addWidget(self.power_radio, 0, 0)
        grid.addWidget(self.power_box, 0, 1)
        grid.addWidget(self.mpp_radio, 1, 0)
        grid.addWidget(self.mpp_box, 1, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Cancel).setText(
            "Cancel classification" if missing else "Cancel")
        if current is not None:
            reset = buttons.addButton("Use the file's value", QDialogButtonBox.ButtonRole.ResetRole)
            reset.clicked.connect(self._forget)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        layout = QVBoxLayout(self)
        for w in (text, hint):
            layout.addWidget(w)
        layout.addLayout(grid)
        layout.addWidget(buttons)
        self.setMinimumWidth(460)
        self.resize(480, self.heightForWidth(480) if self.hasHeightForWidth() else self.sizeHint().height())
        self._sync()

    def _sync(self) -> None:
        self.power_box.setEnabled(self.power_radio.isChecked())
        self.mpp_box.setEnabled(self.mpp_radio.isChecked())

    def _forget(self) -> None:
        self.forget = True
        self.accept()

    def value(self) -> MagnificationOverride:
        if self.power_radio.isChecked():
            return MagnificationOverride(objective_power=float(self.power_box.value()))
        return MagnificationOverride(mpp=float(self.mpp_box.value()))


def ask_magnification(parent: Optional[QWidget], slide_name: str, current: Optional[MagnificationOverride] = None,
                      *, missing: bool = True, where: str = ""):
    """A :class:`MagnificationOverride`, :data:`FORGET`, or None when cancelled (tests replace this getter)."""
    dialog = MagnificationDialog(slide_name, current, missing=missing, where=where, parent=parent)
    try:
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return FORGET if dialog.forget else dialog.value()
    finally:
        dialog.deleteLater()


class SlideScaleStore:
    """The user's per-slide magnification: in the open project when there is one, else in the app's settings.

    A value set before a project was opened is still found (the project is looked at first, then the settings).
    """

    def __init__(self, settings, project: Callable[[], object]):
        self.settings = settings          # AppSettings
        self._project = project           # () -> dnd_engine.project.Project or None

    def where(self) -> str:
        return "in the project" if self._project() is not None else "in the app's settings"

    def get(self, path: str) -> Optional[MagnificationOverride]:
        project = self._project()
        found = project.slide_override(path) if project is not None else None
        return found or self.settings.slide_overrides().get(path)

    def set(self, path: str, override: Optional[MagnificationOverride]) -> None:
        """Store (None: forget, in both places, so the file's own value is used again)."""
        project = self._project()
        if project is not None:
            project.set_slide_override(path, override)
        if project is None or override is None:
            self.settings.set_slide_override(path, override)

    def adopt(self, project) -> int:
        """Copy the values set in the app's settings for ``project``'s slides into the project (where its
        extraction looks); returns how many were copied."""
        table = self.settings.slide_overrides()
        copied = 0
        if table.entries:
            for p in project.slides:
                found = table.get(p) if project.slide_override(p) is None else None
                if found is not None:
                    project.override_table().set(p, found)
                    copied += 1
            if copied:
                project.save()
        return copied

    def for_paths(self, paths: Sequence[str]) -> dict:
        """{absolute path: {objective_power, mpp}} for the engine (classification, extraction)."""
        out = {}
        for p in paths:
            ov = self.get(p)
            if ov is not None:
                out[str(Path(p).resolve())] = ov.to_dict()
        return out

    def ask_and_set(self, parent: Optional[QWidget], path: str, info: Optional[dict]) -> bool:
        """The Slide panel's button: ask for ``path`` (shown with ``info``, :meth:`Slide.info`) and store the
        answer, or forget the stored value; True when something changed."""
        if info is None:
            return False
        answer = ask_magnification(parent, Path(path).name, self.get(path),
                                   missing=info.get("objective_power") is None, where=self.where())
        if answer is None:
            return False
        self.set(path, None if answer is FORGET else answer)
        return True

    def ask_missing(self, parent: Optional[QWidget], paths: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
        """(paths to classify, paths whose question was cancelled, paths answered now), asking for each slide that
        neither its file nor a stored value gives a magnification (tests replace the module's
        :func:`ask_magnification`)."""
        keep, cancelled, answered = [], [], []
        for p in paths:
            if not needs_magnification(p, self.get(p)):
                keep.append(p)
                continue
            answer = ask_magnification(parent, Path(p).name, where=self.where())
            if answer is None or answer is FORGET:
                cancelled.append(p)
                continue
            try:
                self.set(p, answer)
            except DnDError:
                cancelled.append(p)
                continue
            keep.append(p)
            answered.append(p)
        return keep, cancelled, answered


def cancelled_message(paths: Sequence[str]) -> str:
    names = ", ".join(Path(p).name for p in paths[:3]) + (" \u2026" if len(paths) > 3 else "")
    return (f"{names}: classification cancelled \u2014 the magnification is unknown (set it in the Slide panel "
            "with \u201cSet objective / pixel size\u2026\u201d)")
