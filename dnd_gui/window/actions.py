"""The window's actions, declared as data: what each is called, where it sits, what it does, and the state it needs.

Before, a hand-kept ``_refresh_actions`` set every action's enabled flag and had to be called after each change
somewhere in the window; a forgotten call left an action enabled that could not work. Here each action carries
its rule — a function of :class:`WindowState`, as QuPath's ``createProjectAction(project -> …)`` and napari's
``Action(enablement=…, toggled=…)`` do — and :meth:`WindowActions.sync` applies every rule whenever a part of the
window reports that its state changed. Checkable actions also take their check state from the state (the heatmap
toggle follows the one heatmap style, never a checkbox that echoes it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu

from ..viewer import MAGNIFICATION_PRESETS

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow

SK = QKeySequence.StandardKey


@dataclass(frozen=True)
class WindowState:
    """What the actions' rules may look at: a snapshot, so a rule is a plain function and testable alone."""

    has_slide: bool = False
    has_model: bool = False
    has_heatmap: bool = False
    heatmap_visible: bool = True
    has_predictions: bool = False
    has_project: bool = False
    resumable: bool = False
    presets: frozenset = frozenset()    # magnifications the open slide can show
    minimap: bool = True
    scale_bar: bool = True
    theme: str = ""


def window_state(win: "MainWindow") -> WindowState:
    session = win.projects.session
    return WindowState(
        has_slide=win.view.has_slide(), has_model=win.model is not None,
        has_heatmap=win.view.has_slide() and win.heatmap.layer is not None,
        heatmap_visible=win.heatmap.style.visible, has_predictions=bool(win.predictions.model.rows),
        has_project=session is not None, resumable=session is not None and bool(session.resumable()),
        presets=frozenset(win.view.available_presets()), minimap=win.view.minimap.wanted,
        scale_bar=win.view.scale_bar.wanted, theme=getattr(win, "theme", ""))


Rule = Callable[[WindowState], bool]
Callback = Callable[["MainWindow", bool], None]   # (window, checked)


@dataclass(frozen=True)
class ActionSpec:
    """One action: ``id`` is also the window attribute that holds the ``QAction`` (``open_action`` …)."""

    id: str
    title: str
    callback: Callback
    shortcut: object = None             # a QKeySequence, a standard key, or None
    tip: str = ""
    enabled: Optional[Rule] = None      # None: always enabled
    checked: Optional[Rule] = None      # given: the action is checkable and shows this
    role: Optional[QAction.MenuRole] = None


def _slide(s: WindowState) -> bool:
    return s.has_slide


def _heatmap(s: WindowState) -> bool:
    return s.has_heatmap


def _project(s: WindowState) -> bool:
    return s.has_project


def _magnification(mag: int, i: int) -> ActionSpec:
    return ActionSpec(f"magnification_{mag}", f"{mag}\u00d7", lambda w, _: w.view.set_magnification(mag),
                      QKeySequence(f"Ctrl+{i}"), enabled=lambda s: mag in s.presets)


def _theme(name: str) -> ActionSpec:
    return ActionSpec(f"theme_{name}", name.title(), lambda w, _: w.set_theme(name),
                      checked=lambda s: s.theme == name)


