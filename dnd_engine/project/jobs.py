"""The project's job book: every launched job, its settings and how it ended, kept on disk.

A job that was queued or running when its process died (a crash, a kill, the power) is found again when the
project is reopened and shown as *interrupted*; running it again continues from the engine's own checkpoints
(extraction skips finished slides, training resumes each stage from its last checkpoint). A job is recognised as
orphaned when its record was written by another session whose process is gone, or by an earlier session of this
very process (a test, or an app that reopened the project).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..atomic import write_json_atomic
from .manifest import Project, ProjectError, now_iso

JOBS = "jobs.json"
STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")


@dataclass
class JobRecord:
    id: str
    kind: str                     # extract | train
    title: str
    spec: Dict[str, object]
    state: str = "queued"
    message: str = ""
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    session: str = ""
    pid: int = 0
    attempts: int = 0

    @property
    def resumable(self) -> bool:
        return self.state in ("interrupted", "failed", "cancelled")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobBook:
    """Thread-safe: the GUI thread adds jobs while a worker thread marks the running one."""

    def __init__(self, project: Project):
        self.project = project
        self.path = project.root / JOBS
        self.session = uuid.uuid4().hex
        self._lock = threading.Lock()
        self.records: List[JobRecord] = self._load()
        self._recover()

    def _load(self) -> List[JobRecord]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [JobRecord(**r) for r in data.get("jobs", [])]
        except (OSError, ValueError, TypeError) as exc:
            raise ProjectError(f"{self.path}: unreadable job list ({exc})") from None

    def _save(self) -> None:
        write_json_atomic(self.path, {"jobs": [asdict(r) for r in self.records]})

    def _recover(self) -> None:
        changed = False
        for r in self.records:
            if r.state in ACTIVE and r.session != self.session and (r.pid == os.getpid() or not _pid_alive(r.pid)):
                r.state, r.message, r.updated = "interrupted", f"interrupted while {r.state}", now_iso()
                changed = True
        if changed:
            self._save()

    # --- records -----------------------------------------------------------------------------------------
    def add(self, kind: str, title: str, spec: Dict[str, object]) -> JobRecord:
        with self._lock:
            n = 1 + max((int(r.id.split("-")[-1]) for r in self.records if r.id.split("-")[-1].isdigit()),
                        default=0)
            rec = JobRecord(id=f"job-{n:04d}", kind=kind, title=title, spec=spec, session=self.session,
                            pid=os.getpid())
            self.records.append(rec)
            self._save()
            return rec

    def get(self, job_id: str) -> JobRecord:
        for r in self.records:
            if r.id == job_id:
                return r
        raise ProjectError(f"no job {job_id!r} in {self.path}")

    def mark(self, job_id: str, state: str, message: str = "") -> JobRecord:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        with self._lock:
            r = self.get(job_id)
            r.state, r.message, r.updated = state, message, now_iso()
            if state in ACTIVE:
                r.session, r.pid = self.session, os.getpid()
            if state == "running":
                r.attempts += 1
            self._save()
            return r

    def interrupted(self) -> List[JobRecord]:
        return [r for r in self.records if r.state == "interrupted"]

    def find(self, state: Optional[str] = None, kind: Optional[str] = None) -> List[JobRecord]:
        return [r for r in self.records if (state is None or r.state == state) and (kind is None or r.kind == kind)]


__all__ = ["ACTIVE", "JOBS", "JobBook", "JobRecord", "STATES"]
