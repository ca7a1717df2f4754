"""The open project inside the app: its manifest, its job book, and the background jobs it launched.

Every launched job is written to the project's job book *before* it is queued, and its record follows the job
(running → done/failed/cancelled). If the app dies, the record still says "running"; reopening the project marks it
interrupted and :meth:`ProjectSession.resume` queues it again from that record alone — the engine continues from
its checkpoints. Jobs launched together form a group: when one fails or is cancelled, the queued jobs after it in
its group are cancelled too (training cannot start without the features its extraction was to write).
"""

from __future__ import annotations

import sys
import uuid
from typing import Dict, List, Optional

from PySide6.QtCore import QObject, Signal

from dnd_engine.errors import Cancelled
from dnd_engine.project import (ExtractionPlan, JobBook, JobRecord, Project, TrainingPlan, run_extraction,
                                run_training)

from .jobs import Job, JobContext, JobQueue, JobState

# reading processes of an extraction started from the app: never ``fork`` a process that runs Qt threads
READER_START = "spawn" if getattr(sys, "frozen", False) else "forkserver"


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

    def __init__(self, project: Project, queue: JobQueue, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.project = project
        self.queue = queue
        self.book = JobBook(project)
        self.jobs: Dict[str, Job] = {}   # record id → its job in this session
        self._broken_groups: set = set()

    # --- launching ---------------------------------------------------------------------------------------
    def launch(self, extraction: Optional[ExtractionPlan], training: TrainingPlan) -> List[Job]:
        """Queue the extraction (if any) and one cross-validated D&D run per method."""
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

    def _job_fn(self, rec: JobRecord):
        if rec.kind == "extract":
            fn = _extract_fn(self.project, ExtractionPlan.from_dict(rec.spec["extraction"]))
        elif rec.kind == "train":
            fn = _train_fn(self.project, TrainingPlan.from_dict(rec.spec["training"]), str(rec.spec["method"]))
        else:
            raise ValueError(f"unknown job kind {rec.kind!r}")
        group = str(rec.spec.get("group", ""))

        def guarded(ctx: JobContext):
            # decided on the worker thread: the next job of the group starts there before the GUI thread hears
            # that the one before it failed
            if group and group in self._broken_groups:
                raise Cancelled("not started: an earlier job of the same launch did not finish")
            try:
                return fn(ctx)
            except BaseException:
                if group:
                    self._broken_groups.add(group)
                raise
        return guarded

    def _submit(self, rec: JobRecord) -> Job:
        job = Job(rec.title, self._job_fn(rec), kind=rec.kind,
                  meta={"record": rec.id, "group": rec.spec.get("group", ""), "project": str(self.project.root)})
        self.book.mark(rec.id, "queued", "waiting")
        self.jobs[rec.id] = job
        job.changed.connect(lambda j=job: self._on_changed(j))
        job.finished.connect(self._on_finished)
        if rec.kind == "train":
            job.epoch.connect(self.epoch)
        self.queue.submit(job)
        self.job_submitted.emit(job)
        return job

    def _on_changed(self, job: Job) -> None:
        rec = self.book.get(job.meta["record"])
        if job.state == JobState.RUNNING and rec.state != "running":
            self.book.mark(rec.id, "running", job.message)
            if rec.kind == "train":
                plan = TrainingPlan.from_dict(rec.spec["training"])
                self.train_started.emit(str(plan.run_dir(self.project, str(rec.spec["method"]))), rec.title)

    def _on_finished(self, job: Job) -> None:
        rec_id = job.meta["record"]
        message = job.error if job.state == JobState.FAILED else job.message
        self.book.mark(rec_id, job.state.value, message)
        if job.state != JobState.DONE:
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
                other.cancel()

    # --- after a crash -----------------------------------------------------------------------------------
    def interrupted(self) -> List[JobRecord]:
        return self.book.interrupted()

    def resume(self, records: Optional[List[JobRecord]] = None) -> List[Job]:
        """Queue interrupted (or failed/cancelled) jobs again; each continues from its checkpoints."""
        todo = self.interrupted() if records is None else [r for r in records if r.resumable]
        self._broken_groups -= {str(r.spec.get("group", "")) for r in todo}
        return [self._submit(r) for r in todo]

    def active_jobs(self) -> List[Job]:
        return [j for j in self.jobs.values() if not j.state.finished]

    def set_model(self, path) -> None:
        self.project.set_model(path)
        self.project.save()
        self.changed.emit()


__all__ = ["ProjectSession"]
