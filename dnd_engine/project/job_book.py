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
from ..lifeline import pid_alive
from .manifest import Project, ProjectError, now_iso
from .schema import Field, Invalid, check_document, dataclass_fields, integer, one_of, split_record, text
from .plans import ExtractionPlan, TrainingPlan

JOBS = "jobs.json"
STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
KINDS = ("extract", "train")


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
    # keys of the record this version does not know: kept on save, never used
    unknown_keys: Dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> Dict[str, object]:
        data = asdict(self)
        extra = data.pop("unknown_keys")
        return {**extra, **data}

    @property
    def resumable(self) -> bool:
        return self.state in ("interrupted", "failed", "cancelled")


_RECORD_FIELDS = {
    "id": Field(text("a job id (text)", empty=False), required=True),
    "kind": Field(one_of(KINDS), required=True),
    "title": Field(text()),
    "spec": Field(lambda v, w: v, required=True),   # checked by _check_spec, which knows the kind
    "state": Field(one_of(STATES)),
    "message": Field(text()),
    "created": Field(text("a date (text)")),
    "updated": Field(text("a date (text)")),
    "session": Field(text()),
    "pid": Field(integer(0, 2**31 - 1, what="a process id (a whole number \u2265 0)")),
    "attempts": Field(integer(0)),
}
_SPEC_FIELDS = {"group": Field(text()), "method": Field(text("a method name (text)", empty=False))}
_PLANS = {"extract": ("extraction", ExtractionPlan), "train": ("training", TrainingPlan)}


def _check_spec(kind: str, spec: object, where: str) -> None:
    """The settings a job is resumed from. A record may lack them (it is listed, and fails with a message if
    resumed); what is there must rebuild its plan: right types, no unknown settings."""
    split_record(spec, where, _SPEC_FIELDS, what="an object (the job's settings)")
    key, plan = _PLANS[kind]
    if key in spec:
        split_record(spec[key], f"{where}.{key}", dataclass_fields(plan), unknown="refuse",
                     what=f"an object (the {key} settings)")


def _check_records(data: object, where: str) -> List[JobRecord]:
    if not isinstance(data, dict):
        raise Invalid(where, "an object with a 'jobs' list", data)
    jobs = data.get("jobs", [])
    if not isinstance(jobs, list):
        raise Invalid("jobs", "a list of job records", jobs)
    records, seen = [], set()
    for i, item in enumerate(jobs):
        at = f"jobs[{i}]"
        known, extra = split_record(item, at, _RECORD_FIELDS, what="an object (a job record)")
        _check_spec(known["kind"], known["spec"], f"{at}.spec")
        if known["id"] in seen:
            raise Invalid(f"{at}.id", "unique", known["id"], f"another job has the id {known['id']!r}")
        seen.add(known["id"])
        known.setdefault("title", known["kind"])
        records.append(JobRecord(**known, unknown_keys=extra))
    return records


class JobBook:
    """Thread-safe: the GUI thread adds jobs while a worker thread marks the running one."""

    def __init__(self, project: Project):
        self.project = project
        self.path = project.root / JOBS
        self.session = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._unknown: Dict[str, object] = {}   # top-level keys of jobs.json this version does not know
        self.records: List[JobRecord] = self._load()
        self._recover()

    def _load(self) -> List[JobRecord]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{self.path}: unreadable job list ({exc})") from None
        records = check_document(data, _check_records, JOBS, ProjectError)
        self._unknown = {k: v for k, v in data.items() if k != "jobs"}
        return records

    def _save(self) -> None:
        write_json_atomic(self.path, {**self._unknown, "jobs": [r.to_dict() for r in self.records]})

    def _recover(self) -> None:
        changed = False
        for r in self.records:
            if r.state in ACTIVE and r.session != self.session and (r.pid == os.getpid() or r.pid <= 0 or not pid_alive(r.pid)):
                r.state, r.message, r.updated = "interrupted", f"interrupted while {r.state}", now_iso()
                changed = True
        if changed:
            self._save()

    # --- records -----------------------------------------------------------------------------------------
    def add(self, kind: str, title: str, spec: Dict[str, object]) -> JobRecord:
        with self._lock:
            n = 1 + max((int(r.id.split("-")[-1]) for r in self.records if r.id.split("-")[-1].isdecimal()),
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
