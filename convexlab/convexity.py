"""Graph convexity: how well a class's points stay together along the data's own geometry.

The definition (Tětková et al. 2023, as used by Dorszewski et al. 2024; see the book's chapter
and ``reference/graph-convexity.md``): build the exact kNN graph of the embeddings (k = 10,
Euclidean, undirected, distance-weighted; a duplicate point gives no edge); for each class take
its ordered pairs of distinct members (all, or ``max_pairs`` sampled with a seed); score the
weighted shortest path of each pair by the fraction of its interior vertices in the class (one
edge: 1; no path: 0); average per class and pooled over all paths.

Public API:

- :func:`graph_convexity` -- one layer, a :class:`ConvexityResult`.
- :func:`layerwise_convexity` -- every layer of a stack, a tidy table with bootstrap intervals
  and the probability that each layer is the most convex one; :func:`best_layer` picks it.
- :func:`shortest_path_scores`, :func:`plot_convexity_graph` -- teaching helpers for 2-D toys.

The kNN graph lives in ``convexlab._knn``, pairs and paths in ``convexlab._paths``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from convexlab._progress import tqdm_disable
from convexlab._knn import KnnGraph, as_float64_matrix, knn_graph
from convexlab._paths import PairSample, sample_pairs, score_paths, shortest_path_tree

__all__ = [
    "LayerStructure",
    "layer_structure",
    "ConvexityResult",
    "graph_convexity",
    "euclidean_convexity",
    "layerwise_convexity",
    "best_layer",
    "pruning_depth",
    "shortest_path_scores",
    "plot_convexity_graph",
    "knn_graph",
]


@dataclass(frozen=True)
class ConvexityResult:
    score: float  # mean over all scored paths pooled across classes, in [0, 1]
    class_mean: float  # unweighted mean of the per-class means (the paper code's aggregate)
    per_class: dict[Hashable, float]  # class label -> mean score of its paths
    n_paths: dict[Hashable, int]  # class label -> number of scored paths (unreachable ones included)
    n_unreachable: dict[Hashable, int]  # class label -> paths between different components (scored 0)
    skipped_classes: list[Hashable]  # labels with fewer than two members: no pairs, left out of every mean
    n_neighbors: int  # k of the kNN graph
    max_pairs: int | None  # ordered pairs sampled per class (None: all pairs)
    seed: int  # seed of the pair sampling
    n_points: int  # N, the number of points
    timings: dict[str, float] = field(default_factory=dict, compare=False)  # seconds per step: knn, graph, pairs, paths

    @property
    def params(self) -> dict[str, Any]:
        """The parameters that produced this result."""
        return {"n_neighbors": self.n_neighbors, "max_pairs": self.max_pairs, "seed": self.seed, "n_points": self.n_points}

    def to_frame(self) -> pd.DataFrame:
        """Per-class table: label, score, n_paths, n_unreachable."""
        return pd.DataFrame(
            {
                "label": list(self.per_class),
                "score": list(self.per_class.values()),
                "n_paths": [self.n_paths[label] for label in self.per_class],
                "n_unreachable": [self.n_unreachable[label] for label in self.per_class],
            }
        )


@dataclass(frozen=True)
class _Classes:
    codes: np.ndarray  # (N,) int64 code of each point's class
    labels: list[Hashable]  # code -> label, sorted when the labels are orderable
    sizes: np.ndarray  # (C,) int64 members per class


def _encode_labels(labels, n_points: int) -> _Classes:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"labels must be one-dimensional (one label per point); got shape {labels.shape}.")
        labels = labels.tolist()  # NumPy scalars become plain Python values (nicer dict keys)
    elif isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence | pd.Series | pd.Index):
        raise TypeError(f"labels must be a sequence with one label per point; got {type(labels).__name__}.")
    labels = list(labels)
    if len(labels) != n_points:
        raise ValueError(
            f"labels has {len(labels)} entries but X has {n_points} rows; pass exactly one label per point."
        )
    first_seen: dict[Hashable, int] = {}
    try:
        for label in labels:
            first_seen.setdefault(label, len(first_seen))
    except TypeError as error:
        raise TypeError(f"labels must be hashable (str, int, ...): {error}. Convert them, e.g. to str.") from None
    try:
        ordered = sorted(first_seen)
    except TypeError:  # labels of mixed, unorderable types keep the order of first appearance
        ordered = list(first_seen)
    code_of = {label: code for code, label in enumerate(ordered)}
    codes = np.fromiter((code_of[label] for label in labels), dtype=np.int64, count=len(labels))
    return _Classes(codes=codes, labels=ordered, sizes=np.bincount(codes, minlength=len(ordered)))


def _check_parameters(n_points: int, n_neighbors: int, max_pairs: int | None, classes: _Classes) -> None:
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be an integer >= 1; got {n_neighbors!r}.")
    if n_points < n_neighbors + 1:
        raise ValueError(
            f"Need at least n_neighbors + 1 = {n_neighbors + 1} points; got {n_points}. "
            "Use more points or a smaller n_neighbors."
        )
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, (int, np.integer)) or max_pairs < 1):
        raise ValueError(f"max_pairs must be a positive integer, or None for all pairs; got {max_pairs!r}.")
    if not (classes.sizes >= 2).any():
        raise ValueError(
            "No class has two or more members, so there is no pair to score; "
            "check the labels (one label per point) or use more points per class."
        )


def _aggregate(
    scores: np.ndarray, hops: np.ndarray, pairs: PairSample, classes: _Classes
) -> tuple[float, float, dict, dict, dict]:
    n_classes = len(classes.labels)
    counts = np.bincount(pairs.pair_class, minlength=n_classes)
    unreachable = np.bincount(pairs.pair_class, minlength=n_classes, weights=hops < 0).astype(np.int64)
    # Correctly rounded sums (fsum) make the result independent of the order of points and classes.
    by_class = np.split(scores[np.argsort(pairs.pair_class, kind="stable")], np.cumsum(counts)[:-1])
    scored = np.flatnonzero(counts > 0)
    means = [math.fsum(by_class[c]) / counts[c] for c in scored]
    per_class = {classes.labels[c]: float(m) for c, m in zip(scored, means)}
    n_paths = {classes.labels[c]: int(counts[c]) for c in scored}
    n_unreachable = {classes.labels[c]: int(unreachable[c]) for c in scored}
    return math.fsum(scores) / scores.size, math.fsum(means) / len(means), per_class, n_paths, n_unreachable


def _prepare(X, labels, n_neighbors, max_pairs, seed) -> tuple[np.ndarray, _Classes, PairSample]:
    X64 = as_float64_matrix(X)
    classes = _encode_labels(labels, X64.shape[0])
    _check_parameters(X64.shape[0], n_neighbors, max_pairs, classes)
    pairs = sample_pairs(classes.codes, n_classes=len(classes.labels), max_pairs=max_pairs, seed=seed)
    return X64, classes, pairs


def _layer_scores(X64, classes, pairs, *, n_neighbors, device) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    graph: KnnGraph = knn_graph(X64, n_neighbors=n_neighbors, device=device)
    started = time.perf_counter()
    scores, hops = score_paths(graph.adjacency, classes.codes, pairs)
    return scores, hops, {**graph.timings, "paths": time.perf_counter() - started}


def graph_convexity(
    X,
    labels,
    *,
    n_neighbors: int = 10,
    max_pairs: int | None = 5000,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ConvexityResult:
    """Graph convexity of the classes in one set of embeddings.

    X: (N, D) NumPy array or torch tensor. labels: N hashable labels (strings, ints, ...).
    ``n_neighbors``: k of the kNN graph. ``max_pairs``: ordered pairs sampled per class (None:
    all pairs, no sampling). ``seed``: seed of that sampling. ``device``: where the kNN search
    runs (a GPU when given; the result does not depend on it).

    With all pairs the result depends neither on the order of the points nor on the label
    names; with sampling it is fixed by ``seed`` and independent of label names.

    Exactness: the kNN graph equals the one from a float64 ``cdist`` with ties at the cut-off
    ranked by index; among equal-length shortest paths (duplicate points) the one
    ``networkx.dijkstra_path`` returns is scored, so the scores equal the published per-pair
    code's. Cost: kNN O(N^2 D) in blocks; paths roughly O(N^2) settled vertices when classes
    overlap, far less when they are compact (see ``benchmarks/convexity.py``).
    """
    started = time.perf_counter()
    X64, classes, pairs = _prepare(X, labels, n_neighbors, max_pairs, seed)
    prepared = time.perf_counter() - started
    scores, hops, timings = _layer_scores(X64, classes, pairs, n_neighbors=n_neighbors, device=device)
    score, class_mean, per_class, n_paths, n_unreachable = _aggregate(scores, hops, pairs, classes)
    return ConvexityResult(
        score=score,
        class_mean=class_mean,
        per_class=per_class,
        n_paths=n_paths,
        n_unreachable=n_unreachable,
        skipped_classes=[label for label, size in zip(classes.labels, classes.sizes) if size < 2],
        n_neighbors=int(n_neighbors),
        max_pairs=None if max_pairs is None else int(max_pairs),
        seed=int(seed),
        n_points=int(X64.shape[0]),
        timings={"pairs": prepared, **timings},
    )


def euclidean_convexity(X, labels, *, n_points: int = 10, max_pairs: int | None = 500, seed: int = 0,
                        chunk_size: int = 4096) -> float:
    """Euclidean convexity of the classes in one set of embeddings, in [0, 1].

    X: (N, D); labels: N hashable labels. Definition (Tětková et al. 2023): for each class,
    ordered pairs of distinct members (all, or ``max_pairs`` per class sampled with ``seed``,
    the same sampling as :func:`convexlab.convexity.graph_convexity`); on the straight segment
    between the two points, ``n_points`` evenly spaced interior points x_a + t (x_b - x_a),
    t = i / (n_points + 1), i = 1..n_points; each is labelled by its nearest data point
    (Euclidean, ties to the lowest index). The score is the fraction of all those segment
    points, pooled over classes, whose label is the pair's class. A convex, well-separated
    class scores 1; classes whose straight segments pass through other classes score lower.
    Classes with one member have no pairs and are left out. The pair's own endpoints are data
    points too, so segment points near them take their class: random labels score well above
    chance (1 / C), which matters only when comparing absolute values, not layers.
    """
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1; got {n_points}.")
    X64 = as_float64_matrix(X)
    classes = _encode_labels(labels, X64.shape[0])
    codes = classes.codes
    pairs = sample_pairs(codes, n_classes=len(classes.labels), max_pairs=max_pairs, seed=seed)
    if pairs.sources.size == 0:
        raise ValueError("No class has two or more members, so there is no segment to score.")
    X64 = X64 - X64.mean(axis=0, keepdims=True)  # centred: smaller norms, exact-enough distances
    data = torch.from_numpy(X64)
    data_sq = (data * data).sum(dim=1)
    t = torch.arange(1, n_points + 1, dtype=torch.float64) / (n_points + 1)  # (n_points,)
    in_class = 0
    pairs_per_chunk = max(1, chunk_size // n_points)
    for start in range(0, pairs.sources.size, pairs_per_chunk):
        a = data[pairs.sources[start:start + pairs_per_chunk]]  # (P, D)
        b = data[pairs.targets[start:start + pairs_per_chunk]]
        points = (a[:, None, :] + t[None, :, None] * (b - a)[:, None, :]).reshape(-1, X64.shape[1])  # (P n, D)
        distances = (points * points).sum(dim=1, keepdim=True) - 2 * points @ data.T + data_sq[None, :]
        nearest = torch.argmin(distances, dim=1).numpy()  # first minimum: ties to the lowest index
        wanted = np.repeat(pairs.pair_class[start:start + pairs_per_chunk], n_points)
        in_class += int((codes[nearest] == wanted).sum())
    return in_class / (pairs.sources.size * n_points)


def _layers_of(embeddings) -> tuple[list[Hashable], list[Any]]:
    """(layer names, per-layer (N, D) arrays) from a stack, a mapping or a LayerEmbeddings."""
    if hasattr(embeddings, "embeddings") and not isinstance(embeddings, (np.ndarray, torch.Tensor, Mapping)):
        embeddings = embeddings.embeddings  # a convexlab.extract.LayerEmbeddings
    if isinstance(embeddings, Mapping):
        if not embeddings:
            raise ValueError("embeddings is an empty mapping; pass {layer: (N, D) array, ...}.")
        return list(embeddings), list(embeddings.values())
    if isinstance(embeddings, (np.ndarray, torch.Tensor)):
        if embeddings.ndim != 3:
            raise ValueError(
                f"embeddings must have shape (L, N, D) (layers, points, features) or be a mapping layer -> (N, D); "
                f"got shape {tuple(embeddings.shape)}. For one layer use graph_convexity."
            )
        return list(range(embeddings.shape[0])), [embeddings[layer] for layer in range(embeddings.shape[0])]
    raise TypeError(
        f"embeddings must be an (L, N, D) array/tensor or a mapping layer -> (N, D); got {type(embeddings).__name__}."
    )


def _bootstrap_scores(
    layer_scores: np.ndarray, pairs: PairSample, classes: _Classes, *, n_bootstrap: int, seed: int
) -> np.ndarray:
    """Pooled scores under resampled path endpoints: (L, P) path scores -> (n_bootstrap, L)."""
    rng = np.random.default_rng([seed, 0xB007])
    n_classes = len(classes.labels)
    members_by_class = [np.flatnonzero(classes.codes == c) for c in range(n_classes)]
    n_paths = np.bincount(pairs.pair_class, minlength=n_classes).astype(np.float64)
    replicates = np.empty((n_bootstrap, layer_scores.shape[0]))
    weight = np.zeros(classes.codes.size)
    for r in range(n_bootstrap):
        for members in members_by_class:
            weight[members] = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size))
        pair_weight = weight[pairs.sources] * weight[pairs.targets]
        total = np.bincount(pairs.pair_class, weights=pair_weight, minlength=n_classes)
        present = total > 0  # a tiny class can lose all its pairs in a replicate: leave it out of that one
        class_weight = np.where(present, n_paths, 0.0)
        for layer, scores in enumerate(layer_scores):
            sums = np.bincount(pairs.pair_class, weights=pair_weight * scores, minlength=n_classes)
            class_means = np.divide(sums, total, out=np.zeros(n_classes), where=present)
            replicates[r, layer] = (class_weight * class_means).sum() / class_weight.sum()
    return replicates


def layerwise_convexity(
    embeddings,
    labels,
    *,
    n_neighbors: int = 10,
    max_pairs: int | None = 5000,
    seed: int = 0,
    n_bootstrap: int = 20,
    confidence: float = 0.95,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Graph convexity of every layer, with bootstrap intervals and P(layer is the most convex).

    embeddings: (L, N, D) array/tensor, a mapping layer -> (N, D), or a ``LayerEmbeddings``;
    labels: N hashable labels. Every layer uses the same sampled pairs, so layers are compared
    on the same paths' endpoints. ``progress``: True shows a bar, False hides it, None shows it
    in a terminal or notebook unless ``TQDM_DISABLE`` is set.

    Returns one row per layer: layer, score, class_mean, ci_low, ci_high (percentile interval
    at ``confidence`` for ``score``), p_best (fraction of bootstrap replicates in which the
    layer has the highest score; ties share the replicate; sums to 1), n_points. With
    ``n_bootstrap=0`` the last three are NaN. The parameters are in ``table.attrs``.

    The uncertainty is a bootstrap over points as path endpoints, with the graph fixed: each
    replicate resamples every class's members with replacement (the same resample for all
    layers), weights each path by the multiplicities of its two endpoints and recomputes the
    pooled score. Rebuilding the graph on a resample is not sound here: a point drawn twice is
    a zero-distance duplicate, which by definition gives no edge, and a subsample without
    replacement thins the graph and so shifts every score. Keeping the graph built from all
    points isolates what the score averages over -- which clips' paths -- at no extra search
    cost. It does not cover the variability of the kNN graph itself.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence}.")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0; got {n_bootstrap}.")
    layer_names, layers = _layers_of(embeddings)
    first = as_float64_matrix(layers[0], name=f"embeddings[{layer_names[0]!r}]")
    _, classes, pairs = _prepare(first, labels, n_neighbors, max_pairs, seed)
    n_points = first.shape[0]
    del first
    rows, all_scores = [], []
    bar = tqdm(layer_names, desc="convexity", unit="layer", disable=tqdm_disable(progress))
    for name, layer in zip(bar, layers):
        X64 = as_float64_matrix(layer, name=f"embeddings[{name!r}]")
        if X64.shape[0] != n_points:
            raise ValueError(f"Layer {name!r} has {X64.shape[0]} points but layer {layer_names[0]!r} has {n_points}; "
                             "every layer must hold the same points in the same order.")
        scores, hops, _ = _layer_scores(X64, classes, pairs, n_neighbors=n_neighbors, device=device)
        score, class_mean, *_ = _aggregate(scores, hops, pairs, classes)
        rows.append({"layer": name, "score": score, "class_mean": class_mean})
        all_scores.append(scores)
    table = pd.DataFrame(rows)
    if n_bootstrap > 0:
        replicates = _bootstrap_scores(np.stack(all_scores), pairs, classes, n_bootstrap=n_bootstrap, seed=seed)
        tail = (1 - confidence) / 2
        table["ci_low"] = np.quantile(replicates, tail, axis=0)
        table["ci_high"] = np.quantile(replicates, 1 - tail, axis=0)
        is_best = replicates == replicates.max(axis=1, keepdims=True)
        table["p_best"] = (is_best / is_best.sum(axis=1, keepdims=True)).mean(axis=0)
    else:
        table["ci_low"] = table["ci_high"] = table["p_best"] = math.nan
    table["n_points"] = n_points
    table.attrs.update(
        n_neighbors=int(n_neighbors), max_pairs=max_pairs, seed=int(seed), n_bootstrap=int(n_bootstrap),
        confidence=float(confidence), n_paths=int(pairs.sources.size),
    )
    return table


def best_layer(table: pd.DataFrame, *, column: str = "score") -> Hashable:
    """The layer with the highest ``column`` in a ``layerwise_convexity`` table; on ties the
    shallowest (it gives the smaller model). The one "most convex layer" of the package."""
    if column not in table.columns or "layer" not in table.columns or table.empty:
        raise ValueError(f"Expected a non-empty layerwise_convexity table with columns 'layer' and {column!r}; "
                         f"got columns {list(table.columns)}.")
    table = table.sort_values("layer", kind="stable")
    return table["layer"].iloc[int(np.argmax(table[column].to_numpy()))]


def pruning_depth(layer: Hashable, n_layers: int) -> int:
    """The depth to prune at for a chosen hidden-state index: ``layer`` clamped to 1..n_layers.

    Hidden state 0 is the input of the first transformer layer; pruning there keeps no
    transformer layer, so every rule keeps at least one. The paper's rule is
    ``pruning_depth(best_layer(table), n_layers)``.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1; got {n_layers}.")
    return int(min(max(1, int(layer)), n_layers))


