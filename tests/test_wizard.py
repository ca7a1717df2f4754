"""The training wizard: it completes on synthetic cohorts and launches, refuses bad labels, checks weights off the
UI thread, estimates the work as the engine does, and leaves the project untouched when launching fails."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QThreadPool
from PySide6.QtWidgets import QWizard

from dnd_engine.project import ExtractionPlan, Project, TrainingPlan, estimate_work
from dnd_engine.synth import make_synthetic_cohort
from dnd_gui.wizard import preprocess_page
from dnd_gui.wizard import (PAGE_MODEL, PAGE_PREPROCESS, PAGE_REVIEW, DataPage, TrainingWizard, default_extractor,
                            default_run_name)

from bagtools import make_bags, write_bags

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHECK_MS = 30_000


@pytest.fixture(scope="module")
def slide_cohort(tmp_path_factory):
    """Six small synthetic slides (3 normal, 3 tumor) and their labels: (slides folder, labels.csv)."""
    c = make_synthetic_cohort(tmp_path_factory.mktemp("wizard_slides") / "cohort", n_slides=6, size=512, seed=3)
    return c.out_dir / "slides", c.labels_csv


@pytest.fixture
def bag_cohort(tmp_path):
    """Twelve bags (6 per class) in CLAM's layout (features/h5_files/*.h5) and a labels CSV beside them."""
    bags, labels = make_bags((6, 6), dim=8, n_inst=(5, 9), seed=1)
    feats = tmp_path / "clam_out"
    csv = write_bags(feats / "h5_files", bags, labels, fmt="h5")
    return feats, csv, bags, labels


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No extractor weights anywhere the engine looks."""
    for var in ("DND_WEIGHTS_DIR", "TORCH_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / "empty" / var))
    monkeypatch.delenv("UNI_CKPT_PATH", raising=False)


@pytest.fixture
def wizard(qtbot, tmp_path, no_weights):
    wiz = TrainingWizard(Project.create(tmp_path / "project"))
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitExposed(wiz)
    return wiz


def set_data(wiz: TrainingWizard, mode: str, folder, labels) -> None:
    d = wiz.data_page
    d.set_mode(mode)
    (d.features_path if mode == DataPage.MODE_FEATURES else d.slides_path).setText(str(folder))
    d.labels_path.setText(str(labels))
    d.refresh()


def wait_for_estimate(qtbot, wiz: TrainingWizard) -> None:
    """The review page estimates the work on a worker thread: wait for its answer."""
    qtbot.waitUntil(lambda: not wiz.review_page.estimating, timeout=CHECK_MS)


def next_enabled(wiz: TrainingWizard) -> bool:
    return wiz.button(QWizard.WizardButton.NextButton).isEnabled()


def shoot(qtbot, wiz: TrainingWizard, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    qtbot.wait(50)   # let the page's layout settle before the picture
    assert wiz.grab().save(str(ARTIFACTS / name))


def estimate_text_matches(wiz: TrainingWizard, est) -> None:
    text = wiz.review_page.estimate_label.text()
    for line in est.lines():
        assert line in text
    assert f"{est.slides} slides" in text and f"{est.patches:,}" in text and f"{est.runs} cross-validation runs" in text


def test_wizard_completes_on_synthetic_slides_and_launches(qtbot, wizard, slide_cohort):
    slides, labels = slide_cohort
    wiz = wizard
    assert wiz.size().width() >= 900 and wiz.size().height() >= 650
    set_data(wiz, DataPage.MODE_SLIDES, slides, labels)
    d = wiz.data_page
    assert d.errors == [] and d.isComplete()
    assert "normal 3" in d.balance_label.text() and "tumor 3" in d.balance_label.text()
    statuses = [d.preview.item(r, d.preview.columnCount() - 1).text() for r in range(d.preview.rowCount())]
    assert statuses == ["ok"] * 6
    wiz.next()
    assert wiz.currentId() == PAGE_PREPROCESS

    p = wiz.preprocess_page
    assert p.extractor() == "stain_stats"   # no weights on this machine: the weight-free default
    assert "need a weights file" in p.extractor_info.text()
    p.extractor_combo.setCurrentIndex(p.extractor_combo.findData("stain_stats"))
    p.magnification_spin.setValue(5.0)
    p.patch_spin.setValue(128)
    p.tissue_spin.setValue(0.4)
    assert p.isComplete()
    wiz.next()
    assert wiz.currentId() == PAGE_MODEL

    m = wiz.model_page
    assert m.name_edit.text() == default_run_name() or m.name_edit.text().startswith("run-")
    assert m.folds_spin.value() == 5
    assert not m.isComplete() and not next_enabled(wiz)   # 3 slides per class cannot fill 5 folds
    assert "5-fold" in m.problems_label.text()
    m.name_edit.setText("wizard-test")
    m.set_methods(["mean", "abmil"])
    m.preset_combo.setCurrentIndex(m.preset_combo.findData("authors-code"))
    assert m.clusters_spin.value() == 5 and m.temperature_spin.specialValueText() == "preset: 0.2"
    assert m.epochs_student_spin.specialValueText() == "preset: 400"
    m.clusters_spin.setValue(2)
    m.lambda_base_spin.setValue(0.5)
    m.lambda_expert_spin.setValue(0.25)
    m.temperature_spin.setValue(0.5)
    m.epochs_base_spin.setValue(3)
    m.epochs_expert_spin.setValue(4)
    m.epochs_student_spin.setValue(5)
    m.folds_spin.setValue(3)
    m.seed_spin.setValue(7)
    m.device_combo.setCurrentIndex(m.device_combo.findData("cpu"))
    assert m.isComplete() and next_enabled(wiz)
    shoot(qtbot, wiz, "wizard_model.png")
    wiz.next()
    assert wiz.currentId() == PAGE_REVIEW
    wait_for_estimate(qtbot, wiz)

    want_ext = ExtractionPlan(extractor="stain_stats", magnification=5.0, patch_size=128, weights=None, device="cpu",
                              min_tissue=0.4)
    want_train = TrainingPlan(name="wizard-test", methods=["mean", "abmil"], preset="authors-code", n_clusters=2,
                              lambda_base=0.5, lambda_expert=0.25, temperature=0.5, epochs_base=3, epochs_expert=4,
                              epochs_student=5, folds=3, seed=7, device="cpu")
    assert wiz.plans() == (want_ext, want_train)
    r = wiz.review_page
    assert r.isComplete(), r.problems()
    assert wiz.button(QWizard.WizardButton.FinishButton).text() == "Launch"
    summary = r.summary.toPlainText()
    for word in ("stain_stats", "128 px at 5×", "wizard-test", "Mean pooling, ABMIL", "Authors' code",
                 "3 / 4 / 5", "3-fold", "cpu"):
        assert word in summary
    shoot(qtbot, wiz, "wizard_review.png")
    assert wiz.project.slides == []   # nothing applied before Launch

    with qtbot.waitSignal(wiz.launch_requested, timeout=5000) as sig:
        wiz.accept()
    assert sig.args == [want_ext, want_train]
    assert wiz.result() == QWizard.DialogCode.Accepted
    reopened = Project.open(wiz.project.root)
    assert len(reopened.slides) == 6 and reopened.features is None
    assert reopened.labels_path.read_text() == labels.read_text()
    est = estimate_work(reopened, want_ext, want_train)
    assert (est.slides, est.slides_to_extract, est.runs) == (6, 6, 6) and est.patches > 0
    estimate_text_matches(wiz, est)


def test_wizard_feature_folder_skips_preprocessing(qtbot, wizard, bag_cohort):
    feats, labels, bags, _ = bag_cohort
    wiz = wizard
    set_data(wiz, DataPage.MODE_FEATURES, feats, labels)
    assert wiz.data_page.isComplete() and next_enabled(wiz)
    wiz.next()
    assert wiz.currentId() == PAGE_MODEL
    wiz.model_page.name_edit.setText("from-bags")
    wiz.next()
    assert wiz.currentId() == PAGE_REVIEW
    assert PAGE_PREPROCESS not in wiz.visitedIds()
    wait_for_estimate(qtbot, wiz)
    ext, train = wiz.plans()
    assert ext is None and train == TrainingPlan(name="from-bags")
    est = wiz.review_page.estimate
    assert est.patches_exact and est.patches == sum(len(x) for x in bags.values())
    assert (est.slides, est.slides_to_extract, est.runs) == (12, 0, 5)
    estimate_text_matches(wiz, est)
    with qtbot.waitSignal(wiz.launch_requested, timeout=5000) as sig:
        wiz.accept()
    assert sig.args == [None, TrainingPlan(name="from-bags")]
    reopened = Project.open(wiz.project.root)
    assert reopened.features_dir == feats.resolve() and reopened.available_ids() == sorted(bags)
    assert estimate_work(reopened, None, train) == est

    again = TrainingWizard(reopened)   # a second wizard starts from what the project holds
    qtbot.addWidget(again)
    d = again.data_page
    assert d.mode() == DataPage.MODE_FEATURES and d.source_path() == feats.resolve()
    assert d.labels_path.text() == str(labels.resolve())
    d.refresh()
    assert d.isComplete()


def _write(path: Path, rows) -> Path:
    path.write_text("slide_id,label\n" + "".join(f"{s},{c}\n" for s, c in rows))
    return path


def test_wizard_bad_labels_csv_shows_problems_and_cannot_launch(qtbot, wizard, bag_cohort, tmp_path):
    feats, _, _, labels = bag_cohort
    wiz = wizard
    good = list(labels.items())
    # unknown slide, a duplicate id, and class_1 with 2 slides (5 folds need 5)
    bad = _write(tmp_path / "bad.csv", good[:6] + [("ghost_slide", "class_1"), (good[0][0], "class_1"),
                                                  good[6]])
    set_data(wiz, DataPage.MODE_FEATURES, feats, bad)
    d = wiz.data_page
    problems = d.problems_label.text()
    assert "1 slide(s) in the labels CSV have no feature bag: ghost_slide" in problems
    assert f"duplicate slide id '{good[0][0]}'" in problems
    assert "class 'class_1' has 2 slide(s); 5-fold cross-validation" in problems
    rows = {d.preview.item(r, 1).text() + "@" + d.preview.item(r, 0).text(): d.preview.item(r, 3).text()
            for r in range(d.preview.rowCount())}
    assert rows["ghost_slide@8"] == "no bag"
    assert rows[f"{good[0][0]}@9"] == "duplicate (of line 2)"
    assert d.preview.item(0, 3).text() != "ok"   # problem rows come first
    assert d.preview.item(0, 0).background().color().alpha() > 0
    assert not d.isComplete() and not next_enabled(wiz)
    shoot(qtbot, wiz, "wizard_data.png")
    wiz.next()
    assert wiz.currentId() == wiz.startId()

    one_class = _write(tmp_path / "one.csv", good[:6])
    set_data(wiz, DataPage.MODE_FEATURES, feats, one_class)
    assert "only one class ('class_0')" in d.problems_label.text()
    assert not d.isComplete() and not next_enabled(wiz)

    # too few slides for the folds only: fixable on the model page, so it blocks there
    small = _write(tmp_path / "small.csv", good[:6] + good[6:9])
    set_data(wiz, DataPage.MODE_FEATURES, feats, small)
    assert "class 'class_1' has 3 slide(s)" in d.problems_label.text() and "Model page" in d.problems_label.text()
    assert "class_1 3" in d.balance_label.text() and "color:" in d.balance_label.text()
    assert d.isComplete()
    wiz.next()
    m = wiz.model_page
    assert wiz.currentId() == PAGE_MODEL and not m.isComplete() and not next_enabled(wiz)
    m.folds_spin.setValue(3)
    assert m.isComplete() and next_enabled(wiz)
    wiz.next()
    wait_for_estimate(qtbot, wiz)
    assert wiz.review_page.isComplete()

    # the CSV goes bad after the data page: the review re-checks it and refuses to launch
    small.write_text(small.read_text() + f"{good[1][0]},class_1\n")
    wiz.review_page.refresh()
    assert "duplicate slide id" in wiz.review_page.problems_label.text()
    assert not wiz.review_page.isComplete()
    assert not wiz.button(QWizard.WizardButton.FinishButton).isEnabled()
    emitted = []
    wiz.launch_requested.connect(lambda *a: emitted.append(a))
    wiz.accept()
    assert emitted == [] and wiz.isVisible() and wiz.project.labels is None


def test_wizard_weights_check_runs_off_gui_thread(qtbot, wizard, tmp_path, monkeypatch):
    wiz = wizard
    p = wiz.preprocess_page
    threads = []
    real = preprocess_page.check_weights

    def spy(extractor, weights):
        threads.append(threading.get_ident())
        return real(extractor, weights)

    monkeypatch.setattr(preprocess_page, "check_weights", spy)
    p.extractor_combo.setCurrentIndex(p.extractor_combo.findData("stain_stats"))
    with qtbot.waitSignal(p.weights_checked, timeout=CHECK_MS) as sig:
        p.check_weights()
        assert p.weights_status.text() == "Checking…"
    ok, message = sig.args
    assert ok and "stain_stats: ready" in message
    assert threads and threads[0] != threading.get_ident()
    assert p.weights_status.text().startswith("✓") and p.isComplete()

    p.extractor_combo.setCurrentIndex(p.extractor_combo.findData("resnet50_trunc"))
    assert not p.isComplete() and "needs a weights file" in p.problem_label.text()   # none found here
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(os.urandom(4096))
    p.weights_path.setText(str(bogus))
    assert p.isComplete()   # a file is named; only a failed check rules it out
    with qtbot.waitSignal(p.weights_checked, timeout=CHECK_MS) as sig:
        p.check_weights()
    ok, message = sig.args
    assert not ok and "bogus.pth" in message
    assert len(threads) == 2 and threads[1] != threading.get_ident()
    assert p.weights_status.text().startswith("✗") and "bogus.pth" in p.weights_status.text()
    assert not p.isComplete() and p.weights_problem().startswith("the weights check failed")
    assert p.problem_label.isHidden()   # the check's own red line says it; not twice
    assert p.plan().weights == str(bogus)


def test_wizard_closed_during_a_weights_check_drops_the_answer(qtbot, tmp_path, no_weights, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def slow(extractor, weights):
        started.set()
        release.wait(10)
        return "late"

    monkeypatch.setattr(preprocess_page, "check_weights", slow)
    wiz = TrainingWizard(Project.create(tmp_path / "project"))
    wiz.preprocess_page.check_weights()
    assert started.wait(10)
    wiz.close()
    wiz.deleteLater()
    qtbot.wait(50)
    release.set()
    QThreadPool.globalInstance().waitForDone(10_000)
    qtbot.wait(50)   # the answer's queued delivery finds no page: nothing happens


def test_wizard_default_extractor_follows_local_weights(tmp_path, no_weights, monkeypatch):
    assert default_extractor() == "stain_stats"
    folder = tmp_path / "w" / "resnet50_trunc"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 16)
    monkeypatch.setenv("DND_WEIGHTS_DIR", str(tmp_path / "w"))
    assert default_extractor() == "resnet50_trunc"


def test_wizard_failed_launch_leaves_project_as_it_was(qtbot, wizard, bag_cohort, tmp_path, monkeypatch):
    feats, labels, _, _ = bag_cohort
    wiz = wizard
    project = wiz.project
    old_csv = _write(tmp_path / "old.csv", [("a", "x"), ("b", "y")])
    project.set_labels(old_csv)
    project.save()
    before = Project.open(project.root)
    set_data(wiz, DataPage.MODE_FEATURES, feats, labels)
    wiz.next()
    wiz.next()
    wait_for_estimate(qtbot, wiz)
    assert wiz.currentId() == PAGE_REVIEW and wiz.review_page.isComplete()

    def disk_full():
        raise OSError("No space left on device")

    monkeypatch.setattr(project, "save", disk_full)
    emitted = []
    wiz.launch_requested.connect(lambda *a: emitted.append(a))
    wiz.accept()
    assert emitted == [] and wiz.isVisible()
    assert "No space left on device" in wiz.review_page.error_label.text()
    assert wiz.review_page.error_label.isVisible()
    assert (project.features, project.labels_source) == (before.features, before.labels_source)
    assert project.labels_path.read_text() == old_csv.read_text()
    assert Project.open(project.root) == before


def _cut_off(page) -> list:
    """Visible one-line labels and buttons narrower than their text (Qt elides or clips them)."""
    from PySide6.QtWidgets import QAbstractButton, QLabel
    out = []
    for w in page.findChildren(QLabel) + page.findChildren(QAbstractButton):
        if w.isVisible() and w.text() and not (isinstance(w, QLabel) and w.wordWrap()) \
                and w.sizeHint().width() > w.width() + 1:
            out.append(w.text())
    return out


def test_wizard_text_fits_on_every_page_at_its_smallest_size(qtbot, wizard, slide_cohort):
    """The Preprocessing page cut its extractor line off ("No weights file r…") at the wizard's default size."""
    slides, labels = slide_cohort
    wiz = wizard
    wiz.resize(wiz.minimumSize())
    set_data(wiz, DataPage.MODE_SLIDES, slides, labels)
    qtbot.wait(20)
    assert _cut_off(wiz.currentPage()) == []
    wiz.next()
    p = wiz.preprocess_page
    for i in range(p.extractor_combo.count()):
        p.extractor_combo.setCurrentIndex(i)
        qtbot.wait(20)
        assert _cut_off(p) == [], p.extractor()
    wiz.next()
    m = wiz.model_page
    m.folds_spin.setValue(3)
    for i in range(m.preset_combo.count()):
        m.preset_combo.setCurrentIndex(i)
        qtbot.wait(20)
        assert _cut_off(m) == [], m.preset()
    wiz.next()
    wait_for_estimate(qtbot, wiz)
    qtbot.wait(20)
    assert wiz.currentId() == PAGE_REVIEW and _cut_off(wiz.review_page) == []


