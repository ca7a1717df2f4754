"""Train one MIL model, one bag per step, with per-epoch checkpoints so an interrupted run resumes exactly.

Follows the authors' loop (MariosPapadopoulos/DnD_MIL ``train_base_model``): batch size 1, SGD (momentum 0.9)
or Adam, fixed epochs, validation every epoch, the checkpoint kept when validation accuracy strictly improves,
reloaded at the end. Differences: the first epoch always counts as an improvement (theirs starts from 0.0 and
would never save when validation accuracy stays 0); early stopping with patience is optional (off by default,
as theirs); the shuffling and dropout RNG is re-seeded from (seed, epoch) every epoch, so a resumed run is
bit-identical to an uninterrupted one.

A checkpoint is one atomic commit: the weights and optimizer files carry the epoch in their names
(``last.e7.safetensors``), ``state.json`` is renamed into place last and names the files it belongs to, and
only then is ``best.safetensors`` (the name other code reads) refreshed and the files of older checkpoints
removed. A kill at any point leaves either the old checkpoint or the new one, never a mix; resuming reads
``state.json`` and the files it names (folders written before the names still resume).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_path, ensure_dir, remove_stale_temps, write_json_atomic, write_text_atomic
from ..bags import BagDataset
from ..device import resolve_device
from ..errors import DnDError
from ..models import MILModel
from ..models.io import save_model
from ..progress import CancelFn, ProgressFn, check_cancelled
from .metrics import classification_metrics

SELECTIONS = ("best_val_acc", "best_val_auc", "best_val_loss", "last")
CHECKPOINT_SECONDS = 10.0   # at most this much training is lost to an interruption
OPTIMIZERS = ("sgd", "adam", "adamw")

LossFn = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]
EpochFn = Callable[[Dict[str, object]], None]


@dataclass
class TrainConfig:
    """Defaults are the D&D paper's base-model settings (SGD lr 1e-4, wd 1e-5, 200 epochs; momentum 0.9 and
    best-val-accuracy selection from the authors' code)."""

    epochs: int = 200
    optimizer: str = "sgd"
    lr: float = 1e-4
    weight_decay: float = 1e-5
    momentum: float = 0.9
    selection: str = "best_val_acc"
    patience: Optional[int] = None
    seed: int = 1
    device: str = "auto"
    weighted_ce: bool = False
    weighted_sampling: bool = False

    def validate(self) -> "TrainConfig":
        if self.epochs < 1:
            raise DnDError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise DnDError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.selection not in SELECTIONS:
            raise DnDError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DnDError(f"learning rate must be > 0, got {self.lr}")
        if self.patience is not None and self.patience < 1:
            raise DnDError(f"patience must be ≥ 1, got {self.patience}")
        return self