ACTIONS: Sequence[ActionSpec] = (
    # File
    ActionSpec("open_action", "&Open Slide\u2026", lambda w, _: w.choose_slide(), SK.Open),
    ActionSpec("classify_action", "&Classify Slides\u2026", lambda w, _: w.classification.choose_and_classify(),
               QKeySequence("Ctrl+K"), tip="Choose slides and classify them with the loaded model"),
    ActionSpec("classify_current_action", "Classify &Current Slide", lambda w, _: w.classify_current(),
               QKeySequence("Ctrl+Shift+K"), enabled=lambda s: s.has_slide and s.has_model),
    ActionSpec("load_model_action", "Load &Model\u2026", lambda w, _: w.classification.choose_model(),
               QKeySequence("Ctrl+M")),
    ActionSpec("load_labels_action", "Load &Labels CSV\u2026", lambda w, _: w.classification.choose_labels()),
    ActionSpec("export_png_action", "Export Heatmap as &PNG\u2026", lambda w, _: w.heatmap.choose_export_png(),
               QKeySequence("Ctrl+E"), enabled=_heatmap),
    ActionSpec("export_geojson_action", "Export Heatmap as &GeoJSON\u2026",
               lambda w, _: w.heatmap.choose_export_geojson(), QKeySequence("Ctrl+Shift+E"), enabled=_heatmap),
    ActionSpec("export_csv_action", "Export Predictions &CSV\u2026", lambda w, _: w.heatmap.choose_export_csv(),
               enabled=lambda s: s.has_predictions),
    ActionSpec("close_action", "Close Slide", lambda w, _: w.close_slide(), SK.Close, enabled=_slide),
    ActionSpec("settings_action", "&Settings\u2026", lambda w, _: w.open_settings(), SK.Preferences,
               tip="Where feature extraction jobs run (a Ray cluster)", role=QAction.MenuRole.PreferencesRole),
    ActionSpec("quit_action", "&Quit", lambda w, _: w.close(), QKeySequence("Ctrl+Q"),
               role=QAction.MenuRole.QuitRole),
    # Project
    ActionSpec("new_project_action", "&New Project\u2026", lambda w, _: w.new_project(),
               QKeySequence("Ctrl+Shift+N"), tip="Create a project folder for slides, labels, features and runs"),
    ActionSpec("open_project_action", "&Open Project\u2026", lambda w, _: w.open_project(),
               QKeySequence("Ctrl+Shift+O")),
    ActionSpec("close_project_action", "&Close Project", lambda w, _: w.close_project(), enabled=_project),
    ActionSpec("add_slides_action", "&Add Slides\u2026", lambda w, _: w.slide_actions.choose_files(),
               tip="Link slide files to the open project (or list them, without one)"),
    ActionSpec("add_folder_action", "Add Slide &Folder\u2026", lambda w, _: w.slide_actions.choose_folder(),
               tip="Link every slide of a folder to the open project"),
    ActionSpec("remove_slide_action", "Re&move Slide", lambda w, _: w.slide_actions.remove_current(),
               tip="Take the current slide off the list (and out of the project); the file stays where it is",
               enabled=_slide),
    ActionSpec("train_action", "&Train a Model\u2026", lambda w, _: w.open_wizard(), QKeySequence("Ctrl+T"),
               tip="The training wizard: data, preprocessing, MIL method and D&D settings"),
    ActionSpec("resume_action", "&Resume Interrupted Jobs", lambda w, _: w.resume_jobs(),
               tip="Continue jobs that stopped when the app quit or crashed, from their last checkpoints",
               enabled=lambda s: s.resumable),
    ActionSpec("curves_action", "Show Training &Curves", lambda w, _: w.show_tab(w.curves_scroll)),
    ActionSpec("results_action", "Show R&esults", lambda w, _: w.show_tab(w.results_scroll)),
    # View
    ActionSpec("zoom_in_action", "Zoom &In", lambda w, _: w.view.zoom_in(), SK.ZoomIn),
    ActionSpec("zoom_out_action", "Zoom &Out", lambda w, _: w.view.zoom_out(), SK.ZoomOut),
    ActionSpec("fit_action", "&Fit to Window", lambda w, _: w.view.fit_to_window(), QKeySequence("Ctrl+0")),
    *(_magnification(mag, i) for i, mag in enumerate(MAGNIFICATION_PRESETS, 1)),
    ActionSpec("show_heatmap_action", "Show &Heatmap", lambda w, on: w.heatmap.set_visible(on), QKeySequence("H"),
               checked=lambda s: s.heatmap_visible),
    ActionSpec("minimap_action", "Over&view", lambda w, on: w.toggle_minimap(on), checked=lambda s: s.minimap),
    ActionSpec("scale_bar_action", "&Scale Bar", lambda w, on: w.toggle_scale_bar(on), checked=lambda s: s.scale_bar),
    *(_theme(name) for name in ("light", "dark")),
    # Help
    ActionSpec("about_model_action", "About the &Model", lambda w, _: w.about_model()),
    ActionSpec("about_action", "&About D&&D Studio", lambda w, _: w.about(),  # a single "&" is a mnemonic
               role=QAction.MenuRole.AboutRole),
)

