"""The four D&D stages on one train/validation split, each resumable from its folder.

Layout of a D&D run folder::

    dnd_config.json                     the settings; a different setting in the same folder is refused
    base/                               stage 1: trainer folder (best/last weights, metrics.jsonl, state.json)
    clusters/clusters.json, .csv        stage 2: slide id → cluster, centres, sizes, method, warnings
    clusters/representations.safetensors   the clustered vectors, keyed by slide id (for the cluster explorer)
    experts/expert_{c}/                 stage 3: one trainer folder per cluster
    student/teacher_logits.safetensors  stage 4: cached soft targets (row 0 base, rows 1.. experts)
    student/                            stage 4: trainer folder of the distilled model

An interrupted run continues where it stopped: finished stages are read back, an unfinished training stage
resumes from its last epoch (bit-identically, see the trainer).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from ..atomic import atomic_path, ensure_dir, write_json_atomic
from ..bags import BagDataset
from ..device import resolve_device
from ..errors import DnDError
from ..models import MILModel, build_model
from ..progress import CancelFn, ProgressFn, check_cancelled
from ..training.trainer import TrainResult, train_model
from .clustering import (Clustering, cluster_label_counts, fit_clusters, legacy_random_partition,
                         slide_representations)
from .cohort_checks import cluster_warnings
from .distill import DistillLoss, load_teacher_logits, save_teacher_logits, teacher_logits
from .presets import DnDConfig

StageEpochFn = Callable[[Dict[str, object]], None]


@dataclass
class DnDResult:
    base: MILModel
    clustering: Clustering
    experts: List[MILModel]
    student: MILModel
    histories: Dict[str, List[Dict[str, object]]] = field(default_factory=dict)
    out_dir: Optional[Path] = None


def _seeded_model(cfg: DnDConfig, in_dim: int, n_classes: int, seed: int) -> MILModel:
    torch.manual_seed(seed)
    return build_model(cfg.model, in_dim=in_dim, n_classes=n_classes, **cfg.model_options)


def _check_config(out: Path, cfg: DnDConfig, train_ds: BagDataset, val_ds: Optional[BagDataset]) -> None:
    record = {"dnd": cfg.to_dict(), "train_ids": list(train_ds.slide_ids),
              "val_ids": list(val_ds.slide_ids) if val_ds is not None else [], "class_names": train_ds.class_names}
    for part in ("base", "expert", "student"):
        record["dnd"][part].pop("device", None)
    path = out / "dnd_config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != record:
            raise DnDError(f"{out} holds a D&D run with other data or settings; choose another output folder "
                           "or delete it")
    else:
        write_json_atomic(path, record)


def expected_steps(cfg: DnDConfig, n_train: int) -> int:
    """Training steps of the whole pipeline (experts counted as one full pass of the training split)."""
    return n_train * (cfg.base.epochs + cfg.expert.epochs + 1 + cfg.student.epochs)


def run_dnd(train_ds: BagDataset, val_ds: Optional[BagDataset], cfg: DnDConfig, out_dir: Optional[str | Path] = None,
            *, progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None,
            on_epoch: Optional[StageEpochFn] = None, log: Optional[Callable[[str], None]] = None) -> DnDResult:
    """Base → clusters → experts → distilled student, on ``train_ds`` with selection on ``val_ds``."""
    cfg.validate()
    say = log or (lambda msg: None)
    if len(train_ds) == 0:
        raise DnDError("the training split is empty")
    in_dim = train_ds.feature_dim()
    n_classes = len(train_ds.class_names)
    device = resolve_device(cfg.base.device)
    out = ensure_dir(out_dir) if out_dir is not None else None
    if out is not None:
        _check_config(out, cfg, train_ds, val_ds)
    n = len(train_ds)
    total = expected_steps(cfg, n)
    offset = [0]

    def stage_progress(done: int, _total: int, msg: str) -> None:
        if progress is not None:
            progress(min(total, offset[0] + done), total, msg)

    def stage_epoch(stage: str):
        return (lambda rec: on_epoch({"stage": stage, **rec})) if on_epoch is not None else None

    def sub(name: str) -> Optional[Path]:
        return out / name if out is not None else None

    histories: Dict[str, List[Dict[str, object]]] = {}

    # 1. base model -------------------------------------------------------------------------------------------
    say("stage 1/4: base model")
    base = _seeded_model(cfg, in_dim, n_classes, cfg.base.seed)
    res: TrainResult = train_model(base, train_ds, val_ds, cfg.base, sub("base"), progress=stage_progress,
                                   cancelled=cancelled, on_epoch=stage_epoch("base"), tag="base ")
    histories["base"] = res.history
    offset[0] += cfg.base.epochs * n
    check_cancelled(cancelled)

    # 2. clustering ---------------------------------------------------------------------------------------------
    say(f"stage 2/4: clustering {n} training slides into {cfg.n_clusters} groups ({cfg.cluster_on})")
    clustering = _cluster_stage(base, train_ds, cfg, sub("clusters"), device, cancelled)
    sizes = clustering.sizes()
    counts = cluster_label_counts(clustering, train_ds)
    say("  cluster sizes " + ", ".join(f"{c}: {s} ({counts[c]})" for c, s in enumerate(sizes)))
    for w in clustering.extra.get("warnings") or cluster_warnings(counts):
        say(f"  warning: {w['text']}")

    # 3. experts ------------------------------------------------------------------------------------------------
    experts: List[MILModel] = []
    for c in range(clustering.n_clusters):
        members = clustering.members(c)
        if not members:
            raise DnDError(f"cluster {c} is empty; lower the number of clusters")
        say(f"stage 3/4: expert {c + 1}/{clustering.n_clusters} on {len(members)} slides")
        if cfg.expert_init == "base":
            expert = copy.deepcopy(base)
        else:
            expert = _seeded_model(cfg, in_dim, n_classes, cfg.expert.seed + 1000 * (c + 1))
        r = train_model(expert, train_ds.subset(members), val_ds, cfg.expert, sub(f"experts/expert_{c}"),
                        progress=stage_progress, cancelled=cancelled,
                        on_epoch=stage_epoch(f"expert_{c}"), tag=f"expert {c} ",
                        label=f"expert {c + 1}/{clustering.n_clusters} ")   # tag: 0-based, in the checkpoints
        histories[f"expert_{c}"] = r.history
        offset[0] += cfg.expert.epochs * len(members)
        experts.append(expert)
    check_cancelled(cancelled)

    # 4. distillation -------------------------------------------------------------------------------------------
    say("stage 4/4: distillation (teacher soft targets computed once)")
    cached = _teacher_stage([base] + experts, train_ds, sub("student"), device, stage_progress, cancelled)
    offset[0] += n
    if cfg.student_init == "base":
        student = copy.deepcopy(base)
    else:
        student = _seeded_model(cfg, in_dim, n_classes, cfg.student.seed + 99)
    loss = DistillLoss(cached, temperature=cfg.temperature, lambda_ce=cfg.lambda_ce, lambda_base=cfg.lambda_base,
                       lambda_expert=cfg.lambda_expert)
    r = train_model(student, train_ds, val_ds, cfg.student, sub("student"), progress=stage_progress,
                    cancelled=cancelled, on_epoch=stage_epoch("student"), loss_fn=loss, tag="student ")
    histories["student"] = r.history
    if progress is not None:
        progress(total, total, "done")
    return DnDResult(base, clustering, experts, student, histories, out)


def _cluster_stage(base: MILModel, train_ds: BagDataset, cfg: DnDConfig, folder: Optional[Path], device,
                   cancelled) -> Clustering:
    if folder is not None and (folder / "clusters.json").is_file():
        clustering = Clustering.from_json(json.loads((folder / "clusters.json").read_text()))
        if clustering.slide_ids == list(train_ds.slide_ids):
            return clustering
    x = slide_representations(base, train_ds, cfg.cluster_on, device, cancelled)
    lo, hi = cfg.size_bounds(len(train_ds))
    clustering = fit_clusters(x, train_ds.slide_ids, cfg.n_clusters, constrained=cfg.constrained, size_min=lo,
                              size_max=hi, seed=cfg.seed, input_name=cfg.cluster_on)
    if cfg.legacy_random_partition:
        clustering = legacy_random_partition(clustering, seed=cfg.seed)
    # saved with the clusters, so `dnd train`, the Results page and a later reader see what they mean
    clustering.extra["warnings"] = cluster_warnings(cluster_label_counts(clustering, train_ds))
    if folder is not None:
        from safetensors.torch import save_file
        ensure_dir(folder)
        with atomic_path(folder / "representations.safetensors") as tmp:
            save_file({"representations": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))}, str(tmp),
                      metadata={"slide_ids": json.dumps(list(train_ds.slide_ids)), "input": cfg.cluster_on})
        clustering.save(folder)
    return clustering


def _teacher_stage(teachers: List[MILModel], train_ds: BagDataset, folder: Optional[Path], device, progress,
                   cancelled) -> Dict[str, torch.Tensor]:
    path = folder / "teacher_logits.safetensors" if folder is not None else None
    if path is not None and path.is_file():
        cached = load_teacher_logits(path)
        if set(cached) == set(train_ds.slide_ids) and all(v.shape[0] == len(teachers) for v in cached.values()):
            return cached
    cached = teacher_logits(teachers, train_ds, device, progress=progress, cancelled=cancelled)
    if path is not None:
        ensure_dir(folder)
        save_teacher_logits(cached, path, ["base"] + [f"expert_{i}" for i in range(len(teachers) - 1)])
    return cached


def load_dnd_models(run: str | Path, device="cpu") -> Dict[str, MILModel]:
    """``{"student", "base", "expert_0", ...}`` from a finished D&D run folder (each its selected weights)."""
    from ..models.io import load_model
    run = Path(run)
    out: Dict[str, MILModel] = {}
    for name, path in [("student", run / "student" / "best.safetensors"), ("base", run / "base" / "best.safetensors")] + \
            [(p.name, p / "best.safetensors") for p in sorted((run / "experts").glob("expert_*"),
                                                              key=lambda q: int(q.name.split("_")[1]))]:
        if path.is_file():
            out[name] = load_model(path, device)[0]
    if "student" not in out:
        raise DnDError(f"{run} holds no finished D&D student (student/best.safetensors)")
    return out


__all__ = ["DnDResult", "expected_steps", "load_dnd_models", "run_dnd"]
