"""What the app remembers between runs (QSettings): recent slides and projects, theme, window layout, last folders,
the magnification the user set for slides whose files lack it (when no project is open), and the Ray cluster
extraction jobs are sent to.

One small typed wrapper, so keys are spelled once and tests can point it at a throw-away INI file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QByteArray, QSettings

from dnd_engine.slides.overrides import MagnificationOverride, OverrideTable

MAX_RECENT = 10
THEMES = ("light", "dark")


class AppSettings:
    def __init__(self, settings: Optional[QSettings] = None):
        self.qsettings = settings if settings is not None else QSettings()

    # --- recent slides -----------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.qsettings.value("recent_files", [])
        if isinstance(value, str):  # QSettings returns a bare string for a one-item list in INI files
            value = [value]
        return [str(v) for v in (value or []) if v]

    def add_recent(self, path: str) -> list[str]:
        path = str(Path(path).resolve())
        items = [path] + [p for p in self.recent_files() if p != path]
        self.qsettings.setValue("recent_files", items[:MAX_RECENT])
        return items[:MAX_RECENT]

    def clear_recent(self) -> None:
        self.qsettings.setValue("recent_files", [])

    # --- recent projects ---------------------------------------------------------------------------------
    def recent_projects(self) -> list[str]:
        value = self.qsettings.value("recent_projects", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or []) if v]

    def add_recent_project(self, path: str) -> list[str]:
        path = str(Path(path).resolve())
        items = [path] + [p for p in self.recent_projects() if p != path]
        self.qsettings.setValue("recent_projects", items[:MAX_RECENT])
        return items[:MAX_RECENT]

    # --- appearance and layout ---------------------------------------------------------------------------
    def theme(self) -> str:
        value = str(self.qsettings.value("theme", "dark"))
        return value if value in THEMES else "dark"

    def set_theme(self, theme: str) -> None:
        self.qsettings.setValue("theme", theme)

    def window_state(self) -> tuple[Optional[QByteArray], Optional[QByteArray]]:
        geometry, state = self.qsettings.value("window/geometry"), self.qsettings.value("window/state")
        return (geometry if isinstance(geometry, QByteArray) else None,
                state if isinstance(state, QByteArray) else None)

    def set_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    def flag(self, key: str, default: bool) -> bool:
        value = self.qsettings.value(key, default)
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")

    def set_flag(self, key: str, value: bool) -> None:
        self.qsettings.setValue(key, bool(value))

    # --- slides' magnification set by the user (when no project is open) --------------------------------
    def slide_overrides(self) -> OverrideTable:
        """The objective power / pixel size the user set per slide, keyed by the file's identity (not its name);
        a damaged value reads as none."""
        try:
            entries = json.loads(str(self.qsettings.value("slides/magnification_overrides", "{}") or "{}"))
        except ValueError:
            entries = {}
        return OverrideTable(entries if isinstance(entries, dict) else {})

    def set_slide_override(self, path: str, override: Optional[MagnificationOverride]) -> None:
        """Remember (None: forget) what the user set for the slide at ``path``; written at once."""
        table = self.slide_overrides()
        table.set(path, override)
        self.qsettings.setValue("slides/magnification_overrides", json.dumps(table.entries, sort_keys=True))
        self.qsettings.sync()

    # --- where extraction jobs run ----------------------------------------------------------------------------
    def ray_address(self) -> str:
        """The Ray cluster project extractions are sent to (auto, local or HOST:PORT); "": this computer."""
        return str(self.qsettings.value("cluster/ray_address", "") or "").strip()

    def set_ray_address(self, address: str) -> None:
        self.qsettings.setValue("cluster/ray_address", str(address or "").strip())
        self.qsettings.sync()

    # --- folders -----------------------------------------------------------------------------------------
    def last_dir(self, kind: str) -> str:
        return str(self.qsettings.value(f"dirs/{kind}", ""))

    def set_last_dir(self, kind: str, path: str) -> None:
        self.qsettings.setValue(f"dirs/{kind}", str(Path(path).parent if Path(path).is_file() else path))

    def sync(self) -> None:
        self.qsettings.sync()
