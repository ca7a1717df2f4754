"""The progress/cancel protocol shared by every long engine operation (CLI, GUI workers and tests), and the outcome
of a batch whose items may fail one by one (how a job that went on past failures really ended)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Tuple

from .errors import Cancelled

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]


def no_progress(done: int, total: int, message: str = "") -> None:
    """Default callback: ignore progress."""


def check_cancelled(cancelled: Optional[CancelFn]) -> None:
    """Raise :class:`Cancelled` when the caller asked to stop; call between units of work."""
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled by the user")


@dataclass(frozen=True)
class BatchOutcome:
    """How a batch of items (slides to classify) ended, decided from each item's own result.

    A job that catches per-item errors and goes on must not end as a plain success when items failed: every item
    failed means the job failed (with the reason), some failed means done with failures, to be shown as such.
    """
    total: int
    failures: Tuple[Tuple[str, str], ...] = ()   # (item name, one-line reason)

    @property
    def state(self) -> str:
        """``done``, ``partial`` (some items failed) or ``failed`` (all failed)."""
        if not self.failures:
            return "done"
        return "failed" if len(self.failures) >= self.total else "partial"

    def summary(self) -> str:
        """A short phrase for a status line: ``""``, ``"1 of 3 failed"``, ``"all 2 failed"``."""
        n = len(self.failures)
        if not n:
            return ""
        if n >= self.total:
            return "failed" if self.total == 1 else f"all {self.total} failed"
        return f"{n} of {self.total} failed"

    def reason(self) -> str:
        """One line naming the first failure and its reason, and how many others failed."""
        if not self.failures:
            return ""
        name, why = self.failures[0]
        more = len(self.failures) - 1
        named = re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", why)   # engine messages often name the file
        first = why if named else f"{name}: {why}"
        return first + (f" (and {more} more failed)" if more else "")


def batch_outcome(items: Iterable[Tuple[str, str]]) -> BatchOutcome:
    """From ``(name, error)`` pairs, ``error`` empty for an item that succeeded."""
    items = list(items)
    failures = tuple((str(name), _one_line(err)) for name, err in items if err)
    return BatchOutcome(len(items), failures)


def _one_line(text: str) -> str:
    lines = [s.strip() for s in str(text).strip().splitlines() if s.strip()]
    return lines[0] if lines else "failed"
