"""The wizard's last page: everything chosen, in words, and how much work it is; problems here block the launch.

The problems are cheap to find (the engine's data check and the plans' own validation) and are found at once.
The amount of work is not: ``estimate_work`` opens every slide to count its patches, so it runs on a
:class:`LatestOnly` worker while the page says "estimating…"; Launch waits for it. An estimate is kept while
the choices it was made for stay the same, so going Back and Next again does not start over.
"""

from __future__ import annotations

import html
from typing import List, Optional

from PySide6.QtGui import QFont
from PySide6.QtWidgets import QTextBrowser, QVBoxLayout, QWizardPage

from dnd_engine.errors import DnDError
from dnd_engine.project import Project, WorkEstimate, estimate_work
from dnd_engine.text import one_line

from ..jobs.background import lower_this_thread
from ..workers import LatestOnly
from .widgets import AMBER, RED, note, show_lines


def _estimate(project, extraction, training) -> WorkEstimate:
    """On the worker: the engine's estimate (opens every slide), at the lower priority workers run at."""
    lower_this_thread()
    return estimate_work(project, extraction, training)


class ReviewPage(QWizardPage):
    """Everything chosen, in words, and how much work it is; problems found at this point block the launch."""

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.setTitle("Review")
        self.setSubTitle("Check the settings and the amount of work, then Launch: the jobs are queued and run "
                         "one after another.")
        self.estimate: Optional[WorkEstimate] = None
        self.estimating = False
        self._estimated_for: Optional[tuple] = None     # the choices self.estimate (or the running one) is for
        self._problems: List[str] = []
        self._estimator = LatestOnly()                  # no Qt parent: see PreprocessPage
        self.destroyed.connect(self._estimator.cancel)
        self.estimate_label = note()
        f = QFont(self.estimate_label.font())
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.estimate_label.setFont(f)
        self.estimate_label.setToolTip("Counts, not times: slides, patches (exact for existing features, else "
                                       "an upper bound), cross-validation runs, models and epochs")
        self.summary = QTextBrowser()
        self.summary.setOpenLinks(False)
        self.summary.setToolTip("Every setting of this launch")
        self.warnings_label = note(AMBER)
        self.warnings_label.setToolTip("The run will train, but these numbers will be noise")
        self.problems_label = note(RED)
        self.problems_label.setToolTip("What must be fixed (go Back) before launching")
        self.error_label = note(RED)
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
        """Re-check everything now; start an estimate unless one for these same choices is there or running."""
        wiz = self.wizard()
        problems = wiz.problems()
        if problems:
            self._estimator.cancel()
            self.estimate, self.estimating, self._estimated_for = None, False, None
        else:
            choices = wiz.choices()
            if choices != self._estimated_for:
                self._start_estimate(wiz, choices)
        self._problems = problems
        self.summary.setHtml(wiz.summary_html())
        self._show()

    def _start_estimate(self, wiz, choices: tuple) -> None:
        extraction, training = wiz.plans()
        self.estimate, self.estimating, self._estimated_for = None, True, choices
        self._estimator.submit(_estimate, wiz.preview_project(), extraction, training,
                               on_done=self._estimate_done, on_error=self._estimate_failed)

    def _estimate_done(self, estimate: WorkEstimate) -> None:
        self.estimate, self.estimating = estimate, False
        self._show()

    def _estimate_failed(self, exc: BaseException) -> None:
        self.estimating, self._estimated_for = False, None
        self._problems.append(str(exc) if isinstance(exc, DnDError) else f"cannot estimate: {one_line(exc, None)}")
        self._show()

    def _show(self) -> None:
        if self.estimate is not None:
            lines = self.estimate.lines()
            self.estimate_label.setText("<b>Work:</b> " + html.escape(lines[0]) + "<br>"
                                        + "<br>".join(html.escape(s) for s in lines[1:]))
        elif self.estimating:
            self.estimate_label.setText("<b>Work:</b> estimating… (counting the patches of every slide)")
        else:
            self.estimate_label.setText("<b>Work:</b> cannot be estimated until the problems below are fixed")
        show_lines(self.warnings_label, self.estimate.warnings if self.estimate is not None else [])
        show_lines(self.problems_label, self._problems)
        self.completeChanged.emit()

    def problems(self) -> List[str]:
        return list(self._problems)

    def show_error(self, message: str) -> None:
        self.error_label.setText(f"Could not launch: {message}")
        self.error_label.show()

    def isComplete(self) -> bool:  # noqa: N802
        return not self._problems and self.estimate is not None