def test_wizard_leaves_unchanged_values_to_the_preset_and_warns_on_tiny_cohorts(qtbot, wizard, bag_cohort):
    feats, labels, _, _ = bag_cohort
    wiz = wizard
    set_data(wiz, DataPage.MODE_FEATURES, feats, labels)
    wiz.next()
    m = wiz.model_page
    m.preset_combo.setCurrentIndex(m.preset_combo.findData("authors-code"))
    assert m.clusters_spin.value() == 5                  # shown: the preset's value
    plan = m.plan()
    assert plan.n_clusters is None and plan.lambda_base is None and plan.dnd_config("abmil").n_clusters == 5
    # 12 slides, 5 folds: the engine's cohort check says why C = 5 is too many, before anything trains
    assert m.isComplete() and "12 slides are too few for 5 clusters" in m.notes_label.text()
    assert m.notes_label.isVisible()
    m.clusters_spin.setValue(2)
    assert m.plan().n_clusters == 2
    wiz.next()
    wait_for_estimate(qtbot, wiz)
    r = wiz.review_page
    assert r.isComplete() and r.warnings_label.isVisible()
    assert "its accuracy and the D&D gain are noise" in r.warnings_label.text()
    assert "Clusters (C)" in r.summary.toPlainText() and "2" in r.summary.toPlainText()
    shots = os.environ.get("DND_SHOTS_DIR")
    if shots:
        wiz.resize(1366, 768)
        qtbot.wait(50)
        wiz.grab().save(os.path.join(shots, "i19-D-wizard-review-warning.png"))
        wiz.back()
        qtbot.wait(50)
        wiz.grab().save(os.path.join(shots, "i19-D-wizard-model-warning.png"))


