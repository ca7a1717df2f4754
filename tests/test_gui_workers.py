"""`LatestOnly`: only the newest request's outcome reaches the screen (dnd_gui/workers.py)."""

import threading

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("superqt")

from dnd_gui.workers import LatestOnly  # noqa: E402


def test_only_the_newest_result_is_delivered_and_older_ones_are_discarded(qtbot):
    gate = threading.Event()
    done, discarded = [], []
    w = LatestOnly(threads=2, discard=discarded.append)

    started = threading.Event()

    def slow(x):
        started.set()
        gate.wait(10)
        return x

    w.submit(slow, "old", on_done=done.append)
    assert started.wait(10)
    w.submit(lambda: "new", on_done=done.append)
    qtbot.waitUntil(lambda: done == ["new"], timeout=10000)
    gate.set()
    qtbot.waitUntil(lambda: discarded == ["old"], timeout=10000)
    assert done == ["new"]
    w.shutdown()


def test_a_request_superseded_in_the_queue_never_runs(qtbot):
    gate = threading.Event()
    ran, done = [], []
    w = LatestOnly(threads=1)

    started = threading.Event()

    def first():
        started.set()
        gate.wait(10)
        ran.append("first")
        return "first"

    w.submit(first, on_done=done.append)
    assert started.wait(10)
    w.submit(lambda: ran.append("second") or "second", on_done=done.append)  # queued behind first
    w.submit(lambda: ran.append("third") or "third", on_done=done.append)
    gate.set()
    qtbot.waitUntil(lambda: done == ["third"], timeout=10000)
    w.shutdown()
    assert ran == ["first", "third"]


def test_errors_reach_on_error_only_for_the_newest_request(qtbot):
    errors, done = [], []
    w = LatestOnly(threads=1)

    def boom():
        raise ValueError("unreadable file")

    w.submit(boom, on_done=done.append, on_error=errors.append)
    qtbot.waitUntil(lambda: len(errors) == 1, timeout=10000)
    assert isinstance(errors[0], ValueError) and str(errors[0]) == "unreadable file"
    w.cancel()  # a request cancelled before it reports delivers nothing
    gate = threading.Event()
    w.submit(lambda: gate.wait(10) and (_ for _ in ()).throw(ValueError("late")), on_done=done.append,
             on_error=errors.append)
    w.cancel()
    gate.set()
    w.shutdown()
    qtbot.wait(50)
    assert len(errors) == 1 and done == []
    with pytest.raises(RuntimeError, match="shut down"):
        w.submit(lambda: 1, on_done=done.append)


@pytest.mark.parametrize("module", ["dnd_gui.jobs.slide_loader", "dnd_gui.panels.gallery", "dnd_gui.panels.results_view"])
def test_newest_wins_loaders_use_latest_only_not_their_own_pool(module):
    """Issue 20 item 4: each of these had its own thread pool, request counter and private signals."""
    import importlib
    import inspect
    source = inspect.getsource(importlib.import_module(module))
    assert "LatestOnly(" in source
    for own in ("QThreadPool", "QRunnable", "_request += 1", "_latest += 1"):
        assert own not in source, f"{module} still has {own}"


def test_curves_legend_is_superqts_flow_layout(qtbot):
    from superqt import QFlowLayout

    from dnd_gui.panels.curves import TrainingCurves
    curves = TrainingCurves()
    qtbot.addWidget(curves)
    assert isinstance(curves._bar, QFlowLayout)
    curves.add_records([{"fold": 0, "stage": s, "epoch": 1, "train_loss": 0.5} for s in ("student", "base")])
    curves.flush()
    order = [curves._bar.itemAt(i).widget() for i in range(curves._bar.count())]
    assert [w.text() if hasattr(w, "text") else "<fold selector>" for w in order] == \
        ["Fold", "<fold selector>", "base", "student", "Fit"]   # the legend keeps the stage order
