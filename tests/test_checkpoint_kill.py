"""A checkpoint is one atomic commit: a training process SIGKILLed after any step of a checkpoint write
resumes to exactly the weights and metrics of an uninterrupted run, and leaves no stale checkpoint file."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dnd_engine.errors import Cancelled
from dnd_engine.training import train_model
from dnd_engine.training.trainer import CHECKPOINT_STEPS, KILL_IN_CHECKPOINT_ENV

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4

# One process's training run: the same data, model and settings every time (one thread, so that every
# process computes the same bits), its final weights and metrics written beside the run folder.
_TRAIN = f"""
import json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {str(ROOT / "tests")!r})
from bagtools import make_bags
from dnd_engine.bags import BagDataset
from dnd_engine.models import build_model
from dnd_engine.training import TrainConfig, train_model
from safetensors.torch import save_file
bags, labels = make_bags((8, 8), dim=16, seed=1)
ds = BagDataset.from_tensors(bags, labels)
val = ds.slide_ids[::4]
train = [s for s in ds.slide_ids if s not in val]
torch.manual_seed(0)
model = build_model("abmil", in_dim=16, n_classes=2)
cfg = TrainConfig(epochs={EPOCHS}, optimizer="adam", lr=1e-3, seed=5, device="cpu")
res = train_model(model, ds.subset(train), ds.subset(val), cfg, sys.argv[1], checkpoint_seconds=0)
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, sys.argv[1] + ".final.safetensors")
hist = [{{k: v for k, v in r.items() if k != "seconds"}} for r in res.history]
open(sys.argv[1] + ".final.json", "w").write(json.dumps({{"best_epoch": res.best_epoch, "history": hist}}))
"""


def _train(out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(KILL_IN_CHECKPOINT_ENV, None)
    if kill_at:
        env[KILL_IN_CHECKPOINT_ENV] = kill_at
    return subprocess.run([sys.executable, "-c", _TRAIN, str(out)], env=env, capture_output=True, text=True)


def _final(out: Path):
    return load_file(f"{out}.final.safetensors"), json.loads(Path(f"{out}.final.json").read_text())


def _assert_same(a: Path, b: Path) -> None:
    wa, ma = _final(a)
    wb, mb = _final(b)
    assert ma == mb                                        # metrics of every epoch and the selected epoch
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)   # bit-identical weights
    _assert_same_file(a / "best.safetensors", b / "best.safetensors")
    assert _metrics(a) == _metrics(b)


def _assert_same_file(a: Path, b: Path) -> None:
    """Same tensors, bit for bit, and the same metadata (safetensors orders the metadata as it likes)."""
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        assert fa.metadata() == fb.metadata() and set(fa.keys()) == set(fb.keys())
        assert all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())


def _metrics(out: Path) -> list:
    """metrics.jsonl without the timings."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _checkpoint_files(out: Path) -> set:
    state = json.loads((out / "state.json").read_text())
    return set(state["files"].values()) | {"best.safetensors", "metrics.jsonl", "state.json"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "uninterrupted"
    p = _train(out)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.mark.parametrize("kill_at", [f"2:{k}" for k in range(1, CHECKPOINT_STEPS + 1)] + ["1:1", "1:5",
                                                                                          f"{EPOCHS}:5"])
def test_a_kill_after_any_step_of_a_checkpoint_resumes_bit_identically(reference, tmp_path, kill_at):
    out = tmp_path / "run"
    p = _train(out, kill_at)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]          # it died where it was told to
    p = _train(out)
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same(out, reference)
    assert {f.name for f in out.iterdir()} == _checkpoint_files(out)   # nothing stale, no .part


def test_a_run_folder_from_before_the_named_files_still_resumes(tmp_path):
    """state.json without ``files`` and the fixed names last/optimizer/best.safetensors."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_training import _datasets
    from dnd_engine.models import build_model
    from dnd_engine.training import TrainConfig
    train, val = _datasets(seed=1)
    cfg = TrainConfig(epochs=EPOCHS, optimizer="adam", lr=1e-3, seed=5, device="cpu")
    torch.manual_seed(0)
    full = build_model("abmil", in_dim=16, n_classes=2)
    train_model(full, train, val, cfg, tmp_path / "full", checkpoint_seconds=0)
    torch.manual_seed(0)
    part = build_model("abmil", in_dim=16, n_classes=2)
    epochs = []
    with pytest.raises(Cancelled):
        train_model(part, train, val, cfg, tmp_path / "old", checkpoint_seconds=0,
                    on_epoch=lambda r: epochs.append(r["epoch"]), cancelled=lambda: len(epochs) >= 2)
    old = tmp_path / "old"
    state = json.loads((old / "state.json").read_text())
    for role, name in state.pop("files").items():               # rewrite it as the earlier version wrote it
        (old / name).replace(old / f"{role}.safetensors")
    (old / "state.json").write_text(json.dumps(state))
    again = build_model("abmil", in_dim=16, n_classes=2)
    res = train_model(again, train, val, cfg, old, checkpoint_seconds=0)
    assert res.resumed_from == 2
    for a, b in zip(full.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    _assert_same_file(old / "best.safetensors", tmp_path / "full" / "best.safetensors")
    assert {f.name for f in old.iterdir()} == _checkpoint_files(old)   # the old fixed names are gone