@dataclass(frozen=True)
class LayerStructure:
    """Does a pair of convexity curves show the paper's layer structure? (speakers early, words inside)."""

    n_layers: int  # transformer layers L (the curves run over hidden states 0..L)
    speaker_peak: int  # most convex layer of the speaker curve
    word_peak: int  # most convex layer of the word curve
    speakers_early: bool  # speaker_peak lies in the first third of the layers (<= L / 3)
    words_inside: bool  # 0 < word_peak < L
    words_above_input: bool  # the word peak's score exceeds the upper bootstrap bound of layer 0's
    holds: bool  # all three


def layer_structure(word: pd.DataFrame, speaker: pd.DataFrame) -> LayerStructure:
    """The paper's layer structure, tested on two ``layerwise_convexity`` tables of one model.

    ``word`` and ``speaker``: tables over the same layers 0..L with ``score`` and ``ci_high``
    (so measured with ``n_bootstrap > 0``). Speakers must peak in the first third of the layers
    (layer <= L / 3), words strictly inside the stack, and the word peak must lie above layer 0's
    bootstrap interval. The criteria were fixed before any pretraining recipe was tuned.
    """
    for name, table in (("word", word), ("speaker", speaker)):
        if "ci_high" not in table.columns or table["ci_high"].isna().any():
            raise ValueError(f"The {name} table needs bootstrap intervals (ci_high): measure it with n_bootstrap > 0.")
    n_layers = int(word["layer"].max())
    if int(speaker["layer"].max()) != n_layers or int(word["layer"].min()) != 0:
        raise ValueError("word and speaker tables must cover the same layers 0..L.")
    speaker_peak, word_peak = int(best_layer(speaker)), int(best_layer(word))
    layer0 = word.loc[word["layer"] == 0].iloc[0]
    peak_score = float(word.loc[word["layer"] == word_peak, "score"].iloc[0])
    early = speaker_peak <= n_layers / 3
    inside = 0 < word_peak < n_layers
    above = peak_score > float(layer0["ci_high"])
    return LayerStructure(n_layers, speaker_peak, word_peak, early, inside, above, early and inside and above)