@dataclass
class TrainResult:
    best_epoch: int
    history: List[Dict[str, object]] = field(default_factory=list)
    resumed_from: int = 0          # epochs that were already done when this call started
    stopped_early: bool = False


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer with torch's fused kernels (CPU and CUDA): the same update rule, one kernel for all
    parameters instead of a Python loop per tensor — Adam's step is about 3× cheaper on CPU, which matters at
    one bag per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = {"fused": True} if params and all(p.device.type in ("cpu", "cuda") for p in params) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def class_weights(ds: BagDataset) -> torch.Tensor:
    """The authors' weighted-CE weights: N / (n_present · count_c), normalised to sum 1 (0 for absent)."""
    counts = np.asarray(ds.class_counts(), dtype=np.float64)
    present = int((counts > 0).sum())
    w = np.where(counts > 0, len(ds) / (present * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w / w.sum(), dtype=torch.float32)


@torch.no_grad()  # not inference_mode: bags cached here are reused for training
def evaluate(model: MILModel, ds: BagDataset, device: str | torch.device = "cpu",
             cancelled: Optional[CancelFn] = None) -> Dict[str, object]:
    """Eval-mode pass over ``ds``: mean CE loss, probabilities, metrics (see ``classification_metrics``)."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    probs, losses = [], []
    try:
        for i in range(len(ds)):
            check_cancelled(cancelled)
            x, y, _ = ds[i]
            logits = model(x.to(device), scores=False).logits.float()
            losses.append(float(F.cross_entropy(logits, torch.tensor([y], device=device))))
            probs.append(torch.softmax(logits, dim=1)[0].cpu().numpy())
    finally:
        model.train(was_training)
    p = np.stack(probs) if probs else np.zeros((0, model.n_classes))
    out = classification_metrics(ds.targets, p)
    out["loss"] = float(np.mean(losses)) if losses else float("nan")
    out["probs"] = p
    return out


def _fingerprint(model: MILModel, cfg: TrainConfig, train_ds: BagDataset, val_ds: Optional[BagDataset],
                 tag: str) -> Dict[str, object]:
    c = asdict(cfg)
    c.pop("device")
    return {"model": model.config(), "train": c, "train_ids": list(train_ds.slide_ids),
            "val_ids": list(val_ds.slide_ids) if val_ds is not None else [], "tag": tag}


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors.torch import save_file
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous().clone()
    meta = {"param_groups": json.dumps(sd["param_groups"]),
            "scalars": json.dumps({f"{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items()
                                   if not isinstance(v, torch.Tensor) and v is not None})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata()
        state: Dict[int, Dict[str, object]] = {}
        for key in f.keys():
            pid, k = key.split(".", 1)
            state.setdefault(int(pid), {})[k] = f.get_tensor(key)
    for key, v in json.loads(meta["scalars"]).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def _load_weights(model: MILModel, path: Path) -> None:
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(path)), strict=True)


#: test hook: "<epoch>:<step>" kills the process right after that step of that epoch's checkpoint write
KILL_IN_CHECKPOINT_ENV = "DND_TEST_KILL_IN_CHECKPOINT"
CHECKPOINT_STEPS = 7     # last, optimizer, best, metrics, state (the commit), best.safetensors, clean-up
_CHECKPOINT_FILE = re.compile(r"^(last|optimizer|best)\.e\d+\.safetensors$")
_LEGACY = {"last": "last.safetensors", "optimizer": "optimizer.safetensors", "best": "best.safetensors"}


def _step_done(epoch: int, step: int) -> None:
    """Where the kill tests die: every step of the checkpoint write must be safe to be killed after."""
    if os.environ.get(KILL_IN_CHECKPOINT_ENV) == f"{epoch}:{step}":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _publish(src: Path, dst: Path) -> None:
    """``dst`` becomes the same content as ``src``, atomically (a hard link where the file system has them);
    nothing is written when it already is."""
    if src == dst or (dst.is_file() and (os.path.samefile(src, dst) or (
            src.stat().st_size == dst.stat().st_size and src.read_bytes() == dst.read_bytes()))):
        return
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _remove_stale_checkpoints(out: Path, keep: set) -> None:
    """Remove the checkpoint files that are not in ``keep`` (the ones state.json names): a kill left them, or
    an older checkpoint owned them. ``best.safetensors`` is never removed (it is what loaders read)."""
    for p in out.iterdir():
        if (_CHECKPOINT_FILE.match(p.name) or p.name in (_LEGACY["last"], _LEGACY["optimizer"])) \
                and p.name not in keep:
            p.unlink(missing_ok=True)


def _write_checkpoint(out: Path, model: MILModel, opt: torch.optim.Optimizer, epoch: int, tag: str,
                      history: List[Dict[str, object]], state: Dict[str, object], best: Optional[tuple],
                      best_file: str) -> str:
    """One checkpoint as one commit (see the module's docstring); ``best`` is (epoch, weights) when the best
    weights changed since the last checkpoint. Returns the name of the best weights' file it committed."""
    files = {"last": f"last.e{epoch}.safetensors", "optimizer": f"optimizer.e{epoch}.safetensors"}
    save_model(model, out / files["last"], {"epoch": epoch, "tag": tag})
    _step_done(epoch, 1)
    _save_optimizer(opt, out / files["optimizer"])
    _step_done(epoch, 2)
    if best is not None:
        best_file = f"best.e{best[0]}.safetensors"
        save_model(model, out / best_file, {"epoch": best[0], "tag": tag}, state=best[1])
    files["best"] = best_file
    _step_done(epoch, 3)
    write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))  # lines past
    _step_done(epoch, 4)                                   # state's epoch are ignored on resume
    write_json_atomic(out / "state.json", {**state, "files": files})       # the commit
    _step_done(epoch, 5)
    _publish(out / best_file, out / "best.safetensors")
    _step_done(epoch, 6)
    _remove_stale_checkpoints(out, set(files.values()))
    _step_done(epoch, 7)
    return best_file