def test_wizard_estimates_the_work_off_the_ui_thread(qtbot, wizard, bag_cohort, monkeypatch):
    """estimate_work opens every slide: the review page runs it on a worker and says it is estimating meanwhile."""
    from dnd_gui.wizard import review_page
    feats, labels, _, _ = bag_cohort
    wiz = wizard
    threads, release = [], threading.Event()
    real = review_page.estimate_work

    def spy(*args):
        threads.append(threading.current_thread())
        release.wait(CHECK_MS / 1000)
        return real(*args)

    monkeypatch.setattr(review_page, "estimate_work", spy)
    set_data(wiz, DataPage.MODE_FEATURES, feats, labels)
    wiz.next()
    wiz.next()
    r = wiz.review_page
    assert wiz.currentId() == PAGE_REVIEW and r.estimating and r.estimate is None
    assert "estimating…" in r.estimate_label.text()
    assert not r.isComplete() and not wiz.button(QWizard.WizardButton.FinishButton).isEnabled()
    release.set()
    wait_for_estimate(qtbot, wiz)
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert r.isComplete() and "12 slides" in r.estimate_label.text()
    wiz.back()
    wiz.next()                                  # the same choices: the estimate is kept, not made again
    assert len(threads) == 1 and r.isComplete()
    with qtbot.waitSignal(wiz.launch_requested, timeout=5000):
        wiz.accept()


def test_wizard_package_holds_no_engine_logic():
    """The wizard is a package of small pages, imports no private engine name and keeps no model catalogue."""
    import re
    folder = ROOT / "dnd_gui" / "wizard"
    files = sorted(folder.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "widgets.py", "data_page.py", "preprocess_page.py",
                                       "model_page.py", "review_page.py", "wizard.py"}
    for f in files:
        text = f.read_text()
        assert len(text.splitlines()) <= 450, f.name
        assert not re.search(r"from dnd_engine[\w.]* import [^\n]*\b_[a-zA-Z]|dnd_engine(\.\w+)*\._[a-zA-Z]", text), f
        for copy in ("MODEL_INFO", "csv.reader", "torch.cuda", "locate_weights", "_SPLIT_ALIASES", "estimate_work("):
            assert copy not in text or (f.name == "review_page.py" and copy == "estimate_work("), (f.name, copy)
