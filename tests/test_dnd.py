"""D&D stages: clustering bounds and seeds, experts on their own slides, cached teachers, the loss by hand,
resuming after stage 2, presets with their sources, the paired test."""

import json
import math

import numpy as np
import pytest
import torch

from dnd_engine.bags import BagDataset
from dnd_engine.dnd import (DnDConfig, assign_nearest, distillation_loss, fit_clusters, legacy_random_partition,
                            paired_comparison, preset_config, run_dnd)
from dnd_engine.dnd.presets import SOURCES
from dnd_engine.errors import Cancelled, DnDError
from dnd_engine.training.trainer import TrainConfig

from bagtools import make_bags


def _split(n_per_class=(12, 12), dim=8, seed=0):
    bags, labels = make_bags(n_per_class, dim=dim, n_inst=(6, 12), seed=seed)
    ds = BagDataset.from_tensors(bags, labels)
    ids = ds.slide_ids
    n0 = n_per_class[0]
    val = ids[:2] + ids[n0:n0 + 2]
    train = [s for s in ids if s not in val]
    return ds.subset(train), ds.subset(val)


def _tiny(preset="paper", **kw):
    cfg = preset_config(preset, "abmil", base=TrainConfig(epochs=2, optimizer="adam", lr=1e-3, seed=5),
                        expert=TrainConfig(epochs=2, optimizer="adam", lr=1e-3, seed=5),
                        student=TrainConfig(epochs=3, optimizer="adam", lr=1e-3, seed=5))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg.validate()


# --- clustering -------------------------------------------------------------------------------------------
def test_constrained_clusters_respect_bounds_and_seed():
    rng = np.random.default_rng(0)
    # three blobs of very different sizes: unconstrained k-means would follow them
    x = np.concatenate([rng.normal(0, 0.1, (40, 2)), rng.normal(5, 0.1, (10, 2)), rng.normal(-5, 0.1, (10, 2))])
    ids = [f"s{i}" for i in range(60)]
    lo, hi = DnDConfig(n_clusters=3).size_bounds(60)
    assert (lo, hi) == (int(60 / 3 - 3), int(60 / 3 + 3))          # the authors' int(N/C ± N/20)
    a = fit_clusters(x, ids, 3, size_min=lo, size_max=hi, seed=4)
    b = fit_clusters(x, ids, 3, size_min=lo, size_max=hi, seed=4)
    assert all(lo <= s <= hi for s in a.sizes()) and sum(a.sizes()) == 60
    assert np.array_equal(a.assignments, b.assignments) and np.allclose(a.centres, b.centres)
    free = fit_clusters(x, ids, 3, constrained=False, seed=4)
    assert sorted(free.sizes()) == [10, 10, 40]                     # plain k-means follows the blobs
    assert free.method == "kmeans" and a.method == "constrained-kmeans"


def test_size_bounds_widen_only_when_the_authors_formula_admits_no_partition():
    assert DnDConfig(n_clusters=3).size_bounds(10) == (2, 4)       # int(3.83)=3 → 3·3 < 10, raised to ⌈10/3⌉
    assert DnDConfig(n_clusters=3, constrained=False).size_bounds(10) == (None, None)
    with pytest.raises(DnDError, match="cannot split"):
        DnDConfig(n_clusters=3, size_min=5).size_bounds(12)
    with pytest.raises(DnDError, match="clusters from"):
        fit_clusters(np.zeros((2, 2)), ["a", "b"], 3)


def test_new_slides_go_to_the_nearest_centre_without_size_bounds():
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[1.0, 0.0], [2.0, 1.0], [9.0, 0.0]])
    assert assign_nearest(centres, x).tolist() == [0, 0, 1]
    assert assign_nearest(centres, np.array([[0.5, 0.0]] * 5)).tolist() == [0] * 5   # all five to one centre


def test_legacy_partition_keeps_sizes_and_scrambles_members():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    ids = [f"s{i}" for i in range(40)]
    c = fit_clusters(x, ids, 2, size_min=18, size_max=22, seed=1)
    legacy = legacy_random_partition(c, seed=1)
    assert sorted(legacy.sizes()) == sorted(c.sizes())
    assert legacy.method == "legacy-random-partition"
    assert not np.array_equal(legacy.assignments, c.assignments)
    assert legacy.extra["clustered_assignments"] == c.assignments.tolist()


# --- the pipeline -----------------------------------------------------------------------------------------
def _expert_train_ids(out, c):
    return json.loads((out / "experts" / f"expert_{c}" / "state.json").read_text())["fingerprint"]["train_ids"]