def shortest_path_scores(X, labels, pairs: Sequence[tuple[int, int]], *, n_neighbors: int = 10) -> pd.DataFrame:
    """The shortest path of each given pair and its convexity score, one row per pair.

    X: (N, D); labels: N labels; pairs: (source, target) point indices. Columns: source, target,
    label (the source's class, the one the path is scored for), path (vertex indices, source
    first; None when unreachable), n_interior, n_in_class, score.
    """
    X64 = as_float64_matrix(X)
    classes = _encode_labels(labels, X64.shape[0])
    _check_parameters(X64.shape[0], n_neighbors, None, classes)
    pairs = [(int(a), int(b)) for a, b in pairs]
    for a, b in pairs:
        if not (0 <= a < X64.shape[0] and 0 <= b < X64.shape[0]) or a == b:
            raise ValueError(f"Pair ({a}, {b}) must be two distinct point indices in [0, {X64.shape[0]}).")
    adjacency = knn_graph(X64, n_neighbors=n_neighbors).adjacency
    rows = []
    for a, b in pairs:
        (path,), (score,) = shortest_path_tree(adjacency, classes.codes, a, np.array([b]))
        interior = [] if path is None else path[1:-1]
        rows.append({
            "source": a,
            "target": b,
            "label": classes.labels[classes.codes[a]],
            "path": path,
            "n_interior": len(interior),
            "n_in_class": int(sum(classes.codes[v] == classes.codes[a] for v in interior)),
            "score": float(score),
        })
    return pd.DataFrame(rows, columns=["source", "target", "label", "path", "n_interior", "n_in_class", "score"])


