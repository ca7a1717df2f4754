"""The inspector (right-hand panel): the slide's prediction, the heatmap controls, the patch gallery and the slide's
properties, top to bottom in the order a reader needs them.

Widgets here only display and emit; the main window owns the state (which slide, which prediction, which
heatmap layer) and wires these signals to the viewer.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QScrollArea, QSizePolicy, QSlider, QVBoxLayout, QWidget)

from dnd_engine.heatmaps import COLORMAPS, colormap_lut

from .gallery import PatchGallery
from .slide_properties import SlidePropertiesPanel
from dnd_engine.heatmaps.style import HeatmapStyle

NORMALISATION_WORDS = {"percentile": "Percentile rank (CLAM)", "minmax": "Min\u2013max"}
WARNING_COLOUR = "#E08A00"
ERROR_COLOUR = "#D9483B"


def model_label(name: str) -> str:
    """'student' → 'Student (D&D)', 'expert_0' → 'Expert 1', 'base' → 'Base model'."""
    if name == "student":
        return "Student (D&D)"
    if name == "base":
        return "Base model"
    if name.startswith("expert_") and name[7:].isdigit():
        return f"Expert {int(name[7:]) + 1}"
    return name


class ProbabilityBars(QWidget):
    """One bar per class, the predicted class in the highlight colour."""

    ROW = 24

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.names: list[str] = []
        self.probs: list[float] = []
        self.predicted = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_probabilities(self, names: Sequence[str], probs: Sequence[float], predicted: str) -> None:
        self.names, self.probs, self.predicted = list(names), [float(p) for p in probs], predicted
        self.setFixedHeight(self.ROW * len(self.names) + 4 if self.names else 0)
        self.update()

    def paintEvent(self, event) -> None:
        if not self.names:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fm = p.fontMetrics()
        label_w = max(fm.horizontalAdvance(n) for n in self.names) + 10
        pct_w = fm.horizontalAdvance("100.0 %") + 8
        bar_w = max(10, self.width() - label_w - pct_w)
        for i, (name, prob) in enumerate(zip(self.names, self.probs)):
            y = i * self.ROW + 2
            chosen = name == self.predicted
            font = QFont(self.font())
            font.setBold(chosen)
            p.setFont(font)
            p.setPen(pal.color(QPalette.ColorRole.WindowText))
            p.drawText(QRectF(0, y, label_w, self.ROW - 4), Qt.AlignmentFlag.AlignVCenter, name)
            track = QRectF(label_w, y + 5, bar_w, self.ROW - 14)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(pal.color(QPalette.ColorRole.Mid))
            p.drawRoundedRect(track, 3, 3)
            fill = QRectF(track.left(), track.top(), max(2.0, track.width() * min(max(prob, 0.0), 1.0)),
                          track.height())
            p.setBrush(pal.color(QPalette.ColorRole.Highlight) if chosen else pal.color(QPalette.ColorRole.Dark))
            p.drawRoundedRect(fill, 3, 3)
            p.setPen(pal.color(QPalette.ColorRole.WindowText))
            p.drawText(QRectF(label_w + bar_w, y, pct_w, self.ROW - 4),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{prob * 100:.1f} %")
        p.end()


class ColourKey(QWidget):
    """The colormap as a bar from low to high attention, so colours read as numbers."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.colormap = "jet"
        self.threshold = 0.0
        self.setFixedHeight(34)

    def set_colormap(self, name: str, threshold: float = 0.0) -> None:
        self.colormap, self.threshold = name, threshold
        self.update()

    def paintEvent(self, event) -> None:
        lut = np.ascontiguousarray(colormap_lut(self.colormap)[None, :, :].repeat(2, axis=0))
        img = QImage(lut.data, 256, 2, 3 * 256, QImage.Format.Format_RGB888)
        p = QPainter(self)
        bar = QRectF(0, 0, self.width(), 14)
        p.drawImage(bar, img)
        if self.threshold > 0:
            p.fillRect(QRectF(0, 0, self.width() * self.threshold, 14), QColor(128, 128, 128, 200))
        p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        small = QFont(self.font())
        small.setPointSizeF(small.pointSizeF() * 0.9)
        p.setFont(small)
        r = QRectF(0, 16, self.width(), 18)
        p.drawText(r, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "0 \u00b7 low attention")
        p.drawText(r, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, "high \u00b7 1")
        p.end()


