"""Graph convexity: agreement with a networkx reference written from the definition, its
properties (invariances, bounds, determinism) and its errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convexlab._knn import knn_graph
from convexlab._paths import sample_pairs
from convexlab.convexity import (
    ConvexityResult,
    best_layer,
    graph_convexity,
    layerwise_convexity,
    plot_convexity_graph,
    shortest_path_scores,
)
from convexity_reference import all_ordered_pairs, per_pair_scores, reference_neighbors


def blobs(n_per_class: int, n_classes: int, dim: int, *, separation: float, seed: int):
    """Gaussian classes around centres ``separation`` apart on average: (N, D) float32, (N,) int labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(size=(n_classes, dim)) * separation
    X = centres[labels] + rng.normal(size=(labels.size, dim))
    order = rng.permutation(labels.size)
    return X[order].astype(np.float32), labels[order]


def with_duplicates(X: np.ndarray, labels: np.ndarray, *, n_copies: int, seed: int):
    """Overwrite some points with copies of others (keeping their own labels): exact ties everywhere."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    originals = rng.choice(X.shape[0], size=n_copies, replace=False)
    copies = rng.choice(np.setdiff1d(np.arange(X.shape[0]), originals), size=n_copies, replace=False)
    X[copies] = X[originals]
    return X, labels


def our_pair_scores(X, labels, *, k: int) -> np.ndarray:
    """Our score for every ordered same-class pair, in reference order (via one-pair-per-class results)."""
    result = shortest_path_scores(X, labels, all_ordered_pairs(labels), n_neighbors=k)
    return result["score"].to_numpy()


# -- agreement with the reference ------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["random", "clustered", "duplicates", "duplicates-low-dim", "grid-ties"],
)
def test_scores_equal_networkx_per_pair_reference(case):
    rng = np.random.default_rng(1)
    k = 5
    if case == "random":
        X, labels = rng.normal(size=(70, 6)), rng.integers(0, 3, 70)
    elif case == "clustered":
        X, labels = blobs(25, 3, 8, separation=1.0, seed=2)
    elif case == "duplicates":
        X, labels = with_duplicates(*blobs(25, 3, 4, separation=0.7, seed=3), n_copies=12, seed=4)
    elif case == "duplicates-low-dim":
        # many copies of a few points: whole tie groups beyond the float32 shortlist
        X = rng.integers(0, 3, size=(70, 2)).astype(np.float64)
        labels = rng.integers(0, 3, 70)
    else:
        # an integer grid: many exactly equal distances and equal-length paths, no duplicates
        X = np.stack(np.meshgrid(np.arange(9), np.arange(8)), axis=-1).reshape(-1, 2).astype(np.float64)
        labels = (X[:, 0] + 2 * X[:, 1]).astype(int) % 3
    pairs = all_ordered_pairs(labels)
    expected = per_pair_scores(X, labels, pairs, k=k)
    result = graph_convexity(X, labels, n_neighbors=k, max_pairs=None)
    assert result.score == pytest.approx(expected.mean(), abs=1e-12)
    per_class = pd.Series(expected).groupby(np.asarray(labels)[[a for a, _ in pairs]]).mean()
    assert result.per_class == pytest.approx(per_class.to_dict(), abs=1e-12)
    assert result.class_mean == pytest.approx(per_class.mean(), abs=1e-12)
    np.testing.assert_array_equal(our_pair_scores(X, labels, k=k), expected)


def test_sampled_pairs_scores_equal_reference_on_those_pairs():
    X, labels = with_duplicates(*blobs(30, 3, 5, separation=0.8, seed=5), n_copies=10, seed=6)
    result = graph_convexity(X, labels, n_neighbors=4, max_pairs=60, seed=3)
    pairs = sample_pairs(labels, n_classes=3, max_pairs=60, seed=3)
    expected = per_pair_scores(X, labels, list(zip(pairs.sources.tolist(), pairs.targets.tolist())), k=4)
    assert result.score == pytest.approx(expected.mean(), abs=1e-12)
    assert sum(result.n_paths.values()) == 180


def test_knn_matches_cdist_with_stable_ties_and_offset():
    rng = np.random.default_rng(7)
    # A large shared offset defeats float32 without centring; duplicates create tie groups.
    X = rng.normal(size=(400, 32)) + 1e4
    X[100:130] = X[5]
    X[200:205] = X[7]
    graph = knn_graph(X, n_neighbors=8, block_bytes=4 * 400 * 37)  # several blocks
    expected_neighbors, expected_distances = reference_neighbors(X, 8)
    assert graph.n_uncertified > 0  # the 30 copies overflow the shortlist: full float64 rows
    np.testing.assert_array_equal(graph.neighbors, expected_neighbors)
    np.testing.assert_allclose(graph.distances, expected_distances, rtol=1e-12, atol=0)
    adjacency = graph.adjacency
    assert (adjacency != adjacency.T).nnz == 0
    assert (adjacency.data > 0).all()  # no stored zeros: a duplicate is no edge
    assert adjacency.diagonal().sum() == 0


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), n_classes=st.integers(2, 4), k=st.integers(1, 6))
def test_invariant_to_point_order_and_label_names(seed, n_classes, k):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 3))
    labels = rng.integers(0, n_classes, 40)
    base = graph_convexity(X, labels, n_neighbors=k, max_pairs=None)
    order = rng.permutation(40)
    permuted = graph_convexity(X[order], labels[order], n_neighbors=k, max_pairs=None)
    assert permuted.score == pytest.approx(base.score, abs=1e-12)
    assert permuted.per_class == pytest.approx(base.per_class, abs=1e-12)
    names = {c: f"word-{(7 * c + 3) % 11}" for c in range(n_classes)}
    renamed = graph_convexity(X, [names[c] for c in labels], n_neighbors=k, max_pairs=None)
    assert renamed.score == pytest.approx(base.score, abs=1e-12)
    assert {names[c]: v for c, v in base.per_class.items()} == pytest.approx(renamed.per_class, abs=1e-12)
    assert 0.0 <= base.score <= 1.0 and all(0.0 <= v <= 1.0 for v in base.per_class.values())


def test_relabelling_does_not_change_the_sampled_pairs():
    X, labels = blobs(40, 3, 4, separation=0.5, seed=8)
    a = graph_convexity(X, labels, n_neighbors=5, max_pairs=50, seed=11)
    b = graph_convexity(X, (2 - labels) * 10, n_neighbors=5, max_pairs=50, seed=11)
    assert a.score == b.score


def test_well_separated_blobs_score_one():
    X, labels = blobs(30, 4, 16, separation=20.0, seed=9)
    result = graph_convexity(X, labels, n_neighbors=10, max_pairs=None)
    assert result.score == 1.0 and result.class_mean == 1.0
    assert set(result.per_class.values()) == {1.0}


def test_overlapping_random_labels_score_well_below_one():
    rng = np.random.default_rng(10)
    result = graph_convexity(rng.normal(size=(200, 8)), rng.integers(0, 4, 200), n_neighbors=10)
    assert 0.1 < result.score < 0.6  # about the chance of an interior vertex being in class (1/4) plus one-edge paths


def test_sampling_is_seeded_and_all_pairs_deterministic():
    X, labels = blobs(60, 3, 6, separation=0.4, seed=12)
    first = graph_convexity(X, labels, n_neighbors=6, max_pairs=100, seed=1)
    again = graph_convexity(X, labels, n_neighbors=6, max_pairs=100, seed=1)
    other = graph_convexity(X, labels, n_neighbors=6, max_pairs=100, seed=2)
    assert first == again
    assert first.score != other.score
    assert first.n_paths == {0: 100, 1: 100, 2: 100}
    everything = [graph_convexity(X, labels, n_neighbors=6, max_pairs=None, seed=s) for s in (0, 1)]
    assert everything[0].score == everything[1].score
    assert sum(everything[0].n_paths.values()) == 3 * 60 * 59


def test_pair_sample_is_uniform_without_replacement_over_ordered_pairs():
    codes = np.zeros(6, dtype=np.int64)
    draws = [sample_pairs(codes, n_classes=1, max_pairs=5, seed=s) for s in range(600)]
    seen = np.zeros((6, 6))
    for pairs in draws:
        assert len(set(zip(pairs.sources.tolist(), pairs.targets.tolist()))) == 5
        assert (pairs.sources != pairs.targets).all()
        np.add.at(seen, (pairs.sources, pairs.targets), 1)
    off_diagonal = seen[~np.eye(6, dtype=bool)]
    assert np.diag(seen).sum() == 0
    expected = 600 * 5 / 30
    assert np.abs(off_diagonal - expected).max() < 5 * np.sqrt(expected)


def test_string_labels_and_torch_input():
    X, labels = blobs(20, 3, 5, separation=0.6, seed=13)
    names = np.array(["yes", "no", "up"])[labels]
    as_numpy = graph_convexity(X, names, n_neighbors=5, max_pairs=None)
    as_torch = graph_convexity(torch.from_numpy(X), list(names), n_neighbors=5, max_pairs=None)
    assert set(as_numpy.per_class) == {"yes", "no", "up"}
    assert as_numpy.score == as_torch.score
    assert isinstance(as_numpy, ConvexityResult)
    assert as_numpy.params == {"n_neighbors": 5, "max_pairs": None, "seed": 0, "n_points": 60}


def test_single_member_classes_are_reported_not_nan():
    X, labels = blobs(15, 2, 4, separation=1.0, seed=14)
    labels = labels.astype(object)
    labels[3], labels[17] = "lonely", "alone"
    result = graph_convexity(X, labels, n_neighbors=4, max_pairs=None)
    assert sorted(result.skipped_classes) == ["alone", "lonely"]
    assert "lonely" not in result.per_class
    assert np.isfinite(result.score) and np.isfinite(result.class_mean)


def test_unreachable_pairs_score_zero_and_count():
    # two far-apart groups, each mixing both classes: class pairs across groups have no path
    rng = np.random.default_rng(15)
    X = np.concatenate([rng.normal(size=(10, 2)), rng.normal(size=(10, 2)) + 1000])
    labels = np.array([0, 1] * 10)
    result = graph_convexity(X, labels, n_neighbors=3, max_pairs=None)
    expected = per_pair_scores(X, labels, all_ordered_pairs(labels), k=3)
    assert result.n_unreachable == {0: 50, 1: 50}  # 5 x 5 x 2 directions per class
    assert result.n_paths == {0: 90, 1: 90}
    assert result.score == pytest.approx(expected.mean(), abs=1e-12)


def test_duplicates_give_no_edge_and_isolated_copies_are_unreachable():
    # 7 copies of one point with k = 5: their k nearest are each other, all at distance 0: no edges.
    rng = np.random.default_rng(16)
    X = rng.normal(size=(30, 3))
    X[:7] = X[0]
    labels = np.zeros(30, dtype=int)
    graph = knn_graph(X, n_neighbors=5)
    assert set(graph.neighbors[0].tolist()) <= set(range(7)) and (graph.distances[:7] == 0).all()
    # copies reach the rest of the graph only through points that picked them as neighbours
    assert all(set(graph.adjacency[[i]].indices.tolist()).isdisjoint(range(7)) for i in range(7))
    result = graph_convexity(X, labels, n_neighbors=5, max_pairs=None)
    expected = per_pair_scores(X, labels, all_ordered_pairs(labels), k=5)
    assert result.score == pytest.approx(expected.mean(), abs=1e-12)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "X, labels, kwargs, match",
    [
        (np.zeros((5, 2)), [0, 1, 0, 1], {}, "one label per point"),
        (np.zeros(5), [0] * 5, {}, r"shape \(N, D\)"),
        (np.array([[0.0, 1], [np.nan, 2], [3, 4]]), [0, 0, 1], {"n_neighbors": 1}, "NaN or infinite"),
        (np.array([[0.0, 1], [np.inf, 2], [3, 4]]), [0, 0, 1], {"n_neighbors": 1}, "NaN or infinite"),
        (np.random.default_rng(0).normal(size=(5, 2)), [0, 0, 1, 1, 0], {"n_neighbors": 5}, "at least n_neighbors"),
        (np.random.default_rng(0).normal(size=(5, 2)), [0, 0, 1, 1, 0], {"n_neighbors": 0}, "n_neighbors must be"),
        (np.random.default_rng(0).normal(size=(5, 2)), [0, 1, 2, 3, 4], {"n_neighbors": 2}, "No class has two"),
        (np.random.default_rng(0).normal(size=(5, 2)), [0, 0, 1, 1, 0], {"n_neighbors": 2, "max_pairs": 0}, "max_pairs"),
    ],
)
def test_bad_input_raises_clear_errors(X, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        graph_convexity(X, labels, **kwargs)


def test_unhashable_labels_raise_type_error():
    with pytest.raises(TypeError, match="hashable"):
        graph_convexity(np.random.default_rng(0).normal(size=(4, 2)), [[0], [0], [1], [1]], n_neighbors=1)


# -- layer-wise table --------------------------------------------------------------------------


def layer_stack():
    """Four layers of the same 60 points, class separation growing then shrinking: layer 2 best."""
    rng = np.random.default_rng(17)
    labels = np.repeat(np.arange(3), 20)
    centres = rng.normal(size=(3, 8))
    noise = rng.normal(size=(60, 8))
    return np.stack([s * centres[labels] + noise for s in (0.0, 0.4, 3.0, 0.6)]).astype(np.float32), labels


def test_layerwise_table_shape_intervals_and_p_best():
    embeddings, labels = layer_stack()
    table = layerwise_convexity(embeddings, labels, n_neighbors=5, max_pairs=300, n_bootstrap=30, progress=False)
    assert list(table.columns) == ["layer", "score", "class_mean", "ci_low", "ci_high", "p_best", "n_points"]
    assert table["layer"].tolist() == [0, 1, 2, 3]
    assert table["p_best"].sum() == pytest.approx(1.0)
    assert ((table["ci_low"] <= table["score"] + 1e-12) & (table["score"] <= table["ci_high"] + 1e-12)).all()
    assert best_layer(table) == 2 and table["p_best"].iloc[2] > 0.9
    assert (table["n_points"] == 60).all()
    for layer in range(4):
        single = graph_convexity(embeddings[layer], labels, n_neighbors=5, max_pairs=300)
        assert table["score"].iloc[layer] == pytest.approx(single.score, abs=1e-12)


def test_layerwise_accepts_a_mapping_and_rejects_bad_stacks():
    embeddings, labels = layer_stack()
    table = layerwise_convexity({"a": embeddings[0], "b": torch.from_numpy(embeddings[2])}, labels,
                                n_neighbors=5, n_bootstrap=0, progress=False)
    assert table["layer"].tolist() == ["a", "b"]
    assert table["p_best"].isna().all()
    with pytest.raises(ValueError, match=r"\(L, N, D\)"):
        layerwise_convexity(embeddings[0], labels, progress=False)
    with pytest.raises(ValueError, match="same points"):
        layerwise_convexity({"a": embeddings[0], "b": embeddings[1][:50]}, labels, n_neighbors=5, progress=False)


# -- teaching helpers ----------------------------------------------------------------------------


def test_shortest_path_scores_and_plot():
    import matplotlib.pyplot as plt

    X, labels = blobs(12, 2, 2, separation=2.0, seed=18)
    table = shortest_path_scores(X, labels, [(0, 1), (2, 5)], n_neighbors=4)
    expected = per_pair_scores(X, labels, [(0, 1), (2, 5)], k=4)
    np.testing.assert_array_equal(table["score"].to_numpy(), expected)
    for row in table.itertuples():
        assert row.path[0] == row.source and row.path[-1] == row.target
        assert row.n_interior == len(row.path) - 2
    ax, paths = plot_convexity_graph(X, labels, n_neighbors=4, pairs=[(0, 1)])
    assert paths["score"].tolist() == table["score"].tolist()[:1]
    assert len(ax.collections) >= 3  # edges, one node set per class, the highlighted path
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="2-D"):
        plot_convexity_graph(np.zeros((10, 3)), [0] * 10, n_neighbors=2)


@pytest.mark.parametrize("duplicated", [False, True])
def test_search_strategies_score_identically(duplicated):
    from convexlab._paths import score_paths

    X, labels = blobs(100, 4, 6, separation=0.5, seed=19)
    if duplicated:
        X, labels = with_duplicates(X, labels, n_copies=40, seed=20)
    graph = knn_graph(X, n_neighbors=6)
    pairs = sample_pairs(labels, n_classes=4, max_pairs=2000, seed=0)
    one_sided = score_paths(graph.adjacency, labels, pairs, strategy="one-sided")
    for strategy in ("bidirectional", "auto"):
        scores, hops = score_paths(graph.adjacency, labels, pairs, strategy=strategy)
        np.testing.assert_array_equal(scores, one_sided[0])
        np.testing.assert_array_equal(hops, one_sided[1])
    expected = per_pair_scores(X, labels, list(zip(pairs.sources[:300].tolist(), pairs.targets[:300].tolist())), k=6)
    np.testing.assert_array_equal(one_sided[0][:300], expected)


def _curve(scores, half_width=0.01):
    import pandas as pd

    scores = np.asarray(scores, dtype=float)
    return pd.DataFrame({"layer": np.arange(len(scores)), "score": scores,
                         "ci_low": scores - half_width, "ci_high": scores + half_width})


def test_layer_structure_on_constructed_curves():
    from convexlab.convexity import layer_structure

    paper_like = layer_structure(_curve([0.10, 0.11, 0.13, 0.15, 0.14, 0.12, 0.11]),
                                 _curve([0.70, 0.74, 0.72, 0.68, 0.66, 0.64, 0.62]))
    assert paper_like.holds and (paper_like.speaker_peak, paper_like.word_peak, paper_like.n_layers) == (1, 3, 6)
    late_speakers = layer_structure(_curve([0.10, 0.13, 0.15, 0.12, 0.11, 0.11, 0.10]),
                                    _curve([0.60, 0.61, 0.62, 0.66, 0.64, 0.63, 0.62]))
    assert not late_speakers.speakers_early and late_speakers.words_inside and not late_speakers.holds
    words_at_input = layer_structure(_curve([0.16, 0.15, 0.14, 0.13, 0.12, 0.12, 0.11]), _curve([0.7] + [0.6] * 6))
    assert not words_at_input.words_inside and not words_at_input.holds
    words_at_top = layer_structure(_curve([0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16]), _curve([0.7] + [0.6] * 6))
    assert not words_at_top.words_inside
    # a peak inside the stack but within layer 0's bootstrap interval is not enough
    within_noise = layer_structure(_curve([0.120, 0.125, 0.128, 0.121, 0.12, 0.12, 0.12], half_width=0.01),
                                   _curve([0.7] + [0.6] * 6))
    assert within_noise.words_inside and not within_noise.words_above_input and not within_noise.holds


def test_layer_structure_needs_bootstrap_intervals():
    from convexlab.convexity import layer_structure

    word = _curve([0.1, 0.2, 0.1]).assign(ci_high=np.nan)
    with pytest.raises(ValueError, match="n_bootstrap > 0"):
        layer_structure(word, _curve([0.7, 0.6, 0.5]))