@pytest.mark.parametrize("legacy", [False, True])
def test_each_expert_trains_on_exactly_its_clusters_slides(tmp_path, legacy):
    train, val = _split()
    cfg = _tiny(legacy_random_partition=legacy)
    res = run_dnd(train, val, cfg, tmp_path)
    clusters = json.loads((tmp_path / "clusters" / "clusters.json").read_text())
    by_cluster = {}
    for sid, a in zip(clusters["slide_ids"], clusters["assignments"]):
        by_cluster.setdefault(a, []).append(sid)
    for c in range(cfg.n_clusters):
        assert sorted(_expert_train_ids(tmp_path, c)) == sorted(by_cluster[c]) == sorted(res.clustering.members(c))
    assert clusters["slide_ids"] == train.slide_ids                  # keyed by slide id, dataset order
    if legacy:
        assert clusters["method"] == "legacy-random-partition"
        clustered = np.array(clusters["clustered_assignments"])
        assert sorted(np.bincount(clustered).tolist()) == sorted(res.clustering.sizes())
        assert clustered.tolist() != clusters["assignments"]
    csv_rows = (tmp_path / "clusters" / "clusters.csv").read_text().splitlines()
    assert csv_rows[0] == "slide_id,cluster" and len(csv_rows) == len(train) + 1


def test_teacher_soft_targets_are_computed_once(tmp_path, monkeypatch):
    from dnd_engine.models.abmil import ABMIL
    calls = {}
    orig = ABMIL.forward

    def counting(self, *a, **kw):
        calls[id(self)] = calls.get(id(self), 0) + 1
        return orig(self, *a, **kw)
    monkeypatch.setattr(ABMIL, "forward", counting)
    train, val = _split()
    cfg = _tiny()
    cfg.student.epochs = 4
    res = run_dnd(train, val, cfg, tmp_path)
    n, v = len(train), len(val)
    eb, ee, es = cfg.base.epochs, cfg.expert.epochs, cfg.student.epochs
    # base: training + validation per epoch, one pass for the clustering, ONE pass as a teacher
    assert calls[id(res.base)] == eb * (n + v) + n + n
    for c, e in enumerate(res.experts):
        assert calls[id(e)] == ee * (len(res.clustering.members(c)) + v) + n
    assert calls[id(res.student)] == es * (n + v)
    from safetensors.torch import load_file          # the cache is on disk too, with a row per teacher
    t = load_file(str(tmp_path / "student" / "teacher_logits.safetensors"))
    assert set(t) == set(train.slide_ids) and all(x.shape == (1 + cfg.n_clusters, 2) for x in t.values())


def _kl(p, q):
    return float(np.sum(p * (np.log(p) - np.log(q))))


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("preset", ["paper", "authors-code"])
def test_loss_matches_a_hand_computation(preset):
    cfg = preset_config(preset)
    T = cfg.temperature
    s, b = np.array([1.0, 2.0, -0.5]), np.array([2.0, 0.0, 0.5])
    experts = [np.array([0.0, 1.0, 0.0]), np.array([1.0, 1.0, -1.0])]
    y = 0
    ce = -math.log(_softmax(s)[y])
    ps = _softmax(s / T)
    want = ce + T * T * _kl(_softmax(b / T), ps) + T * T * 0.5 * sum(_kl(_softmax(e / T), ps) for e in experts)
    t = lambda a: torch.tensor(a, dtype=torch.float64)[None]  # noqa: E731
    got = distillation_loss(t(s), torch.tensor([y]), t(b), [t(e) for e in experts], temperature=T,
                            lambda_ce=cfg.lambda_ce, lambda_base=cfg.lambda_base, lambda_expert=cfg.lambda_expert)
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert T == (1.0 if preset == "paper" else 0.2)


