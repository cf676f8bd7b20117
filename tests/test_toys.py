"""convexlab.toys: the 2-D teaching toys and their Euclidean convexity, checked against their
definitions with fixed seeds (every expected value below is derived, not recorded)."""

from __future__ import annotations

import numpy as np
import pytest

from convexlab import frontier, toys
from convexlab.convexity import graph_convexity

SEEDS = (0, 1, 7)


# ----------------------------------------------------------------------------- the toys


@pytest.mark.parametrize("name, n_classes", [("blobs", 3), ("moons", 2), ("rings", 2)])
@pytest.mark.parametrize("seed", SEEDS)
def test_toys_have_the_documented_shape_and_classes(name, n_classes, seed):
    X, y = toys.toy_dataset(name, n_samples=150, noise=0.1, seed=seed)
    assert X.shape == (150, 2) and X.dtype == np.float64
    assert y.shape == (150,) and y.dtype == np.int64
    assert sorted(set(y.tolist())) == list(range(n_classes))
    assert np.isfinite(X).all()


@pytest.mark.parametrize("name", toys.TOY_DATASETS)
def test_toys_are_a_function_of_their_seed(name):
    first, second = toys.toy_dataset(name, seed=3), toys.toy_dataset(name, seed=3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    other = toys.toy_dataset(name, seed=4)
    assert not np.array_equal(first[0], other[0])


def test_noiseless_moons_lie_on_their_half_circles():
    """make_moons: class 0 on the upper unit half circle about (0, 0), class 1 on the lower one about (1, 0.5)."""
    X, y = toys.toy_dataset("moons", n_samples=200, noise=0.0, seed=0)
    upper, lower = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0, atol=1e-12)
    assert (upper[:, 1] >= -1e-12).all()
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0, atol=1e-12)
    assert (lower[:, 1] <= 0.5 + 1e-12).all()


def test_noiseless_rings_have_radii_one_and_the_factor():
    X, y = toys.toy_dataset("rings", n_samples=200, noise=0.0, seed=0)
    radius = np.hypot(*X.T)
    np.testing.assert_allclose(radius[y == 0], 1.0, atol=1e-12)  # the outer ring
    np.testing.assert_allclose(radius[y == 1], 0.45, atol=1e-12)  # the disc's ring, factor 0.45


def test_blobs_sit_at_their_centres_with_a_spread_that_grows_with_noise():
    centres = np.array([(-2.0, 0.0), (2.0, 0.0), (0.0, 3.0)])
    spreads = []
    for noise in (0.05, 0.2):
        X, y = toys.toy_dataset("blobs", n_samples=3000, noise=noise, seed=0)
        for label, centre in enumerate(centres):
            members = X[y == label]
            # four standard errors of a mean of len(members) draws with sd 6 * noise
            np.testing.assert_allclose(members.mean(axis=0), centre, atol=4 * 6 * noise / np.sqrt(len(members)))
        spreads.append(np.mean([X[y == label].std(axis=0).mean() for label in range(3)]))
    # cluster_std = 6 * noise: 0.3 and 1.2
    assert spreads == [pytest.approx(0.3, rel=0.1), pytest.approx(1.2, rel=0.1)]


def test_bad_toy_requests_raise_with_the_choices():
    with pytest.raises(ValueError, match="noise must be >= 0"):
        toys.toy_dataset("moons", noise=-0.1)
    with pytest.raises(ValueError, match=r"Unknown toy dataset 'spiral'.*blobs.*moons.*rings"):
        toys.toy_dataset("spiral")


# ----------------------------------------------------------------------------- Euclidean convexity


def _euclidean_by_definition(X: np.ndarray, labels: np.ndarray, *, n_points: int) -> float:
    """The definition, spelled out: every ordered pair (a, b) of distinct members of a class; the
    points x_a + t (x_b - x_a), t = i / (n_points + 1), i = 1..n_points; each labelled by its nearest
    data point (ties to the lowest index); the share of all those points labelled with the pair's
    class. Loops, no sampling."""
    inside = total = 0
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        for a in members:
            for b in members:
                if a == b:
                    continue
                for i in range(1, n_points + 1):
                    point = X[a] + i / (n_points + 1) * (X[b] - X[a])
                    nearest = int(np.argmin(((X - point) ** 2).sum(axis=1)))
                    inside += labels[nearest] == cls
                    total += 1
    return inside / total


def test_the_toys_use_the_packages_one_euclidean_convexity():
    assert toys.euclidean_convexity is frontier.euclidean_convexity


