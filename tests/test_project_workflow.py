"""Projects end to end: the manifest, the job book, and the app going from a slides folder and a labels CSV to a
trained, evaluated D&D model — launched, cancelled at every stage, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from dnd_engine.project import (ExtractionPlan, JobBook, Project, ProjectError, TrainingPlan, estimate_work,
                                run_training)
from dnd_engine.errors import DnDError
from dnd_engine.synth import make_synthetic_cohort

from bagtools import make_bags, write_bags
from gui_helpers import Heartbeat

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120_000

# very short training: the workflow is under test here, not the learning
FAST = dict(epochs_base=4, epochs_expert=3, epochs_student=4, folds=2, n_clusters=2, seed=3)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Eight small synthetic slides (two classes) with their labels CSV."""
    root = tmp_path_factory.mktemp("project_cohort")
    return make_synthetic_cohort(root / "cohort", n_slides=8, size=1024, seed=11)


@pytest.fixture
def bag_cohort(tmp_path):
    bags, labels = make_bags(n_per_class=(8, 8), dim=12, n_inst=(6, 14), seed=4)
    csv = write_bags(tmp_path / "bags", bags, labels)
    return tmp_path / "bags", csv


@pytest.fixture
def window(qtbot, tmp_path):
    from dnd_gui.window.main_window import MainWindow
    w = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat), model=None)
    qtbot.addWidget(w)
    w.confirm_quit = lambda n: True
    w.show()
    yield w
    w.shutdown()


def _wait_jobs(qtbot, jobs, timeout=TIMEOUT):
    qtbot.waitUntil(lambda: all(j.state.finished for j in jobs), timeout=timeout)