@pytest.mark.parametrize("preset", ["paper", "authors-code"])
def test_cached_loss_equals_the_reference_loss(preset):
    from dnd_engine.dnd.distill import DistillLoss
    cfg = preset_config(preset)
    g = torch.Generator().manual_seed(0)
    teachers = torch.randn(1 + cfg.n_clusters, 3, generator=g) * 3
    student = torch.randn(1, 3, generator=g, requires_grad=True)
    y = torch.tensor([2])
    kw = dict(temperature=cfg.temperature, lambda_ce=cfg.lambda_ce, lambda_base=cfg.lambda_base,
              lambda_expert=cfg.lambda_expert)
    fast = DistillLoss({"s": teachers}, **kw)(student, y, "s")
    ref = distillation_loss(student, y, teachers[0:1], [teachers[i:i + 1] for i in range(1, len(teachers))], **kw)
    assert fast.item() == pytest.approx(ref.item(), rel=1e-5)
    g_fast, = torch.autograd.grad(fast, student)
    g_ref, = torch.autograd.grad(ref, student)
    assert torch.allclose(g_fast, g_ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(DnDError, match="no teacher soft targets"):
        DistillLoss({"s": teachers}, **kw)(student, y, "other")


def test_resume_after_stage_two_gives_the_same_student(tmp_path):
    train, val = _split(seed=3)
    cfg = _tiny()
    full = run_dnd(train, val, cfg, tmp_path / "a")
    stopped = tmp_path / "b"

    def cancel_after_clustering():
        return (stopped / "clusters" / "clusters.json").is_file()
    with pytest.raises(Cancelled):
        run_dnd(train, val, cfg, stopped, cancelled=cancel_after_clustering)
    assert not list(stopped.glob("experts/*/state.json"))      # stopped before any expert epoch
    again = run_dnd(train, val, cfg, stopped)
    for k, v in full.student.state_dict().items():
        assert torch.equal(v, again.student.state_dict()[k]), k
    assert np.array_equal(full.clustering.assignments, again.clustering.assignments)


def test_changed_settings_in_the_same_folder_are_refused(tmp_path):
    train, val = _split()
    run_dnd(train, val, _tiny(), tmp_path)
    with pytest.raises(DnDError, match="other data or settings"):
        run_dnd(train, val, _tiny(temperature=0.5), tmp_path)


def test_student_from_base_vs_scratch_and_experts_from_base(tmp_path):
    train, val = _split()
    cfg = _tiny(expert_init="base", student_init="scratch")
    cfg.expert.epochs = cfg.student.epochs = 1
    cfg.expert.lr = 1e-12            # an expert that barely moves must still be the base's weights
    res = run_dnd(train, val, cfg)
    for k, v in res.base.state_dict().items():
        assert torch.allclose(res.experts[0].state_dict()[k], v, atol=1e-6), k


# --- presets ----------------------------------------------------------------------------------------------
def test_presets_hold_paper_and_code_defaults_with_sources():
    p, c = preset_config("paper"), preset_config("authors-code")
    assert (p.n_clusters, p.constrained, p.cluster_on, p.temperature) == (3, True, "embedding", 1.0)
    assert (p.base.optimizer, p.base.lr, p.base.weight_decay, p.base.epochs, p.base.momentum) == ("sgd", 1e-4, 1e-5, 200, 0.9)
    assert (p.student.optimizer, p.student.epochs, p.student_init, p.expert_init) == ("adam", 300, "base", "scratch")
    assert (c.n_clusters, c.constrained, c.cluster_on, c.temperature) == (5, False, "logits", 0.2)
    assert (c.base.optimizer, c.expert.optimizer, c.student.optimizer, c.student.epochs) == ("adam", "adam", "sgd", 400)
    assert p.model_options["dropout"] == c.model_options["dropout"] == 0.25
    assert all(src for src in SOURCES["paper"].values()) and "momentum" in SOURCES["paper"]["base.momentum"]
    assert "paper silent" in SOURCES["paper"]["student_init"]
    assert DnDConfig.from_dict(p.to_dict()) == p
    with pytest.raises(DnDError, match="unknown preset"):
        preset_config("fast")


# --- the paired test --------------------------------------------------------------------------------------
def test_paired_comparison_matches_scipy_and_edge_cases():
    from scipy import stats
    base = [0.70, 0.80, 0.75, 0.90, 0.60]
    dnd = [0.75, 0.82, 0.80, 0.88, 0.70]
    r = paired_comparison(base, dnd)
    assert r["mean"] == pytest.approx(np.mean(np.subtract(dnd, base)))
    assert r["p"] == pytest.approx(stats.ttest_rel(dnd, base).pvalue)
    assert r["n"] == 5 and "paired t-test" in r["test"]
    same = paired_comparison(base, base)
    assert same["mean"] == 0 and same["p"] == 1.0
    partial = paired_comparison([0.5, float("nan"), 0.7], [0.6, 0.9, 0.7])
    assert partial["n"] == 2


def test_progress_names_experts_from_one_as_the_app_does(tmp_path):
    train, val = _split()
    cfg = _tiny()
    said = []
    run_dnd(train, val, cfg, tmp_path, progress=lambda d, t, m: said.append(m))
    experts = sorted({m.split(" epoch")[0] for m in said if m.startswith("expert ")})
    assert experts == [f"expert {c + 1}/{cfg.n_clusters}" for c in range(cfg.n_clusters)]