@pytest.mark.parametrize("name", toys.TOY_DATASETS)
@pytest.mark.parametrize("seed", SEEDS)
def test_euclidean_convexity_over_all_pairs_is_the_definition(name, seed):
    X, y = toys.toy_dataset(name, n_samples=45, noise=0.15, seed=seed)
    expected = _euclidean_by_definition(X, y, n_points=4)
    assert toys.euclidean_convexity(X, y, n_points=4, max_pairs=None) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_sampled_pairs_estimate_the_all_pairs_score(seed):
    X, y = toys.toy_dataset("moons", n_samples=120, noise=0.15, seed=seed)
    exact = toys.euclidean_convexity(X, y, max_pairs=None)
    assert toys.euclidean_convexity(X, y, max_pairs=1500, seed=seed) == pytest.approx(exact, abs=0.03)


def test_euclidean_convexity_of_a_segment_through_another_class_is_the_share_left_outside_it():
    """Members at x = -1 and x = +1, one other point at 0. Both ordered pairs give the same segment;
    with 9 interior points at x = -0.8, -0.6, ..., 0.8, the nearest data point is the other class
    for |x| < 0.5, so 4 of 9 points stay in the class. (The single-member class has no pairs.)"""
    X = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    labels = np.array(["a", "a", "b"])
    for seed in SEEDS:
        assert toys.euclidean_convexity(X, labels, n_points=9, seed=seed) == pytest.approx(4 / 9, abs=1e-12)
    # with one interior point (the midpoint, nearest to b) nothing stays in the class
    assert toys.euclidean_convexity(X, labels, n_points=1) == 0.0


def test_separated_convex_classes_score_one():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(40, 2)) * 0.1, rng.normal(size=(40, 2)) * 0.1 + 10.0])
    labels = np.repeat([0, 1], 40)
    assert toys.euclidean_convexity(X, labels, seed=0) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_euclidean_convexity_does_not_depend_on_position_or_scale(seed):
    """Segments and nearest neighbours commute with x -> c x + b (c > 0), and the pairs depend only
    on the labels and the seed: the score is the same number."""
    X, y = toys.toy_dataset("moons", n_samples=120, noise=0.1, seed=seed)
    base = toys.euclidean_convexity(X, y, max_pairs=300, seed=seed)
    moved = toys.euclidean_convexity(3.5 * X + np.array([10.0, -4.0]), y, max_pairs=300, seed=seed)
    assert moved == pytest.approx(base, abs=1e-12)
    assert 0.0 <= base <= 1.0


def test_the_chapters_claim_holds_moons_and_rings_are_graph_convex_but_not_euclidean_convex():
    for name in ("moons", "rings"):
        X, y = toys.toy_dataset(name, n_samples=300, noise=0.08, seed=0)
        euclidean = toys.euclidean_convexity(X, y, max_pairs=1000, seed=0)
        graph = graph_convexity(X, y, n_neighbors=10, max_pairs=1000, seed=0).score
        assert graph > euclidean + 0.1, (name, graph, euclidean)
    X, y = toys.toy_dataset("blobs", n_samples=300, noise=0.08, seed=0)
    assert toys.euclidean_convexity(X, y, seed=0) > 0.95  # blobs are convex in both senses


def test_euclidean_convexity_explains_bad_input():
    with pytest.raises(ValueError, match="labels has 3 entries but X has 4 rows"):
        toys.euclidean_convexity(np.zeros((4, 2)), [0, 1, 0])
    with pytest.raises(ValueError, match="No class has two or more members"):
        toys.euclidean_convexity(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="n_points must be >= 1"):
        toys.euclidean_convexity(np.eye(3), [0, 0, 1], n_points=0)


# ----------------------------------------------------------------------------- the sweep


def test_convexity_sweep_has_one_row_per_setting_and_recomputes_to_the_same_scores():
    ks, noises = (3, 10), (0.05, 0.2)
    sweep = toys.convexity_sweep(datasets=("moons", "blobs"), n_neighbors=ks, noises=noises, n_samples=120,
                                 max_pairs=300, seed=2)
    assert len(sweep) == 2 * len(ks) * len(noises)
    assert list(sweep.columns) == ["dataset", "noise", "n_neighbors", "graph_convexity", "euclidean_convexity"]
    assert not sweep.duplicated(["dataset", "noise", "n_neighbors"]).any()
    assert sweep[["graph_convexity", "euclidean_convexity"]].stack().between(0, 1).all()
    # Euclidean convexity does not depend on k
    assert (sweep.groupby(["dataset", "noise"])["euclidean_convexity"].nunique() == 1).all()
    row = sweep[(sweep["dataset"] == "moons") & (sweep["noise"] == 0.2) & (sweep["n_neighbors"] == 10)].iloc[0]
    X, y = toys.toy_dataset("moons", n_samples=120, noise=0.2, seed=2)
    assert row["graph_convexity"] == graph_convexity(X, y, n_neighbors=10, max_pairs=300, seed=2).score
    assert row["euclidean_convexity"] == toys.euclidean_convexity(X, y, max_pairs=300, seed=2)
