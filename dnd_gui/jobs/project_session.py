"""The open project inside the app: its manifest, its job book, and the background jobs it launched.

Every launched job is written to the project's job book *before* it is queued, and its record follows the job
(running → done/failed/cancelled). If the app dies, the record still says "running"; reopening the project marks it
interrupted and :meth:`ProjectSession.resume` queues it again from that record alone — the engine continues from
its checkpoints; a job cancelled or failed in this session is queued again in its own row (Resume, Retry).
Jobs launched together form a group, but only the extraction is something the others need: when it fails or is
cancelled, the group's training jobs are not started (they cannot train without its features). Training jobs are
independent of each other: cancelling one stops exactly that one, and the next one in the queue runs.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Dict, List, Optional

from PySide6.QtCore import QObject, Signal

from dnd_engine.errors import Cancelled, DnDError
from dnd_engine.eta import dnd_work_for
from dnd_engine.project import (ExtractionPlan, JobBook, JobRecord, Project, ProjectError, TrainingPlan,
                                run_extraction, run_training)
from dnd_engine.project.job_book import JOBS

from .background import READER_START    # never ``fork`` a process that runs Qt threads
from .queue import Job, JobContext, JobQueue, JobState

PREREQUISITE_KINDS = ("extract",)   # kinds whose failure leaves the rest of their launch nothing to work on



def _extract_fn(project: Project, plan: ExtractionPlan):
    def fn(ctx: JobContext):
        return str(run_extraction(project, plan, progress=ctx.progress, cancelled=ctx.cancelled, log=ctx.log,
                                  mp_context=READER_START))
    return fn


def _train_fn(project: Project, plan: TrainingPlan, method: str):
    def fn(ctx: JobContext):
        result = run_training(project, plan, method, progress=ctx.progress, cancelled=ctx.cancelled,
                              on_epoch=ctx.epoch, log=ctx.log)
        return str(result.out_dir)
    return fn


class ProjectSession(QObject):
    changed = Signal()              # the manifest changed (features, runs, model)
    epoch = Signal(object)          # a training epoch record from any of this project's jobs
    run_finished = Signal(str)      # a training run folder that just finished
    job_submitted = Signal(object)  # Job
    train_started = Signal(str, str)  # run folder, title: a training job began (or resumed)

    def __init__(self, project: Project, queue: JobQueue, parent: Optional[QObject] = None,
                 book: Optional[JobBook] = None):
        """``book``: the project's job book, read beforehand, so that a project whose ``jobs.json`` is broken
        fails before the open project is closed."""
        super().__init__(parent)
        self.project = project
        self.queue = queue
        self.book = book if book is not None else JobBook(project)
        self.jobs: Dict[str, Job] = {}   # record id → its job in this session
        self._broken_groups: set = set()
        self._curves_job: Optional[Job] = None   # the training job whose epochs the curves show

    # --- launching ---------------------------------------------------------------------------------------
    def launch(self, extraction: Optional[ExtractionPlan], training: TrainingPlan,
               ray_address: str = "") -> List[Job]:
        """Queue the extraction (if any) and one cross-validated D&D run per method. ``ray_address``: the Ray
        cluster of the app's Settings; the job's record keeps it, so a resumed job goes to the same cluster."""
        if extraction is not None and ray_address:
            extraction = replace(extraction, ray_address=ray_address)
        if extraction is not None:
            extraction.validate()
        training.validate()
        group = uuid.uuid4().hex[:8]
        records: List[JobRecord] = []
        if extraction is not None:
            records.append(self.book.add("extract", f"Extract features ({extraction.extractor})",
                                         {"extraction": extraction.to_dict(), "group": group}))
        for method in training.methods:
            records.append(self.book.add("train", f"Train {method} + D&D ({training.name})",
                                         {"training": training.to_dict(), "method": method, "group": group}))
        return [self._submit(r) for r in records]

    def _plan(self, rec: JobRecord):
        """The checked plan a record is run from (and, for training, its method). The job book checked the
        types on load; a record may still lack its settings or hold values the plan refuses (a hand-edited
        ``jobs.json``): then the job fails in its row with this message, and nothing runs."""
        key = "extraction" if rec.kind == "extract" else "training"
        settings = rec.spec.get(key)
        if not isinstance(settings, dict):
            raise ProjectError(f"{rec.id} in {JOBS} keeps no {key} settings; launch it again from the wizard")
        try:
            if rec.kind == "extract":
                return ExtractionPlan.from_dict(settings).validate(), None
            plan, method = TrainingPlan.from_dict(settings).validate(), str(rec.spec.get("method", ""))
        except DnDError as exc:
            raise ProjectError(f"{rec.id} in {JOBS}: {exc}") from None
        if method not in plan.methods:
            raise ProjectError(f"{rec.id} in {JOBS}: method {method!r} is not one of its plan's {plan.methods}")
        return plan, method

    def _job_fn(self, rec: JobRecord):
        if rec.kind not in ("extract", "train"):
            raise ValueError(f"unknown job kind {rec.kind!r}")

        def fn(ctx: JobContext):
            plan, method = self._plan(rec)   # on the worker: a record that cannot run fails in its row
            if rec.kind == "extract":
                return _extract_fn(self.project, plan)(ctx)
            return _train_fn(self.project, plan, method)(ctx)
        group = str(rec.spec.get("group", ""))
        prerequisite = rec.kind in PREREQUISITE_KINDS

        def guarded(ctx: JobContext):
            # decided on the worker thread: the next job of the group starts there before the GUI thread hears
            # that the extraction before it failed
            if group and not prerequisite and group in self._broken_groups:
                raise Cancelled("not started: the feature extraction it needs did not finish")
            try:
                return fn(ctx)
            except BaseException:
                if group and prerequisite:
                    self._broken_groups.add(group)
                raise
        return guarded

    def _work(self, rec: JobRecord):
        """The stages and epochs a training job has ahead of it, for its time-left estimate."""
        if rec.kind != "train":
            return None
        try:
            plan, method = self._plan(rec)
            return dnd_work_for(plan.dnd_config(method), plan.folds)
        except Exception:   # an estimate is never a reason not to run the job
            return None

    def _submit(self, rec: JobRecord) -> Job:
        job = Job(rec.title, self._job_fn(rec), kind=rec.kind, work=self._work(rec),
                  meta={"record": rec.id, "group": rec.spec.get("group", ""), "project": str(self.project.root)})
        self.book.mark(rec.id, "queued", "waiting")
        self.jobs[rec.id] = job
        job.retry_hook = lambda j=job: self.retry(j)
        job.changed.connect(lambda j=job: self._on_changed(j))
        job.finished.connect(self._on_finished)
        if rec.kind == "train":
            job.epoch.connect(lambda record, j=job: self._on_epoch(j, record))
        self.queue.submit(job)
        self.job_submitted.emit(job)
        return job

    def _on_epoch(self, job: Job, record: dict) -> None:
        # the curves show one run: a finished job's last records, handed out after the next job started,
        # must not land in the next job's curves
        if job is self._curves_job:
            self.epoch.emit(record)

    def _on_changed(self, job: Job) -> None:
        rec = self.book.get(job.meta["record"])
        if job.state == JobState.QUEUED and rec.state not in ("queued", "running"):
            self.book.mark(rec.id, "queued", "waiting")   # queued again in its row (Retry, Resume)
        elif job.state == JobState.RUNNING and rec.state != "running":
            self.book.mark(rec.id, "running", job.message)
            if rec.kind == "train":
                self._curves_job = job
                try:
                    plan, method = self._plan(rec)
                except DnDError:
                    return   # the job itself fails with the reason, in its row
                self.train_started.emit(str(plan.run_dir(self.project, method)), rec.title)

    def _on_finished(self, job: Job) -> None:
        rec_id = job.meta["record"]
        message = job.error if job.state == JobState.FAILED else job.message
        self.book.mark(rec_id, job.state.value, message)
        if job.state != JobState.DONE and job.kind in PREREQUISITE_KINDS:
            self._cancel_rest_of_group(job)
        if job.state == JobState.DONE:
            self.changed.emit()
            if job.kind == "train" and job.value:
                self.run_finished.emit(str(job.value))

    def _cancel_rest_of_group(self, job: Job) -> None:
        group = job.meta.get("group")
        if not group:
            return
        for other in self.jobs.values():
            if other is not job and other.meta.get("group") == group and other.state == JobState.QUEUED:
                other.cancel("not started: the feature extraction it needs did not finish")

    # --- after a crash -----------------------------------------------------------------------------------
    def interrupted(self) -> List[JobRecord]:
        return self.book.interrupted()

    def resumable(self) -> List[JobRecord]:
        """Jobs that stopped before finishing and may continue: interrupted by a crash, or cancelled (in this
        session or an earlier one), and not queued again already."""
        return [r for r in self.book.records if r.state in ("interrupted", "cancelled")
                and not (r.id in self.jobs and not self.jobs[r.id].state.finished)]

    def resume(self, records: Optional[List[JobRecord]] = None) -> List[Job]:
        """Queue stopped jobs again (default: :meth:`resumable`); each continues from its checkpoints. A job
        that already has a row in this session runs again in that row."""
        todo = self.resumable() if records is None else [r for r in records if r.resumable]
        self._broken_groups -= {str(r.spec.get("group", "")) for r in todo}
        out = []
        for r in todo:
            job = self.jobs.get(r.id)
            if job is not None and not job.state.finished:
                continue
            out.append(self.queue.requeue(job) if job is not None and job in self.queue.jobs else self._submit(r))
        return out

    def retry(self, job: Job) -> List[Job]:
        """Retry or Resume on a row: the job again, and after an extraction, the training jobs of its launch
        that were not started because of it."""
        rec = self.book.get(job.meta["record"])
        todo = [rec]
        if rec.kind in PREREQUISITE_KINDS and job.meta.get("group"):
            todo += [r for r in self.book.records if r is not rec and r.resumable
                     and r.spec.get("group") == job.meta["group"] and r.kind not in PREREQUISITE_KINDS]
        return self.resume(todo)

    def active_jobs(self) -> List[Job]:
        return [j for j in self.jobs.values() if not j.state.finished]

    def set_model(self, path) -> None:
        self.project.set_model(path)
        self.project.save()
        self.changed.emit()


__all__ = ["ProjectSession"]