# Menus in order: an action id, None (a separator), "menu:<name>" (a submenu the window fills), or
# ("&Title", [entries]) for a fixed submenu.
MENUS = (
    ("&File", ["open_action", None, "menu:recent_menu", "classify_action", "classify_current_action",
               "load_model_action", "load_labels_action", None, "export_png_action", "export_geojson_action",
               "export_csv_action", None, "close_action", "settings_action", "quit_action"]),
    ("&Project", ["new_project_action", "open_project_action", None, "menu:recent_projects_menu",
                  "close_project_action", None, "add_slides_action", "add_folder_action", "remove_slide_action",
                  None, "train_action", "resume_action", None, "curves_action", "results_action"]),
    ("&View", ["zoom_in_action", "zoom_out_action", "fit_action",
               ("&Magnification", [f"magnification_{m}" for m in MAGNIFICATION_PRESETS]), None,
               "show_heatmap_action", "minimap_action", "scale_bar_action", None,
               ("&Theme", ["theme_light", "theme_dark"]), None, "menu:docks"]),
    ("&Help", ["about_model_action", "about_action"]),
)

SUBMENU_TITLES = {"recent_menu": "Open &Recent", "recent_projects_menu": "Open &Recent Project"}


class WindowActions:
    """Builds the ``QAction`` of every :data:`ACTIONS` entry on the window (as ``win.<id>``), lays out the menus
    and keeps enabled and checked states equal to the rules: :meth:`sync` is connected to every signal that
    reports a change of the state the rules read."""

    def __init__(self, win: "MainWindow", specs: Sequence[ActionSpec] = ACTIONS):
        self.win = win
        self.specs = list(specs)
        self.actions: dict[str, QAction] = {}
        for spec in self.specs:
            action = QAction(spec.title, win)
            if spec.shortcut is not None:
                action.setShortcut(spec.shortcut)
            if spec.tip:
                action.setStatusTip(spec.tip)
            if spec.role is not None:
                action.setMenuRole(spec.role)
            action.setCheckable(spec.checked is not None)
            action.triggered.connect(lambda checked=False, s=spec: s.callback(win, checked))
            win.addAction(action)   # shortcuts work even with the menu bar hidden
            setattr(win, spec.id, action)
            self.actions[spec.id] = action
        self.theme_group = QActionGroup(win)
        self.theme_actions = {name[6:]: self.actions[name] for name in ("theme_light", "theme_dark")}
        for action in self.theme_actions.values():
            self.theme_group.addAction(action)
        self.magnification_actions = {int(i.split("_")[1]): a for i, a in self.actions.items()
                                      if i.startswith("magnification_")}
        self.menus: dict[str, QMenu] = {}

    def build_menus(self, docks: Sequence = ()) -> None:
        """The menu bar from :data:`MENUS`; ``menu:`` submenus become ``win.<name>`` for the window to fill."""
        for title, entries in MENUS:
            menu = self.win.menuBar().addMenu(title)
            self.menus[title.replace("&", "").lower()] = menu
            self._fill(menu, entries, docks)

    def _fill(self, menu: QMenu, entries, docks) -> None:
        for entry in entries:
            if entry is None:
                menu.addSeparator()
            elif isinstance(entry, tuple):
                self._fill(menu.addMenu(entry[0]), entry[1], docks)
            elif entry == "menu:docks":
                for dock in docks:
                    menu.addAction(dock.toggleViewAction())
            elif entry.startswith("menu:"):
                name = entry[5:]
                setattr(self.win, name, menu.addMenu(SUBMENU_TITLES[name]))
            else:
                menu.addAction(self.actions[entry])

    def sync(self, *_args) -> WindowState:
        """Apply every rule to the window's state now; returns the state it used."""
        state = window_state(self.win)
        for spec in self.specs:
            action = self.actions[spec.id]
            if spec.enabled is not None:
                action.setEnabled(bool(spec.enabled(state)))
            if spec.checked is not None and action.isChecked() != bool(spec.checked(state)):
                action.setChecked(bool(spec.checked(state)))   # setChecked does not emit ``triggered``
        return state


__all__ = ["ACTIONS", "MENUS", "ActionSpec", "WindowActions", "WindowState", "window_state"]
