"""Many `dnd extract` processes on one folder (issue 21, item 4): per-slide locks (dnd_engine.features.claims),
--shard for job arrays, and a summary that several processes merge instead of clobbering."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from dnd_engine.errors import DnDError
from dnd_engine.features import extract as extract_mod
from dnd_engine.features.claims import (HOSTNAME, PAUSE_ENV, Holder, SlideLocks, is_stale, parse_shard,
                                        shard_of)
from dnd_engine.features.extract import SlideResult, _write_summary
from dnd_engine.synth import make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]
N_SLIDES = 6


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(path: Path, host: str, pid: int, age: float = 0.0) -> Holder:
    h = Holder(host, pid, time.time() - age, f"token-{pid}-{host}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(h.as_json())
    os.utime(path, (time.time() - age, time.time() - age))
    return h


def _token(path: Path) -> str:
    return json.loads(path.read_text())["token"]


# --- claims.py ---------------------------------------------------------------------------------------------

def test_a_free_slide_is_claimed_with_host_pid_and_start_and_released(tmp_path):
    with SlideLocks(tmp_path / "locks") as locks:
        assert locks.claim("s1") is None and locks.holds("s1")
        doc = json.loads((tmp_path / "locks" / "s1.lock").read_text())
        assert doc["host"] == HOSTNAME and doc["pid"] == os.getpid() and abs(doc["start"] - time.time()) < 3600
        assert locks.claim("s1") is None                      # held already: still ours
        locks.release("s1")
        assert not (tmp_path / "locks" / "s1.lock").exists() and not locks.holds("s1")
        assert locks.claim("s2") is None
    assert os.listdir(tmp_path / "locks") == []                # close released s2; no temporary file left


def test_a_live_lock_is_respected(tmp_path):
    """Another holder alive on this host (here: a second SlideLocks in this very process) keeps its slide."""
    with SlideLocks(tmp_path / "locks") as first, SlideLocks(tmp_path / "locks") as second:
        assert first.claim("s") is None
        holder = second.claim("s")
        assert holder is not None and holder.pid == os.getpid() and holder.host == HOSTNAME
        assert f"pid {os.getpid()} on host {HOSTNAME}" in holder.describe()
        assert not second.holds("s") and first.holds("s")


def test_a_dead_processs_lock_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / "locks" / "s.lock"
    _write_lock(path, HOSTNAME, _dead_pid())
    with SlideLocks(tmp_path / "locks") as locks:
        assert locks.claim("s") is None
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_takers_marker_left_by_a_dead_taker_does_not_block_the_slide(tmp_path):
    stale = _write_lock(tmp_path / "locks" / "s.lock", HOSTNAME, _dead_pid())
    _write_lock(tmp_path / "locks" / f"s-takeover-{stale.token}", HOSTNAME, _dead_pid())
    with SlideLocks(tmp_path / "locks") as locks:
        assert locks.claim("s") is None
    assert os.listdir(tmp_path / "locks") == []


def test_another_hosts_lock_is_taken_over_only_when_older_than_the_timeout(tmp_path):
    fresh = tmp_path / "locks" / "fresh.lock"
    old = tmp_path / "locks" / "old.lock"
    h = _write_lock(fresh, "another-host", 4242, age=10)
    _write_lock(old, "another-host", 4242, age=700)
    with SlideLocks(tmp_path / "locks", timeout=600) as locks:
        assert locks.claim("fresh") == h                       # its holder may be alive over there
        assert locks.claim("old") is None                      # not refreshed for 700 s > 600 s: stale
    assert not is_stale(h, 10, 600) and is_stale(h, 700, 600)
    # a live pid on this host whose heartbeat stopped (a reused pid, a hung holder) is stale after the timeout
    assert is_stale(Holder(HOSTNAME, os.getpid(), 0.0, "t"), 700, 600)
    assert not is_stale(Holder(HOSTNAME, os.getpid(), 0.0, "t"), 10, 600)


def test_the_holder_refreshes_its_lock_while_it_works(tmp_path):
    with SlideLocks(tmp_path / "locks", heartbeat=0.05) as locks:
        locks.claim("s")
        path = tmp_path / "locks" / "s.lock"
        os.utime(path, (1, 1))
        for _ in range(400):
            if path.stat().st_mtime > 1:
                break
            time.sleep(0.05)
        assert path.stat().st_mtime > 1


def test_a_lock_taken_over_from_its_holder_is_left_to_the_taker(tmp_path):
    path = tmp_path / "locks" / "s.lock"
    with SlideLocks(tmp_path / "locks") as locks:
        locks.claim("s")
        taker = _write_lock(path, "another-host", 77)          # as if another host judged it stale
        locks.release("s")
        assert _token(path) == taker.token


def test_concurrent_takers_of_a_stale_lock_threads_one_wins(tmp_path):
    path = tmp_path / "locks" / "s.lock"
    for _ in range(5):
        _write_lock(path, HOSTNAME, _dead_pid())
        lockers = [SlideLocks(tmp_path / "locks") for _ in range(8)]
        go = threading.Barrier(len(lockers))
        won = []

        def take(lk):
            go.wait()
            if lk.claim("s") is None:
                won.append(lk)

        threads = [threading.Thread(target=take, args=(lk,)) for lk in lockers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        assert _token(path) == won[0].held["s"].token
        for lk in lockers:
            lk.close()
        assert not path.exists()
        assert [p.name for p in (tmp_path / "locks").iterdir()] == []


def _take_in_process(folder, barrier, done, results):
    locks = SlideLocks(folder)
    barrier.wait()
    results.put(locks.claim("s") is None)
    done.wait()           # a winner stays alive (its lock live) until every taker has tried
    locks.close()


def test_concurrent_takers_of_a_stale_lock_processes_one_wins(tmp_path):
    folder = tmp_path / "locks"
    _write_lock(folder / "s.lock", HOSTNAME, _dead_pid())
    ctx = mp.get_context("fork")
    n = 4
    barrier, done, results = ctx.Barrier(n), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_take_in_process, args=(folder, barrier, done, results)) for _ in range(n)]
    for p in procs:
        p.start()
    wins = [results.get(timeout=120) for _ in range(n)]
    done.set()
    for p in procs:
        p.join(60)
    assert sum(wins) == 1 and all(p.exitcode == 0 for p in procs)
    assert not (folder / "s.lock").exists()


def test_parse_shard_and_shard_of():
    assert parse_shard("2/8") == (2, 8) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("3/2", "0/2", "x", "1/0", "-1/2", "1/2/3", ""):
        with pytest.raises(DnDError, match="I/N"):
            parse_shard(bad)
    paths = [Path(f"/d/s{k:02d}.svs") for k in range(11)]
    parts = [shard_of(paths, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(p for part in parts for p in part) == sorted(paths)             # every slide, once
    assert [len(p) for p in parts] == [4, 4, 3]
    assert shard_of(list(reversed(paths)), "2/3") == list(reversed(parts[1]))    # not the listing's order
    assert shard_of(paths, None) == paths


def test_summary_rows_of_several_processes_are_merged(tmp_path):
    """Each process writes its own view; the file keeps every slide's best-informed row."""
    _write_summary(tmp_path, [SlideResult("a", "/a", "done", 5), SlideResult("b", "/b", "locked", error="x")])
    _write_summary(tmp_path, [SlideResult("a", "/a", "locked", error="by pid 1"),
                              SlideResult("b", "/b", "done", 7), SlideResult("c", "/c", "failed", error="bad")])
    _write_summary(tmp_path, [SlideResult("a", "/a", "skipped", 5), SlideResult("c", "/c", "done", 3)])
    with open(tmp_path / "extraction_summary.csv") as f:
        rows = {r["slide_id"]: r for r in csv.DictReader(f)}
    assert {k: r["status"] for k, r in rows.items()} == {"a": "done", "b": "done", "c": "done"}
    assert rows["b"]["n_patches"] == "7" and rows["b"]["process"].startswith(f"{os.getpid()}@")


