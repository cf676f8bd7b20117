"""convexlab.frontier: linear CKA, the layer-selection rules on stacks with known answers, the frontier."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from convexlab import frontier as F  # noqa: E402
from convexlab.plots import plot_frontier  # noqa: E402

torch.set_num_threads(1)

N_CLASSES, PER_CLASS, DIM = 4, 15, 8


def _labels() -> np.ndarray:
    return np.repeat(np.arange(N_CLASSES), PER_CLASS)


def _stack(separations, *, seed: int = 0) -> np.ndarray:
    """(len(separations), N, DIM): layer l holds the classes' centres scaled by separations[l] plus
    unit noise (0: pure noise, 12: well-separated compact clusters); fresh noise per layer."""
    rng = np.random.default_rng(seed)
    centres = 12.0 * np.eye(DIM)[:N_CLASSES][_labels()]
    return np.stack([s / 12.0 * centres + rng.normal(size=centres.shape) for s in separations])


def _orthogonal(dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


# --------------------------------------------------------------------------- linear CKA


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_of_a_representation_with_itself_is_one(seed):
    X = np.random.default_rng(seed).normal(size=(50, 7)) * 3 + 5
    assert F.linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_is_invariant_to_rotation_and_isotropic_scaling_and_symmetric(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 6))
    Y = X @ rng.normal(size=(6, 9)) + 0.5 * rng.normal(size=(60, 9))  # related but not identical
    reference = F.linear_cka(X, Y)
    assert 0.0 < reference < 1.0
    assert F.linear_cka(Y, X) == pytest.approx(reference, rel=1e-12)
    assert F.linear_cka(X @ _orthogonal(6, seed), Y) == pytest.approx(reference, rel=1e-10)
    assert F.linear_cka(X, Y @ _orthogonal(9, seed + 10)) == pytest.approx(reference, rel=1e-10)
    assert F.linear_cka(7.5 * X, Y) == pytest.approx(reference, rel=1e-10)
    assert F.linear_cka(X, 0.02 * Y) == pytest.approx(reference, rel=1e-10)
    assert F.linear_cka(X + 100.0, Y - 3.0) == pytest.approx(reference, rel=1e-10)  # centred inside
    assert F.linear_cka(torch.from_numpy(X), Y) == pytest.approx(reference, rel=1e-6)


def test_cka_matches_its_definition_and_is_low_for_independent_noise():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(200, 5)), rng.normal(size=(200, 4))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    definition = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert F.linear_cka(X, Y) == pytest.approx(definition, rel=1e-10)
    related = X @ _orthogonal(5, 3) + 0.1 * rng.normal(size=(200, 5))  # a rotation plus a little noise
    assert F.linear_cka(X, Y) < 0.1 < 0.9 < F.linear_cka(X, related)
    assert F.linear_cka(X, np.ones((200, 3))) == 0.0  # no variance: no alignment
    with pytest.raises(ValueError, match="same points"):
        F.linear_cka(X, Y[:-1])


# --------------------------------------------------------------------------- Euclidean convexity


def test_euclidean_convexity_scores_separated_classes_one_and_mixed_ones_lower():
    labels = _labels()
    separated, noise = _stack([12, 0])
    assert F.euclidean_convexity(separated, labels) == 1.0
    # Segment points near an endpoint are labelled by that endpoint, so noise scores well above
    # chance (1/4) but clearly below compact, separated classes.
    assert F.euclidean_convexity(noise, labels) < 0.9
    assert F.euclidean_convexity(separated, [f"w{c}" for c in labels]) == 1.0  # any hashable labels


def test_euclidean_convexity_sees_a_non_convex_class():
    # Class 0 on both ends of a line, class 1 in the middle: every segment of class 0 crosses class 1.
    X = np.concatenate([np.linspace(-10, -9, 10), np.linspace(9, 10, 10), np.linspace(-1, 1, 10)])[:, None]
    labels = [0] * 20 + [1] * 10
    pairs_across = 2 * 10 * 10  # class 0's ordered pairs that cross the middle, of 20 * 19
    score = F.euclidean_convexity(X, labels, max_pairs=None, n_points=9)
    assert score < 1.0 - 0.1 * pairs_across / (20 * 19 + 10 * 9)
    assert F.euclidean_convexity(X, labels, max_pairs=None, n_points=9) == score  # deterministic


# --------------------------------------------------------------------------- rules with known answers


LABEL_RULES = [F.graph_convexity_rule(), F.euclidean_convexity_rule(), F.linear_probe_rule()]


@pytest.mark.parametrize("rule", LABEL_RULES, ids=lambda r: r.name)
def test_label_rules_pick_the_first_layer_where_classes_become_separable(rule):
    stack = _stack([0, 0, 0, 12, 12, 12, 12])  # L = 6: separable from layer 3 on, then stays
    assert rule.uses_labels
    assert rule.pick(stack, _labels()) == 3


@pytest.mark.parametrize("rule", LABEL_RULES, ids=lambda r: r.name)
def test_label_rules_pick_the_peak_layer(rule):
    stack = _stack([0, 1, 2, 3, 12, 3, 1])  # the classes stand out most at layer 4
    assert rule.pick(stack, _labels()) == 4


@pytest.mark.parametrize("rule", LABEL_RULES, ids=lambda r: r.name)
def test_a_peak_at_hidden_state_zero_keeps_one_layer(rule):
    stack = _stack([12, 0, 0, 0])
    assert rule.pick(stack, _labels()) == 1


def test_label_rules_need_labels():
    with pytest.raises(ValueError, match="uses the labels"):
        F.graph_convexity_rule().pick(_stack([0, 12]), None)


def _cka_stack(identical_from: int, n_layers: int = 6, *, seed: int = 0) -> np.ndarray:
    """Independent random layers up to ``identical_from``, then that layer repeated to L."""
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(60, DIM)) for _ in range(identical_from + 1)]
    layers += [layers[-1]] * (n_layers - identical_from)
    return np.stack(layers)


def test_cka_redundancy_picks_the_layer_after_which_layers_are_identical():
    rule = F.cka_redundancy_rule(threshold=0.95)
    assert not rule.uses_labels
    assert rule.pick(_cka_stack(2), None) == 2
    assert rule.pick(_cka_stack(4), None) == 4
    assert rule.pick(_cka_stack(6), None) == 6  # the last step is not redundant: keep all
    assert rule.pick(_cka_stack(0), None) == 1  # every layer equals the input: clamped to one
    # Rotating and rescaling a redundant layer does not make it new (CKA ignores both).
    stack = _cka_stack(2)
    stack[4] = 3.0 * stack[4] @ _orthogonal(DIM, 5)
    assert rule.pick(stack, None) == 2
    # A late change that is only slightly below the threshold still counts.
    stack = _cka_stack(2)
    stack[5] = stack[4] + 0.8 * np.random.default_rng(9).normal(size=stack[4].shape)
    assert F.consecutive_cka(stack)[4] < 0.95
    assert rule.pick(stack, None) == 6
    with pytest.raises(ValueError):
        F.cka_redundancy_rule(threshold=0.0)


@pytest.mark.parametrize(("n_layers", "half"), [(6, 3), (5, 3), (1, 1), (12, 6)])
def test_keep_all_and_keep_half(n_layers, half):
    stack = np.zeros((n_layers + 1, 4, 2))
    assert F.keep_all.pick(stack, None) == n_layers
    assert F.keep_half.pick(stack, None) == half


def test_the_at_least_one_layer_clamp():
    assert F.keep_at_least_one(0, 6) == 1
    assert F.keep_at_least_one(np.int64(4), 6) == 4
    assert F.keep_at_least_one(9, 6) == 6
    with pytest.raises(ValueError):
        F.keep_at_least_one(0, 0)


def test_pick_depths_applies_every_default_rule():
    stack = _stack([0, 0, 0, 12, 12, 12, 12])
    picks = F.pick_depths(stack, _labels())
    assert list(picks["rule"]) == [rule.name for rule in F.RULES]
    assert {"graph-convexity", "euclidean-convexity", "linear-probe", "cka-redundancy", "keep-all",
            "keep-half"} == set(picks["rule"])
    depths = dict(zip(picks["rule"], picks["depth"]))
    assert depths["graph-convexity"] == depths["euclidean-convexity"] == depths["linear-probe"] == 3
    assert depths["keep-all"] == 6 and depths["keep-half"] == 3
    assert picks["depth"].between(1, 6).all()
    with pytest.raises(ValueError, match="L \\+ 1, N, D"):
        F.pick_depths(stack[0], _labels())


# --------------------------------------------------------------------------- oracle and report


def _frontier(accuracies, *, tolerance=0.01, std=None) -> F.Frontier:
    depths = np.arange(1, len(accuracies) + 1)
    table = pd.DataFrame({"depth": depths, "accuracy": accuracies,
                          "accuracy_std": std if std is not None else [math.nan] * len(depths),
                          "n_seeds": 1, "train_seconds": 10.0 * depths, "n_parameters": 1000 * depths,
                          "flops_per_clip": 1e6 * (1 + depths), "inference_ms": math.nan})
    return F.Frontier(model_name="mini-wav2vec2", task="word", profile_name="lite", n_layers=len(depths),
                      seeds=(0,), tolerance=tolerance, table=table, runs=pd.DataFrame(),
                      oracle_depth=F.oracle_depth(table, tolerance=tolerance), inference_timed=False)


def test_oracle_depth_on_a_constructed_table():
    table = pd.DataFrame({"depth": [1, 2, 3, 4, 5, 6], "accuracy": [0.5, 0.7, 0.885, 0.9, 0.92, 0.89]})
    assert F.oracle_depth(table) == 3  # 0.885 >= 0.89 - 0.01 (exactly the edge counts)
    assert F.oracle_depth(table, tolerance=0.005) == 3
    assert F.oracle_depth(table, tolerance=0.0) == 4
    assert F.oracle_depth(table, tolerance=0.5) == 1
    assert F.oracle_depth(table.iloc[::-1]) == 3  # order of the rows does not matter
    with pytest.raises(ValueError):
        F.oracle_depth(table, tolerance=-0.1)


def test_rule_report_measures_each_pick_against_the_frontier():
    frontier = _frontier([0.5, 0.8, 0.75, 0.9, 0.9, 0.9])
    assert frontier.oracle_depth == 4 and frontier.full_accuracy == 0.9
    picks = pd.DataFrame({"rule": ["a", "b", "c", "d"], "depth": [3, 4, 6, 2]})
    report = F.rule_report(frontier, picks).set_index("rule")
    assert report.loc["a", "depth_from_oracle"] == -1 and report.loc["c", "depth_from_oracle"] == 2
    assert report.loc["a", "gap_to_frontier"] == pytest.approx(0.05)  # depth 2 was better and cheaper
    assert report.loc["b", "gap_to_frontier"] == 0 and report.loc["d", "gap_to_frontier"] == 0
    assert report.loc["a", "gap_to_full"] == pytest.approx(0.15)
    assert report.loc["c", "flops_saved"] == 0 and report.loc["b", "flops_saved"] == pytest.approx(2 / 7)
    assert report.loc["b", "n_parameters"] == 4000 and report.loc["b", "train_seconds"] == 40


def test_plot_frontier_marks_every_rule():
    frontier = _frontier([0.5, 0.8, 0.75, 0.9, 0.9, 0.9], std=[0.02] * 6)
    picks = pd.DataFrame({"rule": [r.name for r in F.RULES], "depth": [4, 4, 3, 2, 6, 3]})
    ax = plot_frontier(frontier, picks)
    labels = ax.get_legend_handles_labels()[1]
    for rule in picks["rule"]:
        assert any(label.startswith(rule) for label in labels)
    assert "oracle depth" in labels
    plt.close(ax.figure)


# --------------------------------------------------------------------------- the frontier itself


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    from convexlab.profiles import get_profile
    from convexlab.synth import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, n_words=3, n_speakers=3, n_repetitions=6, seed=0, test_fraction=0.34, progress=False)
    return get_profile("lite-synthetic", data_root=str(root), max_train_per_class=4, finetune_epochs=1.0,
                       finetune_batch_size=4, seed=0)


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache-frontier"))


def test_frontier_runs_each_depth_on_the_same_batches_and_caches_them(tiny_profile, private_cache, monkeypatch):
    calls = []
    original = F.finetune_for_profile

    def spy(*args, **kwargs):
        calls.append(kwargs.get("num_layers"))
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "finetune_for_profile", spy)
    jobs = []
    original_runs = F.finetune_runs

    def spy_runs(job_list, *args, **kwargs):
        jobs.extend(job_list)
        return original_runs(job_list, *args, **kwargs)

    monkeypatch.setattr(F, "finetune_runs", spy_runs)
    settings = dict(depths=(1, 3), pretrained=False, progress=False)
    first = F.pruning_frontier("mini-wav2vec2", "word", tiny_profile, **settings)
    assert calls[0] is None  # the full model (depth L = 6) runs first, unpruned: it gives L
    assert [job.num_layers for job in jobs] == [None, 3, 1]  # then every run side by side, the deepest first
    assert list(first.table["depth"]) == [1, 3, 6] and first.n_layers == 6
    assert first.runs["batch_ids_digest"].nunique() == 1
    assert first.table["n_parameters"].is_monotonic_increasing
    assert first.table["flops_per_clip"].is_monotonic_increasing and first.table["flops_per_clip"].gt(0).all()
    assert first.table["inference_ms"].isna().all() and not first.inference_timed
    assert first.oracle_depth == F.oracle_depth(first.table, tolerance=0.01)
    assert first.table["accuracy"].between(0, 1).all()

    from transformers import Trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a cached depth was finetuned again")

    monkeypatch.setattr(Trainer, "train", no_training)
    again = F.pruning_frontier("mini-wav2vec2", "word", tiny_profile, **settings)
    pd.testing.assert_frame_equal(again.table, first.table)
    # Timing fields are not part of the recipe: the same cached runs, now with inference times.
    timed = F.pruning_frontier("mini-wav2vec2", "word", tiny_profile.replace(timing_batch_size=2, timing_repeats=2),
                               time_inference=True, **settings)
    assert timed.inference_timed and timed.table["inference_ms"].gt(0).all()
    assert list(timed.table["flops_per_clip"]) == list(first.table["flops_per_clip"])
    assert list(timed.table["accuracy"]) == list(first.table["accuracy"])
    assert list(again.runs["run_dir"]) == list(first.runs["run_dir"])
    report = F.rule_report(again, pd.DataFrame({"rule": ["keep-all", "x"], "depth": [6, 2]}))
    assert report["depth_from_oracle"].iloc[0] == 6 - again.oracle_depth
    assert math.isnan(report["accuracy"].iloc[1])  # depth 2 was not run


def test_frontier_spread_over_seeds(tiny_profile, private_cache):
    frontier = F.pruning_frontier("mini-wav2vec2", "word", tiny_profile, depths=(2,), seeds=(0, 1),
                                  pretrained=False, progress=False)
    assert frontier.seeds == (0, 1) and list(frontier.table["depth"]) == [2, 6]
    assert frontier.table["n_seeds"].eq(2).all() and frontier.table["accuracy_std"].notna().all()
    assert len(frontier.runs) == 4
    digests = frontier.runs.groupby("seed")["batch_ids_digest"].first()
    assert digests[0] != digests[1]  # each seed its own batch order, shared by all its depths
    expected = frontier.runs.groupby("depth")["accuracy"].mean().to_numpy()
    np.testing.assert_allclose(frontier.table["accuracy"], expected)


def test_frontier_refuses_depths_trained_on_different_batches(tiny_profile, monkeypatch):
    def fake(model_name, task, profile, *, num_layers=None, **overrides):
        return SimpleNamespace(accuracy=0.5, train_seconds=1.0, n_parameters=10 * (num_layers or 6), num_layers=num_layers or 6,
                               batch_ids_digest=f"digest-{num_layers}", run_dir="nowhere")

    monkeypatch.setattr(F, "finetune_for_profile", fake)
    with pytest.raises(RuntimeError, match="different batches"):
        F.pruning_frontier("mini-wav2vec2", "word", tiny_profile, depths=(2,))
    for depths in [(0,), (7,)]:
        with pytest.raises(ValueError, match="outside"):
            F.pruning_frontier("mini-wav2vec2", "word", tiny_profile, depths=depths)


def test_the_probe_finds_the_same_accuracy_at_one_thread_as_at_the_libraries_own_count():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), 10)
    X = 0.8 * rng.normal(size=(6, 16))[labels] + rng.normal(size=(60, 16))
    one = F.probe_accuracy(X, labels)
    assert one == F.probe_accuracy(X, labels, threads=None) == F.probe_accuracy(X, labels, threads=2)
    assert 1 / 6 < one < 1.0  # the classes overlap: neither chance nor perfect