class PredictionBox(QGroupBox):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__("Prediction", parent)
        self.headline = QLabel()
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.headline.setFont(font)
        self.headline.setWordWrap(True)
        self.bars = ProbabilityBars()
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.demo_note = QLabel("Demo model: trained on synthetic slides. Not for diagnosis.")
        self.demo_note.setWordWrap(True)
        self.demo_note.setStyleSheet(f"color: {WARNING_COLOUR}; font-weight: bold;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.headline)
        layout.addWidget(self.bars)
        layout.addWidget(self.details)
        layout.addWidget(self.demo_note)
        self.show_none()

    @property
    def predicted_text(self) -> str:
        return self.headline.text()

    def show_none(self, text: str = "Not classified") -> None:
        self.headline.setText(text)
        self.headline.setStyleSheet("")
        self.bars.set_probabilities([], [], "")
        self.details.setText("Drop the slide on the window, or use File \u25b8 Classify Slides\u2026 (Ctrl+K).")
        self.demo_note.hide()

    def show_running(self, message: str) -> None:
        self.headline.setText("Classifying\u2026")
        self.headline.setStyleSheet("")
        self.bars.set_probabilities([], [], "")
        self.details.setText(message)
        self.demo_note.hide()

    def show_prediction(self, predicted: str, class_names: Sequence[str], probs: Sequence[float], n_patches: int,
                        model_name: str, demo: bool, note: str = "") -> None:
        self.headline.setText(predicted)
        self.headline.setStyleSheet("")
        self.bars.set_probabilities(class_names, probs, predicted)
        self.details.setText(f"{model_name} \u00b7 {n_patches} patch{'es' if n_patches != 1 else ''}"
                             + (f"\n\u26a0 {note}" if note else ""))
        self.demo_note.setVisible(demo)

    def show_failure(self, message: str) -> None:
        self.headline.setText("Not classified")
        self.headline.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.bars.set_probabilities([], [], "")
        self.details.setText(message)
        self.demo_note.hide()


class HeatmapControls(QGroupBox):
    style_changed = Signal(object)   # HeatmapStyle
    model_changed = Signal(str)
    export_png = Signal()
    export_geojson = Signal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__("Attention heatmap", parent)
        self.show_box = QCheckBox("Show heatmap")
        self.show_box.setChecked(True)
        self.show_box.setToolTip("Show or hide the heatmap (H)")
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Whose attention to show: the distilled student, or the base model and each "
                                    "expert when the model came with its run folder")
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(list(COLORMAPS))
        self.normalise_combo = QComboBox()
        for key, words in NORMALISATION_WORDS.items():
            self.normalise_combo.addItem(words, key)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.opacity_label = QLabel()
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.threshold.setValue(0)
        self.threshold.setToolTip("Hide patches whose normalised attention is below this value")
        self.threshold_label = QLabel()
        self.smooth_box = QCheckBox("Smooth")
        self.smooth_box.setToolTip("Interpolate between patches instead of drawing each patch as a square")
        self.key = ColourKey()
        self.hover = QLabel("Point at the slide to read a patch's score.")
        self.hover.setWordWrap(True)
        self.count_label = QLabel()
        self.png_button = QPushButton("Export PNG\u2026")
        self.geojson_button = QPushButton("Export GeoJSON\u2026")
        self.geojson_button.setToolTip("One tile per patch with its attention, for QuPath (File \u25b8 Import objects)")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model", self.model_combo)
        form.addRow("Colormap", self.colormap_combo)
        form.addRow("Scale", self.normalise_combo)
        form.addRow("Opacity", self._with_label(self.opacity, self.opacity_label))
        form.addRow("Threshold", self._with_label(self.threshold, self.threshold_label))
        buttons = QHBoxLayout()
        buttons.addWidget(self.png_button)
        buttons.addWidget(self.geojson_button)
        top = QHBoxLayout()
        top.addWidget(self.show_box)
        top.addStretch(1)
        top.addWidget(self.smooth_box)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(form)
        layout.addWidget(self.key)
        layout.addWidget(self.count_label)
        layout.addWidget(self.hover)
        layout.addLayout(buttons)

        for signal in (self.show_box.toggled, self.colormap_combo.currentIndexChanged,
                       self.normalise_combo.currentIndexChanged, self.opacity.valueChanged,
                       self.threshold.valueChanged, self.smooth_box.toggled):
            signal.connect(self._emit_style)
        self.model_combo.currentIndexChanged.connect(self._emit_model)
        self.png_button.clicked.connect(self.export_png)
        self.geojson_button.clicked.connect(self.export_geojson)
        self._refresh_labels()
        self.set_models([])

    @staticmethod
    def _with_label(slider: QSlider, label: QLabel) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(slider, 1)
        label.setMinimumWidth(44)
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(label)
        return box

    def heatmap_style(self) -> HeatmapStyle:
        return HeatmapStyle(colormap=self.colormap_combo.currentText(), opacity=self.opacity.value() / 100.0,
                            threshold=self.threshold.value() / 100.0,
                            normalise=self.normalise_combo.currentData(), visible=self.show_box.isChecked(),
                            smooth=self.smooth_box.isChecked())

    def set_heatmap_style(self, style: HeatmapStyle) -> None:
        widgets = (self.show_box, self.colormap_combo, self.normalise_combo, self.opacity, self.threshold,
                   self.smooth_box)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.show_box.setChecked(style.visible)
            self.colormap_combo.setCurrentText(style.colormap)
            self.normalise_combo.setCurrentIndex(max(0, self.normalise_combo.findData(style.normalise)))
            self.opacity.setValue(round(style.opacity * 100))
            self.threshold.setValue(round(style.threshold * 100))
            self.smooth_box.setChecked(style.smooth)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._refresh_labels()

    def set_models(self, names: Sequence[str], current: Optional[str] = None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for name in names:
            self.model_combo.addItem(model_label(name), name)
        if current is not None:
            self.model_combo.setCurrentIndex(max(0, self.model_combo.findData(current)))
        self.model_combo.blockSignals(False)
        self.model_combo.setEnabled(len(names) > 1)
        has = bool(names)
        for w in (self.show_box, self.colormap_combo, self.normalise_combo, self.opacity, self.threshold,
                  self.smooth_box, self.png_button, self.geojson_button):
            w.setEnabled(has)
        if not has:
            self.count_label.setText("No heatmap: the slide has not been classified.")
            self.hover.setText("")

    def set_counts(self, shown: int, total: int) -> None:
        self.count_label.setText(f"{shown} of {total} patches shown" if total else "")

    def set_hover(self, text: str) -> None:
        self.hover.setText(text)

    def _refresh_labels(self) -> None:
        self.opacity_label.setText(f"{self.opacity.value()} %")
        self.threshold_label.setText(f"{self.threshold.value() / 100:.2f}")
        self.key.set_colormap(self.colormap_combo.currentText(), self.threshold.value() / 100.0)

    def _emit_style(self, *_args) -> None:
        self._refresh_labels()
        self.style_changed.emit(self.heatmap_style())

    def _emit_model(self, *_args) -> None:
        name = self.model_combo.currentData()
        if name:
            self.model_changed.emit(name)


class Inspector(QScrollArea):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.prediction = PredictionBox()
        self.heatmap = HeatmapControls()
        self.gallery = PatchGallery()
        gallery_box = QGroupBox("Patches")
        QVBoxLayout(gallery_box).addWidget(self.gallery)
        self.properties = SlidePropertiesPanel()
        self.properties.setMinimumHeight(220)
        properties_box = QGroupBox("Slide")
        QVBoxLayout(properties_box).addWidget(self.properties)
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(6, 6, 6, 6)
        for w in (self.prediction, gallery_box, self.heatmap, properties_box):  # the evidence in view at 768 px
            layout.addWidget(w)
        layout.addStretch(1)
        self.setWidget(inner)
        self.setMinimumWidth(320)
