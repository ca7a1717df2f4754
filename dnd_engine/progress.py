"""The progress/cancel protocol shared by every long engine operation (CLI, GUI workers and tests)."""

from __future__ import annotations

from typing import Callable, Optional

from .errors import Cancelled

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]


def no_progress(done: int, total: int, message: str = "") -> None:
    """Default callback: ignore progress."""


def never_cancelled() -> bool:
    return False


def check_cancelled(cancelled: Optional[CancelFn]) -> None:
    """Raise :class:`Cancelled` when the caller asked to stop; call between units of work."""
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled by the user")