def _no_temp_files(folder: Path):
    left = [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")) or ".tmp" in p.suffixes]
    assert not left, f"partial files left: {left}"


# --- engine: manifest and job book --------------------------------------------------------------------------
def test_project_manifest_round_trip_and_moves(tmp_path, bag_cohort):
    feats, csv = bag_cohort
    p = Project.create(tmp_path / "p1", name="Breast cohort")
    p.set_features(feats)
    p.set_labels(csv)
    run = p.runs_root() / "r" / "abmil"
    run.mkdir(parents=True)
    p.add_run(run)
    p.save()
    data = json.loads((tmp_path / "p1" / "project.json").read_text())
    assert data["format"] == 1 and data["labels"] == "labels.csv" and data["runs"] == ["runs/r/abmil"]
    assert data["features"] == str(feats.resolve())  # linked, outside the project: absolute
    q = Project.open(tmp_path / "p1")
    assert (q.name, q.features_dir, q.labels_path.read_text()) == ("Breast cohort", feats.resolve(), csv.read_text())
    # paths inside the project are relative: the folder can move
    (tmp_path / "p1").rename(tmp_path / "moved")
    m = Project.open(tmp_path / "moved")
    assert m.run_dirs() == [tmp_path / "moved" / "runs" / "r" / "abmil"] and m.labels_path.is_file()
    with pytest.raises(ProjectError, match="already a project"):
        Project.create(tmp_path / "moved")
    with pytest.raises(ProjectError, match="not a D&D Studio project"):
        Project.open(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "project.json").write_text("{not json")
    with pytest.raises(ProjectError, match="unreadable project manifest"):
        Project.open(tmp_path / "bad")


def test_project_rejects_bad_labels_without_losing_the_old_ones(tmp_path, bag_cohort):
    feats, csv = bag_cohort
    p = Project.create(tmp_path / "p")
    p.set_labels(csv)
    before = p.labels_path.read_text()
    with pytest.raises(DnDError, match="not found"):
        p.set_labels(tmp_path / "nope.csv")
    assert p.labels_path.read_text() == before and p.labels == "labels.csv"
    p.set_features(feats)
    assert p.label_problems(folds=2) == []
    (tmp_path / "dup.csv").write_text("slide_id,label\ns000,class_0\ns000,class_1\nzzz,class_1\n")
    p.set_labels(tmp_path / "dup.csv")
    problems = " | ".join(p.label_problems(folds=2))
    assert "duplicate" in problems.lower() and "zzz" in problems


def test_project_job_book_marks_orphaned_jobs_interrupted(tmp_path):
    p = Project.create(tmp_path / "p")
    book = JobBook(p)
    a = book.add("train", "Train abmil", {"training": TrainingPlan().to_dict(), "method": "abmil"})
    b = book.add("extract", "Extract", {"extraction": ExtractionPlan().to_dict()})
    book.mark(a.id, "running")
    book.mark(b.id, "done")
    again = JobBook(p)  # a new session: the first one is gone
    assert [r.id for r in again.interrupted()] == [a.id]
    assert again.get(b.id).state == "done"
    assert again.get(a.id).resumable and not again.get(b.id).resumable
    # a record of another live process is left alone
    rec = again.add("train", "elsewhere", {})
    data = json.loads((p.root / "jobs.json").read_text())
    for r in data["jobs"]:
        if r["id"] == rec.id:
            r.update(state="running", session="other", pid=os.getppid())
    (p.root / "jobs.json").write_text(json.dumps(data))
    assert JobBook(p).get(rec.id).state == "running"


def test_project_estimate_counts_runs_and_patches(tmp_path, bag_cohort):
    feats, csv = bag_cohort
    p = Project.create(tmp_path / "p")
    p.set_features(feats)
    p.set_labels(csv)
    plan = TrainingPlan(methods=["abmil", "mean"], **FAST)
    est = estimate_work(p, None, plan)
    from dnd_engine.bags import find_bags
    from dnd_engine.bags.store import bag_info
    assert est.patches == sum(bag_info(b).n for b in find_bags(feats).values()) and est.patches_exact
    assert (est.slides, est.runs, est.trainings, est.slides_to_extract) == (16, 4, 4 * 4, 0)
    assert est.epochs == 2 * 2 * (4 + 2 * 3 + 4)


# --- the app ------------------------------------------------------------------------------------------------
def test_project_create_reopen_restores_everything(window, qtbot, tmp_path, bag_cohort):
    feats, csv = bag_cohort
    session = window.new_project(str(tmp_path / "proj"))
    assert session is not None and window.windowTitle().startswith("proj")
    p = session.project
    p.set_features(feats)
    p.set_labels(csv)
    plan = TrainingPlan(name="r1", methods=["mean"], **FAST)
    result = run_training(p, plan, "mean")
    assert window.close_project()
    assert str((tmp_path / "proj").resolve()) in window.settings.recent_projects()
    window.start_screen.set_recent(window.settings.recent_projects())
    assert "1 run" in window.start_screen.recent.item(0).text()
    with qtbot.waitSignal(window.results.loaded, timeout=20_000):
        again = window.open_project(str(tmp_path / "proj"))
    assert again.project.model_path == result.model_path
    assert again.project.runs == ["runs/r1/mean"]
    assert window.results.current() is not None
    # the project's model is loaded on reopening; bags without extractor provenance cannot classify slides,
    # and the app says why
    qtbot.waitUntil(lambda: window.model is not None or bool(window.last_error), timeout=20_000)
    assert window.model is None and "feature extractor" in window.last_error
    assert window.curves.folds() == [0, 1]


def test_project_wizard_to_results_with_live_curves(window, qtbot, tmp_path, cohort, monkeypatch):
    """Slides folder + labels → wizard → extraction and training jobs → curves → results; the UI never stalls."""
    import threading
    from PySide6.QtWidgets import QWizard
    from dnd_gui.jobs import project_session
    from dnd_gui.wizard import PAGE_REVIEW
    ran_on, real_extract, real_train = [], project_session.run_extraction, project_session.run_training
    monkeypatch.setattr(project_session, "run_extraction",
                        lambda *a, **k: (ran_on.append(threading.get_ident()), real_extract(*a, **k))[1])
    monkeypatch.setattr(project_session, "run_training",
                        lambda *a, **k: (ran_on.append(threading.get_ident()), real_train(*a, **k))[1])
    window.new_project(str(tmp_path / "proj"))
    wiz = window.open_wizard()
    _fill_wizard(wiz, cohort)
    qtbot.waitUntil(lambda: wiz.currentId() == PAGE_REVIEW, timeout=10_000)
    qtbot.waitUntil(wiz.review_page.isComplete, timeout=20_000)   # the work estimate runs on a worker
    records = []
    window.curves_records = records
    window.session.epoch.connect(records.append)
    with qtbot.waitSignal(wiz.launch_requested, timeout=20_000):
        wiz.button(QWizard.WizardButton.FinishButton).click()
    jobs = list(window.session.jobs.values())
    assert [j.kind for j in jobs] == ["extract", "train"]
    qtbot.waitUntil(lambda: jobs[1].state.value == "running" or jobs[1].state.finished, timeout=TIMEOUT)
    with Heartbeat() as hb:
        qtbot.waitUntil(lambda: jobs[1].state.finished, timeout=TIMEOUT)
    assert [j.state.value for j in jobs] == ["done", "done"], [j.error for j in jobs]
    assert len(ran_on) == 2 and threading.get_ident() not in ran_on   # extraction and training ran on a worker
    # the UI thread's own CPU time between two event-loop turns (wall-clock gaps also count a loaded machine's
    # other work; benchmarks/ui_stalls.py measures those): training ran on a worker, the window only drew curves
    assert hb.max_cpu_gap_ms < 100, f"the UI thread worked {hb.max_cpu_gap_ms:.0f} ms without a break"
    stages = {r["stage"] for r in records}
    assert {"base", "expert_0", "expert_1", "student"} <= stages
    qtbot.waitUntil(lambda: window.curves.folds() == [0, 1], timeout=10_000)
    window.curves.flush()
    base = window.curves.curve("base", "train_loss")
    assert base is not None and len(base.xData) == FAST["epochs_base"]
    qtbot.waitUntil(lambda: window.results.current() is not None, timeout=30_000)
    project = Project.open(tmp_path / "proj")
    assert project.features and project.model and len(project.runs) == 1
    book = JobBook(project)
    assert [r.state for r in book.records] == ["done", "done"]
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    window.resize(1440, 900)
    window.show_tab(window.curves_scroll)
    qtbot.wait(200)
    window.grab().save(str(out / "workflow_curves.png"))
    window.show_tab(window.results_scroll)
    qtbot.wait(200)
    window.grab().save(str(out / "workflow_results.png"))


def _fill_wizard(wiz, cohort):
    """Fill the wizard for the synthetic cohort (slides mode, stain_stats, ABMIL, tiny epochs) and go to review."""
    from dnd_gui.wizard import PAGE_REVIEW, DataPage
    d = wiz.data_page
    d.set_mode(DataPage.MODE_SLIDES)
    d.slides_path.setText(str(cohort.out_dir / "slides"))
    d.labels_path.setText(str(cohort.labels_csv))
    d.refresh()
    assert d.isComplete(), d.problems()
    wiz.next()
    p = wiz.preprocess_page
    p.extractor_combo.setCurrentIndex(p.extractor_combo.findData("stain_stats"))
    wiz.next()
    m = wiz.model_page
    m.set_methods(["abmil"])
    m.name_edit.setText("wf")
    m.clusters_spin.setValue(2)
    m.epochs_base_spin.setValue(4)
    m.epochs_expert_spin.setValue(3)
    m.epochs_student_spin.setValue(4)
    m.folds_spin.setValue(2)
    m.seed_spin.setValue(3)
    m.device_combo.setCurrentIndex(m.device_combo.findData("cpu"))
    wiz.next()
    assert wiz.currentId() == PAGE_REVIEW


@pytest.mark.parametrize("stage", ["extract", "base", "expert_0", "student"])
def test_project_job_cancel_at_every_stage(window, qtbot, tmp_path, cohort, stage):
    session = window.new_project(str(tmp_path / "proj"))
    p = session.project
    p.set_slides(str(cohort.out_dir / "slides"))
    p.set_labels(cohort.labels_csv)
    p.save()
    plan = TrainingPlan(name="c", methods=["abmil"], epochs_base=30, epochs_expert=30, epochs_student=30,
                        folds=2, n_clusters=2, seed=3)
    jobs = window.launch_training(ExtractionPlan(extractor="stain_stats", device="cpu"), plan)
    extract, train = jobs
    if stage == "extract":
        qtbot.waitUntil(lambda: extract.done > 0 or extract.state.finished, timeout=TIMEOUT)
        extract.cancel()
        _wait_jobs(qtbot, jobs)
        assert extract.state.value == "cancelled", (extract.error, extract.log_lines[-5:])
        assert train.state.value == "cancelled"  # the rest of the group never starts without features
    else:
        seen = []

        def on_epoch(rec):
            seen.append(rec["stage"])
            if rec["stage"] == stage and not train.cancel_requested:
                train.cancel()
        train.epoch.connect(on_epoch)
        _wait_jobs(qtbot, jobs)
        assert extract.state.value == "done"
        assert train.state.value == "cancelled", train.error
        assert stage in seen and "fold 0" not in "".join(seen)
        assert not (p.root / "runs" / "c" / "abmil" / "fold_0" / "results.json").exists()
    _no_temp_files(p.root)
    book = JobBook(Project.open(p.root))
    assert all(r.state in ("cancelled", "done") for r in book.records)


def test_project_job_killed_mid_training_resumes(window, qtbot, tmp_path, bag_cohort):
    """A worker process killed with SIGKILL mid-run: reopening the project finds the job interrupted and resumes
    it from the checkpoints (the finished base model is not trained again)."""
    feats, csv = bag_cohort
    proj = tmp_path / "proj"
    p = Project.create(proj)
    p.set_features(feats)
    p.set_labels(csv)
    p.save()
    plan = TrainingPlan(name="k", methods=["abmil"], epochs_base=6, epochs_expert=40, epochs_student=6, folds=2,
                        n_clusters=2, seed=3)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from dnd_engine.project import JobBook, Project, TrainingPlan, run_training
        p = Project.open({str(proj)!r})
        book = JobBook(p)
        plan = TrainingPlan.from_dict({plan.to_dict()!r})
        rec = book.add("train", "Train abmil + D&D (k)", {{"training": plan.to_dict(), "method": "abmil"}})
        book.mark(rec.id, "running")
        run_training(p, plan, "abmil", on_epoch=lambda r: print(r["stage"], r["epoch"], flush=True))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # wait until the experts of fold 0 are training
            if line.startswith("expert_0") or time.monotonic() > deadline:
                break
        assert (proj / "runs" / "k" / "abmil" / "fold_0" / "base" / "best.safetensors").exists() or \
            any((proj / "runs" / "k" / "abmil" / "fold_0").rglob("best.safetensors"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    session = window.open_project(str(proj))
    interrupted = session.interrupted()
    assert len(interrupted) == 1 and interrupted[0].state == "interrupted"
    assert window.resume_box is not None and window.resume_box.isVisible()
    assert window.resume_action.isEnabled()
    # resume with fewer expert epochs would change the config; it must continue the same run
    seen = []
    session.epoch.connect(seen.append)
    jobs = window.resume_jobs()
    assert len(jobs) == 1
    _wait_jobs(qtbot, jobs, timeout=300_000)
    assert jobs[0].state.value == "done", jobs[0].error
    fold0 = [r for r in seen if r["fold"] == 0]
    assert not [r for r in fold0 if r["stage"] == "base"], "the finished base model was trained again"
    assert (proj / "runs" / "k" / "abmil" / "summary.json").is_file()
    assert JobBook(Project.open(proj)).records[0].state == "done"


def test_project_close_with_running_jobs_asks_first(window, qtbot, tmp_path, bag_cohort):
    feats, csv = bag_cohort
    session = window.new_project(str(tmp_path / "proj"))
    session.project.set_features(feats)
    session.project.set_labels(csv)
    session.project.save()
    asked = []
    window.confirm_quit = lambda n: asked.append(n) or False
    jobs = window.launch_training(None, TrainingPlan(name="q", methods=["abmil"], epochs_base=400, folds=2,
                                                     n_clusters=2, epochs_expert=2, epochs_student=2))
    qtbot.waitUntil(lambda: jobs[0].state.value == "running", timeout=30_000)
    window.close()
    assert asked == [1] and window.isVisible() and not jobs[0].state.finished
    assert not window.close_project() and window.session is not None
    window.confirm_quit = lambda n: True
    window.close()
    _wait_jobs(qtbot, jobs)
    assert jobs[0].state.value == "cancelled"


def test_project_and_slide_open_from_the_system_file_open_event(window, qtbot, tmp_path, cmu_slide):
    """Finder's double-click arrives as a FileOpen event: a slide is shown (not classified), a project opened."""
    from PySide6.QtGui import QFileOpenEvent
    from PySide6.QtWidgets import QApplication
    from dnd_gui.app import FileOpenHandler
    app = QApplication.instance()
    handler = FileOpenHandler(window)
    app.installEventFilter(handler)
    try:
        with qtbot.waitSignal(window.slide_loaded, timeout=20_000):
            QApplication.sendEvent(app, QFileOpenEvent(str(cmu_slide)))
        assert window.current_path == str(cmu_slide.resolve())
        assert not window.jobs.jobs, "opening a slide from the system must not classify it"
        Project.create(tmp_path / "sysproj", name="From Finder")
        QApplication.sendEvent(app, QFileOpenEvent(str(tmp_path / "sysproj" / "project.json")))
        assert window.session is not None and window.session.project.name == "From Finder"
        QApplication.sendEvent(app, QFileOpenEvent(str(tmp_path / "notes.txt")))
        assert "not a slide, model or project" in window.last_error
    finally:
        app.removeEventFilter(handler)
