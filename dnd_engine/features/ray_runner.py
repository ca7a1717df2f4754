"""A cohort's extraction on a Ray cluster (``dnd extract --ray``, the app's cluster setting).

Why Ray: many machines, each with its own GPUs, without a scheduler of ours. What runs where:
- the driver (this process) plans the run exactly as a local run does (settings, folder claim, resume), hands
  out the work, and writes every features file with the same atomic :class:`~.writer.FeatureWriter` (so the
  files are identical to a local run's and nothing half-written is ever renamed into place);
- each slide is prepared (tissue, grid, patch file, QC images: :func:`~.extract._prepare_in_child`) in a Ray
  CPU task, on whichever node has a free core: slide and output folders must be on a folder every node sees;
- its patches are read in Ray CPU tasks, one work unit (a tile band or a batch of ``read_region`` requests,
  the same units and the same :class:`~.patch_dataset.PatchReader` as a local run) per task;
- they are encoded by actors holding the model: one per GPU of the cluster, or one CPU actor on a cluster
  without GPUs. Read patches go from the reading node to the actor through Ray's object store, and only the
  features come back to the driver.

Ray stays optional: this module imports it only when a run asks for it, and without it says how to install it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import __version__
from ..device import usable_cores
from ..errors import Cancelled, DnDError
from ..progress import CancelFn, ProgressFn
from .patch_dataset import PatchReader, PatchRequest, collate_patches
from .writer import FeatureWriter
from ..text import one_line

log = logging.getLogger(__name__)

RAY_MISSING = "--ray needs Ray: pip install 'dnd-studio[cluster]'"

#: read units in flight per CPU of the cluster: enough to keep every core and encoder busy, few enough that
#: the object store holds only a few batches of patches per core
UNITS_PER_CPU = 2


def check_address(address: str) -> str:
    """``auto``, ``local``, or a cluster's ``HOST:PORT`` (or ``ray://HOST:PORT``), stripped; else one line why."""
    a = str(address or "").strip()
    if a in ("auto", "local") or re.fullmatch(r"(ray://)?[A-Za-z0-9_.\-]+:\d{1,5}", a):
        return a
    raise DnDError(f"Ray address must be auto, local or HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}")


