"""UI-thread stalls: the longest time the event loop was kept from running in the flows a new user goes through.

A QTimer on the UI thread ticks every 10 ms; the largest gap between two ticks is the longest freeze a user
would feel (a stall). Each flow runs in a fresh process of its own (cold imports, as a user meets them):

- ``start``: the window is shown, the demo model loads and the heavy modules are imported in the background,
  as the app does at start (the other flows begin once that is over, as a user's first drop usually does);
- ``first classification``: with the demo model loaded, a real slide is dropped on the window and classified,
  until its heatmap and patch gallery are shown and every visible tile is painted;
- ``train + pan``: a project (8 synthetic slides) extracts features and trains ABMIL + D&D while the viewer pans
  a real slide every 40 ms;
- ``results page``: the Results page opens two finished 5-fold runs of 300 slides each (512-d representations),
  then the user switches run, fold, colouring and confusion arm.

For every flow the largest gap is printed, also less the time the UI thread waited in the kernel's run queue for a
CPU (``/proc/thread-self/schedstat``: what other processes on a shared machine add), with the 99th percentile and
the UI thread's CPU time; the exit code is 1 when any flow's largest gap is above ``--limit`` (100 ms; with
``--without-load``, the gap less the run-queue wait). ``--why`` also prints, for the longest stalls, where
the UI thread was (a sampling thread reads its Python stack while a tick is overdue): what to move off it.

The machine's load counts in wall-clock gaps, so numbers from a shared machine are upper bounds.

    .venv/bin/python benchmarks/ui_stalls.py [--slide PATH] [--limit 100] [--without-load] [--why] [--flow NAME]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CMU = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"
SHARED_CMU = ROOT.parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
FLOWS = ("start", "first classification", "train + pan", "results page")
TICK_MS = 10
SAMPLE_AFTER_S = 0.03       # a tick this late: sample the UI thread's stack
FLOW_TIMEOUT_S = 600


# --- the meter (runs inside a flow's process) ---------------------------------------------------------------
class StallMeter:
    """The heartbeat, plus a sampler thread that records the UI thread's stack while a tick is overdue."""

    def __init__(self, why: bool):
        from PySide6.QtCore import QTimer, Qt
        self.gaps: list[float] = []
        self.cpu_gaps: list[float] = []    # the UI thread's CPU time between two ticks
        self.queued_gaps: list[float] = []   # its time runnable but not running (another task had the core)
        self.stalls: list[tuple[float, float, list]] = []   # (gap s, UI CPU s in it, stacks sampled during it)
        self._samples: list[tuple[str, ...]] = []
        self._last = time.perf_counter()
        self._cpu0 = self._last_cpu = self._last_queued = 0.0
        self.cpu_s = 0.0
        self._ui = threading.get_ident()
        self._why = why
        self._stop = threading.Event()
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now, cpu, queued = time.perf_counter(), time.thread_time(), run_queue_wait()
        gap, cpu_gap = now - self._last, cpu - self._last_cpu
        self._last, self._last_cpu = now, cpu
        self.gaps.append(gap)
        self.cpu_gaps.append(cpu_gap)
        self.queued_gaps.append(queued - self._last_queued)
        self._last_queued = queued
        if gap > SAMPLE_AFTER_S:
            self.stalls.append((gap, cpu_gap, self._samples))
        self._samples = []

    def _sample(self) -> None:
        while not self._stop.wait(0.004):
            if time.perf_counter() - self._last > SAMPLE_AFTER_S:
                frames = sys._current_frames()
                frame = frames.get(self._ui)
                if frame is not None:
                    stack = traceback.extract_stack(frame)
                    entry = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack[-14:]]
                    # and what the other threads run meanwhile (one of them may hold the GIL)
                    for tid, other in frames.items():
                        if tid not in (self._ui, threading.get_ident()):
                            top = traceback.extract_stack(other)[-3:]
                            entry.append("  [other] " + " > ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                                                   for f in top))
                    self._samples.append(tuple(entry))

    def __enter__(self) -> "StallMeter":
        self._last = time.perf_counter()
        self._cpu0 = self._last_cpu = time.thread_time()
        self._last_queued = run_queue_wait()
        self._timer.start()
        if self._why:
            threading.Thread(target=self._sample, name="stall-sampler", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()
        self._stop.set()
        self.cpu_s = time.thread_time() - self._cpu0

    def report(self) -> dict:
        gaps = sorted(self.gaps) or [float("inf")]
        own = sorted(g - q for g, q in zip(self.gaps, self.queued_gaps)) or [float("inf")]
        out = {"max_ms": gaps[-1] * 1000, "p99_ms": gaps[int(0.99 * (len(gaps) - 1))] * 1000, "ticks": len(gaps),
               "max_own_ms": own[-1] * 1000,
               "ui_cpu_s": self.cpu_s, "max_cpu_ms": max(self.cpu_gaps, default=0.0) * 1000, "why": []}
        for gap, cpu_gap, samples in sorted(self.stalls, key=lambda s: -s[0])[:5]:
            common = collections.Counter(samples).most_common(2)
            out["why"].append({"gap_ms": gap * 1000, "cpu_ms": cpu_gap * 1000, "samples": len(samples),
                               "stacks": [[n, list(stack)] for stack, n in common]})
        return out


_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def run_queue_wait() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere): a
    tick's gap less this is the stall the app caused (work on the UI thread, or waiting for the GIL or a lock),
    without what the machine's other work added."""
    try:
        return int(_SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def wait_until(cond, timeout_s: float, what: str) -> None:
    """Run the event loop until ``cond()`` (polled every 20 ms) or fail after ``timeout_s``."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    t0 = time.monotonic()
    poll = QTimer()
    poll.setInterval(20)

    def check():
        if cond() or time.monotonic() - t0 > timeout_s:
            loop.quit()

    poll.timeout.connect(check)
    poll.start()
    if not cond():
        loop.exec()
    poll.stop()
    if not cond():
        raise SystemExit(f"timed out waiting for {what}")


def settle(seconds: float) -> None:
    """Keep the event loop running for ``seconds`` (paints, deferred work)."""
    end = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= end, seconds + 5, "the event loop")


def make_window(tmp: Path):
    from PySide6.QtCore import QSettings
    from dnd_gui.window.main_window import MainWindow
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, output_root=tmp / "out", model=None, theme="dark")
    win.confirm_quit = lambda n: True
    win.resize(1366, 768)
    win.show()
    return win


def wait_model(win, path) -> None:
    state = {}
    win.model_ready.connect(lambda m: state.setdefault("ok", True))
    win.model_failed.connect(lambda msg: state.setdefault("error", msg))
    win.load_model(path)
    wait_until(lambda: state, 300, "the model")
    if "error" in state:
        raise SystemExit(f"model failed: {state['error']}")


# --- the flows --------------------------------------------------------------------------------------------
def flow_start(win, args, tmp) -> dict:
    from dnd_gui.jobs.classify import DEMO_MODEL
    with StallMeter(args.why) as meter:
        warm = warm_up()
        wait_model(win, DEMO_MODEL)
        wait_until(warm.is_set, 300, "the imports at start")
        settle(0.5)
    return meter.report()


def warm_up():
    """What the app does once its window is shown: the heavy imports on a background thread (an event)."""
    try:
        from dnd_gui.jobs.background import warm_up_imports
    except ImportError:   # an app from before the warm-up: nothing to wait for
        done = threading.Event()
        done.set()
        return done
    return warm_up_imports()


def flow_first_classification(win, args, tmp) -> dict:
    from dnd_gui.jobs.classify import DEMO_MODEL
    wait_model(win, DEMO_MODEL)
    settle(0.5)
    slide = os.path.abspath(args.slide)
    state = {}
    win.prediction_shown.connect(lambda p: state.setdefault("shown", p))
    win.job_finished.connect(lambda job: state.setdefault("job", job))
    with StallMeter(args.why) as meter:
        win.handle_dropped_files([slide])
        wait_until(lambda: "shown" in state or "job" in state, 300, "the prediction")
        wait_until(lambda: "shown" in state, 5, "the prediction")
        wait_until(lambda: win.view.is_fully_loaded(), 60, "the tiles")
        settle(1.0)
    return meter.report()


def flow_train_and_pan(win, args, tmp) -> dict:
    from PySide6.QtCore import QTimer
    from dnd_engine.project import ExtractionPlan, TrainingPlan
    cohort = Path(args.data) / "cohort"
    session = win.new_project(str(tmp / "proj"))
    session.project.set_slides(str(cohort / "slides"))
    session.project.set_labels(str(cohort / "labels.csv"))
    session.project.save()
    state = {}
    win.slide_loaded.connect(lambda p: state.setdefault("open", p))
    win.open_slide(os.path.abspath(args.slide))
    wait_until(lambda: "open" in state and win.view.is_fully_loaded(), 60, "the slide")
    win.view.set_magnification(20)
    settle(0.5)
    steps = [(150, 0), (0, 120), (-150, 0), (0, -120)]
    pan = QTimer()
    pan.setInterval(40)
    pan.timeout.connect(lambda: (win.view.pan_by(*steps[state.setdefault("i", 0) % 4]),
                                 state.__setitem__("i", state["i"] + 1)))
    plan = TrainingPlan(name="bench", methods=["abmil"], n_clusters=2, epochs_base=8, epochs_expert=6,
                        epochs_student=8, folds=2, seed=3)
    with StallMeter(args.why) as meter:
        pan.start()
        jobs = win.launch_training(ExtractionPlan(extractor="stain_stats"), plan)
        if not jobs:
            raise SystemExit(f"training did not start: {win.last_error}")
        win.show_tab(win.view)  # keep panning the slide while the jobs run
        wait_until(lambda: all(j.state.finished for j in jobs), FLOW_TIMEOUT_S, "the jobs")
        settle(1.0)
        pan.stop()
    bad = [j for j in jobs if j.state.value != "done"]
    if bad:
        raise SystemExit(f"job {bad[0].title} {bad[0].state.value}: {bad[0].error}")
    out = meter.report()
    out["pans"] = state.get("i", 0)
    return out


def flow_results_page(win, args, tmp) -> dict:
    runs = sorted(str(p) for p in Path(args.data, "runs").iterdir())
    view = win.results
    state = {"loaded": 0}
    view.loaded.connect(lambda: state.__setitem__("loaded", state["loaded"] + 1))
    actions = [lambda: view.run_combo.setCurrentIndex(1), lambda: view.fold_combo.setCurrentIndex(3),
               lambda: view.colour_group.button(1).click(), lambda: view.arm_group.button(1).click(),
               lambda: view.run_combo.setCurrentIndex(0), lambda: view.fold_combo.setCurrentIndex(1),
               lambda: view.colour_group.button(0).click(), lambda: view.arm_group.button(0).click()]
    with StallMeter(args.why) as meter:
        win.show_tab(win.results_scroll)
        view.set_runs(runs)
        wait_until(lambda: state["loaded"] >= 1, 300, "the runs")
        settle(0.3)
        for action in actions:
            action()
            settle(0.15)
    return meter.report()


FLOW_FNS = {"start": flow_start, "first classification": flow_first_classification,
            "train + pan": flow_train_and_pan, "results page": flow_results_page}


def run_flow(args) -> None:
    """Inside the child process: one flow in a fresh app, its report as one JSON line on stdout."""
    from PySide6.QtWidgets import QApplication
    from dnd_gui.jobs.background import favour_the_ui_thread
    favour_the_ui_thread()  # as the app does at start
    app = QApplication.instance() or QApplication(["ui_stalls"])
    with tempfile.TemporaryDirectory(prefix="ui_stalls_") as tmp:
        win = make_window(Path(tmp))
        settle(0.5)
        if args.child != "start":
            warm = warm_up()
            wait_until(warm.is_set, 300, "the imports at start")
        report = FLOW_FNS[args.child](win, args, Path(tmp))
        win.shutdown()
        win.close()
        app.processEvents()
    print("RESULT " + json.dumps(report), flush=True)


# --- the parent: data, one process per flow, the table --------------------------------------------------------
def make_data(folder: Path, flows) -> None:
    if "train + pan" in flows:
        from dnd_engine.synth import make_synthetic_cohort
        make_synthetic_cohort(folder / "cohort", n_slides=8, size=1024, seed=11)
    if "results page" in flows:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_results_view import fake_run  # the run folder format the page reads, written without training
        for i, method in enumerate(("abmil", "transmil")):
            fake_run(folder / "runs" / method, n_slides=300, folds=5, dim=512, method=method, seed=i)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slide", default=str(SHARED_CMU if SHARED_CMU.is_file() else CMU),
                    help="the real slide to classify and pan (default: CMU-1-Small-Region.svs)")
    ap.add_argument("--limit", type=float, default=100.0, help="largest allowed stall in ms (default 100)")
    ap.add_argument("--without-load", action="store_true",
                    help="judge each gap less the UI thread's run-queue wait (a machine shared with other work)")
    ap.add_argument("--why", action="store_true", help="print where the UI thread was during the longest stalls")
    ap.add_argument("--flow", action="append", choices=FLOWS, help="run only this flow (repeatable)")
    ap.add_argument("--child", choices=FLOWS, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_flow(args)
        return 0
    flows = args.flow or list(FLOWS)
    results, failed = {}, False
    with tempfile.TemporaryDirectory(prefix="ui_stalls_data_") as data:
        make_data(Path(data), flows)
        for flow in flows:
            cmd = [sys.executable, __file__, "--child", flow, "--data", data, "--slide", args.slide]
            if args.why:
                cmd.append("--why")
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FLOW_TIMEOUT_S + 120)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
                print(f"{flow}: the flow failed (exit {proc.returncode}): " + " | ".join(tail))
                failed = True
                continue
            results[flow] = r = json.loads(line[len("RESULT "):])
            over = (r["max_own_ms"] if args.without_load else r["max_ms"]) > args.limit
            failed |= over
            print(f"{flow:22s} largest gap {r['max_ms']:7.1f} ms ({r['max_own_ms']:5.1f} ms without run-queue waits)"
                  f"   p99 {r['p99_ms']:6.1f} ms   "
                  f"{r['ticks']:5d} ticks   UI CPU {r['ui_cpu_s']:.2f} s, at most {r['max_cpu_ms']:.0f} ms between ticks"
                  + ("   ABOVE THE LIMIT" if over else ""),
                  flush=True)
            for w in r["why"] if args.why else []:
                print(f"    stall {w['gap_ms']:.0f} ms, UI thread CPU {w['cpu_ms']:.0f} ms ({w['samples']} samples)")
                for n, stack in w["stacks"]:
                    ui = [s for s in stack if not s.startswith("  [other]")]
                    print(f"      {n}x: " + " > ".join(ui[-7:]))
                    for s in stack[len(ui):]:
                        print(f"          {s}")
    print(f"limit {args.limit:.0f} ms: " + ("some flow stalled above it" if failed else "every flow stayed below"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
