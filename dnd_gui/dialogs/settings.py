"""File ▸ Settings: the app's preferences that are not a view toggle. For now, where project extractions run:
on this computer, or on a Ray cluster (the address the engine's ``dnd extract --ray`` takes).

The engine judges the address (:func:`dnd_engine.features.ray_runner.check_address`); the dialog only shows
its one-line answer and keeps the dialog open until the address is one it accepts.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget)

from dnd_engine.errors import DnDError

from ..settings import AppSettings


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.ray_edit = QLineEdit(settings.ray_address())
        self.ray_edit.setPlaceholderText("empty: extract on this computer")
        self.ray_edit.setToolTip("A Ray cluster's head as HOST:PORT (from `ray start --head`), auto for the cluster "
                                 "RAY_ADDRESS names, or local for a private Ray instance on this computer. Slides "
                                 "and the project must be on a folder every node of the cluster sees.")
        self.ray_edit.setMinimumWidth(320)
        help_text = QLabel("Feature extraction jobs run on this Ray cluster (needs dnd-studio[cluster]); "
                           "per-slide progress and failures show in the Jobs panel as for a local job.")
        help_text.setWordWrap(True)
        self.error_label = QLabel("")
        self.error_label.setObjectName("error")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        form = QFormLayout()
        form.addRow("Cluster (Ray) address", self.ray_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(help_text)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)
        self.setMinimumWidth(560)

    def accept(self) -> None:
        """Store the address if the engine accepts it; otherwise say why and stay open."""
        address = self.ray_edit.text().strip()
        if address:
            from dnd_engine.features.ray_runner import check_address
            try:
                address = check_address(address)
            except DnDError as exc:
                self.error_label.setText(str(exc))
                self.error_label.show()
                self.adjustSize()          # room for the wrapped message
                return
        self.settings.set_ray_address(address)
        super().accept()