def import_ray():
    """Ray, or :class:`DnDError` with how to install it (usage statistics stay off: no call home)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise DnDError(RAY_MISSING) from None
    return ray


@contextmanager
def connected(address: str):
    """Ray connected for one run: ``local`` starts a private instance on this machine (127.0.0.1 only, no
    dashboard) that ends with the run; ``auto`` joins the cluster RAY_ADDRESS names or the one running here;
    anything else is a cluster's address. Disconnects afterwards (a cluster keeps running)."""
    address = check_address(address)
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
    kw = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
              configure_logging=False)
    try:
        if address == "local":
            ray.init(address="local", num_cpus=usable_cores(), _node_ip_address="127.0.0.1",
                     object_store_memory=2 * 1024 ** 3, **kw)
        else:
            ray.init(address=os.environ.get("RAY_ADDRESS") or "auto" if address == "auto" else address, **kw)
    except Exception as exc:     # ConnectionError, a timeout, a version mismatch: one line, never a traceback
        where = "a local Ray instance" if address == "local" else f"the Ray cluster at {address}"
        raise DnDError(f"cannot start or reach {where}: {one_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# --- what runs on the cluster's workers ---------------------------------------------------------------------
_READER: Optional[PatchReader] = None


def _read_unit(unit):
    """One work unit's patches as (uint8 NHWC array, requests, errors): the local run's reader and collate.
    A worker process keeps its reader (and its open slides) between tasks."""
    global _READER
    if _READER is None:
        _READER = PatchReader()
    imgs, reqs, errs = collate_patches(_READER.__getitems__(unit))
    return imgs.numpy(), reqs, errs


class _Encoder:
    """An actor holding the model on its device (the GPU Ray gave it, or the CPU)."""

    def __init__(self, name: str, weights: Optional[str], device: str, precision: str):
        from ..device import resolve_device
        from .registry import build_extractor
        self.extractor = build_extractor(name, weights, device=resolve_device(device), precision=precision)

    def info(self) -> dict:
        e = self.extractor
        return {"version": __version__, "dim": e.dim, "device": str(e.device), "precision": str(e.precision)}

    def encode(self, unit):
        imgs, reqs, errs = unit
        t = torch.from_numpy(imgs)
        if self.extractor.device.type != "cpu":
            t = t.to(self.extractor.device)
        return self.extractor(t).float().cpu().numpy(), reqs, errs


# --- the driver ----------------------------------------------------------------------------------------------
def _units(i: int, plan, config, out_size: int) -> list:
    """A prepared slide's work units: tile bands, or batches of read_region requests (one slide per unit, so a
    failing slide's units can be dropped alone)."""
    from .extract import tile_bands
    g = plan.grid
    if plan.tile_spec is not None:
        return list(tile_bands(i, g, plan.tile_spec, config.batch_size, 0.0))
    reqs = [PatchRequest(i, row, str(plan.path), int(x), int(y), g.patch_level, g.read_size, out_size)
            for row, (x, y) in enumerate(g.coords)]
    return [reqs[k:k + config.batch_size] for k in range(0, len(reqs), config.batch_size)]


def _encoder_layout(ray, device: str) -> tuple[int, dict, str]:
    """(actors, their resources, their device): one per GPU of the cluster; one CPU actor without GPUs (or
    when the run asks for the CPU)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus > 0 and not device.startswith("cpu"):
        return gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    return 1, {"num_cpus": 1}, "cpu"


def _task_error(ray, path: Path, exc: BaseException) -> str:
    """One line for a slide whose task failed on the cluster: the engine's own message where there is one."""
    if isinstance(exc, ray.exceptions.WorkerCrashedError) or "worker died" in str(exc).lower():
        return f"{path.name}: the slide reader crashed on this file (its Ray worker died): it is damaged or crafted"
    cause = getattr(exc, "cause", None)
    if isinstance(cause, DnDError):
        return str(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {one_line(cause)}"
    return one_line(exc)


def extract_on_ray(paths: list, out_dir: Path, fdir: Path, config, extractor, claim,
                   progress: ProgressFn, slide_progress: ProgressFn,
                   cancelled: Optional[CancelFn]) -> list:
    """The body of :func:`~.extract.extract_cohort` on a Ray cluster, after it has checked the settings and
    claimed the folder (``claim``, released here). Same results, summary, progress calls and cancellation."""
    try:
        with connected(config.ray) as ray:
            return _run(ray, paths, out_dir, fdir, config, extractor, claim, progress, slide_progress, cancelled)
    except BaseException:
        claim.release()
        raise


def _run(ray, paths, out_dir, fdir, config, extractor, claim, progress, slide_progress, cancelled) -> list:
    from ..slides.slide import slide_id
    from .extract import SlideResult, _failed, _file_attrs, _prepare_in_child, _write_summary

    n_slides = len(paths)
    results: dict = {}

    def on_result(i: int, r) -> None:
        results[i] = r
        _write_summary(fdir, [results[k] for k in sorted(results)])
        progress(len(results), n_slides, f"{r.slide_id}: {r.status}")

    progress(0, n_slides, "starting on the Ray cluster")
    n_enc, resources, device = _encoder_layout(ray, config.device)
    encoder_cls = ray.remote(max_restarts=0, **resources)(_Encoder)
    encoders = [encoder_cls.remote(config.extractor, config.weights, device, config.precision)
                for _ in range(n_enc)]
    infos = ray.get([e.info.remote() for e in encoders])
    for info in infos:
        if info["version"] != __version__:
            raise DnDError(f"the Ray cluster runs dnd {info['version']}, this is {__version__}: install the same "
                           "version on every node")
        if info["dim"] != extractor.dim:
            raise DnDError(f"the cluster's '{config.extractor}' gives {info['dim']}-d features, here "
                           f"{extractor.dim}-d: check its weights")
        if info["precision"] != str(extractor.precision):   # the files must say how they were computed
            raise DnDError(f"the cluster's encoders run in {info['precision']} where this computer resolves "
                           f"--precision {config.precision} to {extractor.precision}: give --precision "
                           f"{info['precision']} (or fp32) explicitly")
    log.info("Ray: %d encoder(s) on %s", n_enc, ", ".join(i["device"] for i in infos))
    prepare = ray.remote(num_cpus=1, max_retries=0)(_prepare_in_child)
    read = ray.remote(num_cpus=1, max_retries=0)(_read_unit)
    out_size = extractor.spec.input_size or config.patch_size
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))

    todo = deque(range(n_slides))
    preparing: dict = {}            # ref -> slide index
    units: deque = deque()          # (slide index, unit) ready to read
    in_flight: dict = {}            # encode ref -> (slide index, read ref, encoder)
    load = {id(e): 0 for e in encoders}
    plans: dict = {}                # slide index -> _SlidePlan being read
    left: dict = {}                 # slide index -> units not yet back
    failed: set = set()

    def fail(i: int, r) -> None:
        plan = plans.pop(i, None)
        if plan is not None and plan.writer is not None:
            plan.writer.abort()
        if plan is not None:
            r.info, r.reader = plan.info, plan.reader
        failed.add(i)
        left.pop(i, None)
        on_result(i, r)

    try:
        while todo or preparing or units or in_flight:
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled by the user")
            while todo and len(preparing) < cpus + 1:
                i = todo.popleft()
                preparing[prepare.remote(i, paths[i], out_dir, config, out_size)] = i
            while units and len(in_flight) < UNITS_PER_CPU * cpus:
                i, unit = units.popleft()
                if i in failed:
                    continue
                enc = min(encoders, key=lambda e: load[id(e)])
                r_ref = read.remote(unit)
                in_flight[enc.encode.remote(r_ref)] = (i, r_ref, enc)
                load[id(enc)] += 1
            ready, _ = ray.wait(list(preparing) + list(in_flight), num_returns=1, timeout=0.25)
            for ref in ready:
                if ref in preparing:
                    i = preparing.pop(ref)
                    try:
                        plan = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        r = _failed(Path(paths[i]), exc)
                        r.error = _task_error(ray, Path(paths[i]), exc)
                        fail(i, r)
                        continue
                    if isinstance(plan, SlideResult):
                        on_result(i, plan)
                        continue
                    work = _units(i, plan, config, out_size)
                    if not work:
                        fail(i, SlideResult(plan.slide_id, str(plan.path), "failed", error="no patches to read"))
                        continue
                    plans[i], left[i] = plan, len(work)
                    units.extend((i, u) for u in work)
                    continue
                i, _, enc = in_flight.pop(ref)
                load[id(enc)] -= 1
                if i in failed:
                    continue
                plan = plans[i]
                try:
                    feats, reqs, errors = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if isinstance(exc, ray.exceptions.ActorDiedError):
                        raise DnDError(f"a Ray encoder died: {one_line(exc)}") from None
                    fail(i, SlideResult(plan.slide_id, str(plan.path), "failed",
                                        error=_task_error(ray, plan.path, exc)))
                    continue
                try:
                    bad = [e for e in errors if e]
                    if bad:
                        raise DnDError(bad[0] if bad[0].startswith(plan.path.name) else f"{plan.path.name}: {bad[0]}")
                    if plan.writer is None:
                        plan.writer = FeatureWriter(plan.paths["h5"], plan.paths["pt"], plan.grid.coords,
                                                    plan.attrs, extractor.dim, _file_attrs(extractor, config, plan))
                    plan.writer.write(np.array([r.row for r in reqs]), feats)
                    slide_progress(plan.writer.done, plan.writer.n,
                                   f"{plan.slide_id}: {plan.writer.done}/{plan.writer.n} patches")
                    left[i] -= 1
                    if left[i] == 0:
                        plan.writer.finish()
                        del plans[i], left[i]
                        on_result(i, SlideResult(plan.slide_id, str(plan.path), "done", plan.writer.n,
                                                 time.perf_counter() - plan.t0, features_h5=str(plan.paths["h5"]),
                                                 features_pt=str(plan.paths["pt"]), info=plan.info,
                                                 reader=plan.reader))
                except Exception as exc:
                    fail(i, _failed(plan.path, exc))
    except Cancelled:
        for ref in list(preparing) + [v[1] for v in in_flight.values()]:
            ray.cancel(ref, force=True)
        for i, plan in plans.items():
            if plan.writer is not None:
                plan.writer.abort()
        for i in list(plans) + list(preparing.values()):     # the slides in flight, as a local run says
            if i not in results:
                results[i] = SlideResult(slide_id(Path(paths[i])), str(paths[i]), "cancelled",
                                         error="cancelled by the user")
        _write_summary(fdir, [results[k] for k in sorted(results)])
        raise
    except BaseException:
        for plan in plans.values():
            if plan.writer is not None:
                plan.writer.abort()
        raise
    finally:
        for e in encoders:
            ray.kill(e)
    claim.release(finished=True)
    return [results[k] for k in sorted(results)]