def plot_convexity_graph(X, labels, *, n_neighbors: int = 10, pairs: Sequence[tuple[int, int]] | None = None, ax=None):
    """Draw the kNN graph of 2-D toy data coloured by class, with the shortest paths of ``pairs``.

    X: (N, 2) coordinates (project higher-dimensional data first, e.g. with PCA). Returns
    ``(ax, paths)``: the matplotlib Axes and the ``shortest_path_scores`` table of the drawn
    paths (empty without ``pairs``), whose scores the figure illustrates.
    """
    import matplotlib.pyplot as plt
    import networkx as nx

    X64 = as_float64_matrix(X)
    if X64.shape[1] != 2:
        raise ValueError(f"plot_convexity_graph draws 2-D points; X has {X64.shape[1]} columns. "
                         "Project it to two dimensions first (e.g. sklearn.decomposition.PCA(2)).")
    classes = _encode_labels(labels, X64.shape[0])
    _check_parameters(X64.shape[0], n_neighbors, None, classes)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    graph = nx.from_scipy_sparse_array(knn_graph(X64, n_neighbors=n_neighbors).adjacency)
    positions = {i: X64[i] for i in range(X64.shape[0])}
    palette = plt.get_cmap("tab10" if len(classes.labels) <= 10 else "tab20")
    nx.draw_networkx_edges(graph, positions, ax=ax, edge_color="0.8", width=0.6)
    for code, label in enumerate(classes.labels):
        members = np.flatnonzero(classes.codes == code).tolist()
        nx.draw_networkx_nodes(graph, positions, nodelist=members, node_color=[palette(code % palette.N)],
                               node_size=30, ax=ax, label=str(label))
    paths = shortest_path_scores(X64, classes.codes, pairs or [], n_neighbors=n_neighbors)
    for row in paths.itertuples():
        if row.path is None:
            continue
        edges = list(zip(row.path[:-1], row.path[1:]))
        nx.draw_networkx_edges(graph, positions, edgelist=edges, ax=ax, width=2.5, edge_color="black")
        ax.annotate(f"{row.score:.2f}", X64[row.target], textcoords="offset points", xytext=(4, 4), fontsize=8)
    paths["label"] = [classes.labels[classes.codes[s]] for s in paths["source"]]
    ax.set_title(f"kNN graph (k = {n_neighbors}); bold: shortest paths, labelled with their scores")
    ax.legend(loc="best", fontsize=8, markerscale=1.2)
    ax.set_aspect("equal")
    return ax, paths