def finite_or_none(x: float) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def train_model(model: MILModel, train_ds: BagDataset, val_ds: Optional[BagDataset], cfg: TrainConfig,
                out_dir: Optional[str | Path] = None, *, progress: Optional[ProgressFn] = None,
                cancelled: Optional[CancelFn] = None, on_epoch: Optional[EpochFn] = None,
                loss_fn: Optional[LossFn] = None, tag: str = "", label: Optional[str] = None,
                checkpoint_seconds: float = CHECKPOINT_SECONDS) -> TrainResult:
    """Train ``model`` in place; on return it holds the selected weights (in eval mode).

    With ``out_dir``: a checkpoint — ``last.e<epoch>.safetensors`` + ``optimizer.e<epoch>.safetensors`` +
    ``state.json`` (naming them), ``best.safetensors`` (the selected epoch so far; ``best.e<epoch>`` is its
    committed copy), ``metrics.jsonl`` (one JSON object per epoch) — after an
    epoch once ``checkpoint_seconds`` have passed since the previous one, and after the last epoch (0: every
    epoch). Each epoch's RNG comes from (seed, epoch), so resuming from any checkpoint is exact; a short
    interval only costs time on small cohorts, where writing the files takes longer than the epoch.
    Calling again with the same ``out_dir`` and the same settings resumes after the last finished epoch
    (or returns at once when the run had finished). ``loss_fn(logits, target, slide_id)`` replaces the
    cross-entropy (D&D's distillation passes its own). Cancelling raises :class:`Cancelled` between bags;
    the last finished epoch stays on disk for resuming. ``tag`` names the stage in the checkpoint (a resumed run
    must carry the same one); ``label`` (default: the tag) is what the progress messages say, for people.
    """
    cfg.validate()
    if len(train_ds) == 0:
        raise DnDError("the training split is empty")
    device = resolve_device(cfg.device)
    model.to(device)
    selection = cfg.selection if (val_ds is not None and len(val_ds)) else "last"
    opt = make_optimizer(model, cfg)
    weights = class_weights(train_ds).to(device) if cfg.weighted_ce else None
    if loss_fn is None:
        def loss_fn(logits, target, _sid):
            return F.cross_entropy(logits, target, weight=weights)

    history: List[Dict[str, object]] = []
    best_score, best_epoch, since_best, start = -math.inf, 0, 0, 0
    best_state = None               # weights of the best epoch since this call started (None: the file's)
    best_saved = True
    last_checkpoint = time.perf_counter()
    out = ensure_dir(out_dir) if out_dir is not None else None
    if out is not None:
        remove_stale_temps(out)                # temporary files of a killed run
    fp = _fingerprint(model, cfg, train_ds, val_ds, tag)
    best_file = _LEGACY["best"]     # the committed best weights' file (state.json names it)
    if out is not None and (out / "state.json").is_file():
        state = json.loads((out / "state.json").read_text())
        if state.get("fingerprint") != fp:
            raise DnDError(f"{out} holds a different training run (other data or settings); "
                           "choose another output folder or delete it")
        files = state.get("files") or _LEGACY    # a folder from before the names: the fixed ones
        _load_weights(model, out / files["last"])
        _load_optimizer(opt, out / files["optimizer"])
        best_file = files["best"]
        if (out / best_file).is_file():
            _publish(out / best_file, out / "best.safetensors")   # a kill may have come before it was refreshed
        _remove_stale_checkpoints(out, set(files.values()))
        best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        best_epoch, since_best, start = state["best_epoch"], state["since_best"], state["epoch"]
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line][:start]
        if state.get("done"):
            if (out / best_file).is_file():
                _load_weights(model, out / best_file)
            model.eval()
            return TrainResult(best_epoch, history, resumed_from=start, stopped_early=state.get("stopped_early"))
    elif out is not None:
        _remove_stale_checkpoints(out, set())     # files of a first checkpoint killed before its commit
    resumed_from = start

    n = len(train_ds)
    total_steps = cfg.epochs * n
    stopped_early = False
    model.train()
    for epoch in range(start + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch)
        if cfg.weighted_sampling:
            w = class_weights(train_ds)[torch.tensor(train_ds.targets)]
            order = torch.multinomial(w, n, replacement=True, generator=gen).tolist()
        else:
            order = torch.randperm(n, generator=gen).tolist()
        model.train()
        loss_sum, correct = 0.0, 0
        for step, i in enumerate(order):
            check_cancelled(cancelled)
            x, y, sid = train_ds[i]
            target = torch.tensor([y], device=device)
            logits = model(x.to(device, non_blocking=True), scores=False).logits
            loss = loss_fn(logits, target, sid)
            if not torch.isfinite(loss):
                raise DnDError(f"training diverged: the loss became {float(loss)} at epoch {epoch} "
                               f"(slide {sid}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            correct += int(logits.detach().argmax(dim=1)[0] == y)
            if progress is not None:
                progress((epoch - 1) * n + step + 1, total_steps,
                         f"{tag if label is None else label}epoch {epoch}/{cfg.epochs}")
        record: Dict[str, object] = {"epoch": epoch, "train_loss": loss_sum / n, "train_acc": correct / n}
        if val_ds is not None and len(val_ds):
            ev = evaluate(model, val_ds, device, cancelled)
            record.update({"val_loss": ev["loss"], "val_acc": ev["acc"], "val_auc": finite_or_none(ev["auc"]),
                           "val_balanced_acc": ev["balanced_acc"]})
        record["seconds"] = time.perf_counter() - t0
        if selection == "last":
            score = float(epoch)
        elif selection == "best_val_loss":
            score = -record["val_loss"]
        elif selection == "best_val_auc":
            score = record["val_auc"] if record["val_auc"] is not None else -math.inf
        else:
            score = record["val_acc"]
        improved = score > best_score or epoch == 1
        if improved:
            best_score, best_epoch, since_best = score, epoch, 0
        else:
            since_best += 1
        record["best_epoch"] = best_epoch
        history.append(record)
        if cfg.patience is not None and selection != "last" and since_best >= cfg.patience:
            stopped_early = True
        done = epoch == cfg.epochs or stopped_early
        if improved:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_saved = False
        if out is not None and (done or time.perf_counter() - last_checkpoint >= checkpoint_seconds):
            best_file = _write_checkpoint(out, model, opt, epoch, tag, history, {
                "fingerprint": fp, "epoch": epoch, "best_epoch": best_epoch,
                "best_score": best_score if math.isfinite(best_score) else None, "since_best": since_best,
                "done": done, "stopped_early": stopped_early, "selection": selection},
                None if best_saved else (best_epoch, best_state), best_file)
            best_saved = True
            last_checkpoint = time.perf_counter()
        if on_epoch is not None:
            on_epoch(dict(record))
        if stopped_early:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif out is not None:
        _load_weights(model, out / best_file)
    model.eval()
    return TrainResult(best_epoch, history, resumed_from=resumed_from, stopped_early=stopped_early)