# --- dnd extract, several processes ------------------------------------------------------------------------

def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


def _extract_cmd(slides: Path, out: Path, *extra) -> list:
    return [sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(slides), "--out", str(out),
            "--extractor", "stain_stats", "--compile", "off", "--device", "cpu", "--workers", "1", "--quiet",
            *map(str, extra)]


def _extract(slides: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    r = subprocess.run(_extract_cmd(slides, out, *extra), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    return r


def _statuses(stdout: str) -> dict:
    """{slide id: status} from `dnd extract`'s table."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("synth_"):
            out[parts[0]] = parts[1]
    return out


def _features(out: Path) -> dict:
    res = {}
    for f in sorted((out / "features_stain_stats" / "h5_files").glob("*.h5")):
        with h5py.File(f, "r") as h:
            res[f.stem] = (h["features"][:], h["coords"][:])
    return res


def _assert_equal_features(ref: dict, got: dict) -> None:
    assert set(got) == set(ref)
    for k, (F, C) in ref.items():
        G, D = got[k]
        assert np.array_equal(C, D) and np.allclose(F, G, rtol=1e-5, atol=1e-6), k


def _left_behind(out: Path) -> list:
    return [p for p in out.rglob("*") if p.is_file() and (".lock" in p.name or p.name.endswith((".part", ".tmp")))]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """(slides folder, single run's output folder, its features)."""
    root = tmp_path_factory.mktemp("claims")
    make_synthetic_cohort(root / "cohort", n_slides=N_SLIDES, size=1536, seed=3)
    slides = root / "cohort" / "slides"
    r = _extract(slides, root / "ref")
    assert set(_statuses(r.stdout).values()) == {"done"}
    ref = _features(root / "ref")
    assert len(ref) == N_SLIDES
    return slides, root / "ref", ref


def test_three_processes_at_once_do_every_slide_exactly_once(cohort, tmp_path):
    slides, _, ref = cohort
    out = tmp_path / "par"
    procs = [subprocess.Popen(_extract_cmd(slides, out), env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, (so[-2000:], se[-2000:])
    done = [{s for s, st in _statuses(so).items() if st == "done"} for so, _ in outs]
    assert set().union(*done) == set(ref)                              # every slide extracted...
    assert sum(len(d) for d in done) == N_SLIDES                       # ...by exactly one process
    for so, _ in outs:   # what a process did not do itself, it found done or being done by another
        assert set(_statuses(so).values()) <= {"done", "skipped", "locked"}
        assert all("being extracted by pid" in line for line in so.splitlines() if " locked " in line)
    _assert_equal_features(ref, _features(out))
    assert _left_behind(out) == []
    assert not any((out / "features_stain_stats" / "locks").iterdir())
    with open(out / "features_stain_stats" / "extraction_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["slide_id"] for r in rows) == sorted(ref) and {r["status"] for r in rows} == {"done"}
    doc = json.loads((out / "features_stain_stats" / "extraction.json").read_text())
    assert "shard" not in doc["config"]


def test_shards_together_equal_a_single_run(cohort, tmp_path):
    slides, _, ref = cohort
    out = tmp_path / "sh"
    parts = [set(_statuses(_extract(slides, out, "--shard", f"{i}/2").stdout)) for i in (1, 2)]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(ref)
    assert abs(len(parts[0]) - len(parts[1])) <= 1
    _assert_equal_features(ref, _features(out))
    assert _left_behind(out) == []
    with open(out / "features_stain_stats" / "extraction_summary.csv") as f:
        assert sorted(r["slide_id"] for r in csv.DictReader(f)) == sorted(ref)     # both shards' rows


def test_a_killed_holders_slides_are_taken_over(cohort, tmp_path):
    slides, _, ref = cohort
    out = tmp_path / "kill"
    p = subprocess.Popen(_extract_cmd(slides, out), env=_env(**{PAUSE_ENV: "600"}), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        line = p.stdout.readline()
        assert PAUSE_ENV in line, line
        locks = list((out / "features_stain_stats" / "locks").glob("*.lock"))
        assert len(locks) == 1 and json.loads(locks[0].read_text())["pid"] == p.pid
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert locks[0].exists()                                           # the killed holder's lock stays...
    r = _extract(slides, out)
    assert set(_statuses(r.stdout).values()) == {"done"}               # ...and is taken over: every slide done
    assert "stale lock" in r.stderr
    _assert_equal_features(ref, _features(out))
    assert _left_behind(out) == []


def test_extract_help_and_bad_shard_values():
    help_text = subprocess.run([sys.executable, "-m", "dnd_engine.cli", "extract", "--help"], env=_env(),
                               capture_output=True, text=True).stdout
    assert "--shard" in help_text and "--lock-timeout" in help_text
    for extra in (["--shard", "3/2"], ["--shard", "0/2"], ["--shard", "x"], ["--lock-timeout", "0"]):
        r = subprocess.run(_extract_cmd(ROOT, ROOT / "never-written", *extra), env=_env(), capture_output=True,
                           text=True)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (extra, r.stderr)
        assert r.stderr.startswith(f"error: {extra[0]} ") and "Traceback" not in r.stderr
    assert not (ROOT / "never-written").exists()


def test_a_slide_locked_by_another_process_is_reported_not_extracted(cohort, tmp_path):
    """In-process: a live holder's slide comes back 'locked' (who holds it in its error), its lock untouched;
    the rest is done. extract_slide, which must return features, refuses it with that reason."""
    slides, _, ref = cohort
    out = tmp_path / "one"
    cfg = extract_mod.ExtractConfig(num_workers=0, compile="off", device="cpu")
    first = sorted(ref)[0]
    lock = extract_mod.feature_dir_for(out, "stain_stats") / "locks" / f"{first}.lock"
    with SlideLocks(lock.parent) as other:
        assert other.claim(first) is None
        res = {r.slide_id: r for r in extract_mod.extract_cohort(slides, out, cfg)}
        assert other.holds(first) and lock.exists()
        with pytest.raises(DnDError, match=f"being extracted by pid {os.getpid()}"):
            extract_mod.extract_slide(slides / f"{first}.tif", out, cfg)
    assert res[first].status == "locked" and f"pid {os.getpid()} on host" in res[first].error
    assert {k for k, r in res.items() if r.status == "done"} == set(ref) - {first}
    assert not lock.exists()
