"""Straightforward implementations of graph convexity, written from the definition.

Used by the tests (agreement on small data) and by ``benchmarks/convexity.py`` (speed ratios).
They are deliberately naive: a full float64 ``cdist``, a stable sort per row, and either one
networkx Dijkstra per pair (as the published code does) or scipy's all-sources Dijkstra with a
dense N x N result (as the first author's course code does).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import dijkstra
from scipy.spatial.distance import cdist


def reference_neighbors(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each point's k nearest other points by (distance, index): two (N, k) arrays."""
    distances = cdist(X, X)
    n = X.shape[0]
    neighbors = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        order = np.lexsort((others, distances[i, others]))[:k]
        neighbors[i] = others[order]
    return neighbors, np.take_along_axis(distances, neighbors, axis=1)


def reference_graph(X: np.ndarray, k: int) -> nx.Graph:
    """The undirected kNN graph; edges added in (low, high) index order so adjacency is index-sorted."""
    neighbors, distances = reference_neighbors(np.asarray(X, dtype=np.float64), k)
    edges = {}
    for i in range(neighbors.shape[0]):
        for j, d in zip(neighbors[i], distances[i]):
            if d > 0:  # a duplicate point is no edge
                edges[(min(i, int(j)), max(i, int(j)))] = d
    graph = nx.Graph()
    graph.add_nodes_from(range(X.shape[0]))
    for (a, b), d in sorted(edges.items()):
        graph.add_edge(a, b, weight=d)
    return graph


def all_ordered_pairs(labels) -> list[tuple[int, int]]:
    labels = list(labels)
    return [(a, b) for a in range(len(labels)) for b in range(len(labels)) if a != b and labels[a] == labels[b]]


def path_score(path, labels, label) -> float:
    if path is None:
        return 0.0
    if len(path) == 2:
        return 1.0
    interior = path[1:-1]
    return sum(labels[v] == label for v in interior) / len(interior)


def per_pair_scores(X, labels, pairs, *, k: int = 10) -> np.ndarray:
    """One networkx Dijkstra per pair (the published code's way): (P,) scores."""
    graph = reference_graph(X, k)
    labels = list(labels)
    scores = []
    for a, b in pairs:
        try:
            path = nx.dijkstra_path(graph, a, b, weight="weight")
        except nx.NetworkXNoPath:
            path = None
        scores.append(path_score(path, labels, labels[a]))
    return np.asarray(scores)


def all_pairs_scores(X, labels, pairs, *, k: int = 10) -> np.ndarray:
    """scipy's Dijkstra from every source, dense N x N distances and predecessors: (P,) scores."""
    graph = reference_graph(X, k)
    adjacency = nx.to_scipy_sparse_array(graph, nodelist=range(X.shape[0]), weight="weight", format="csr")
    _, predecessors = dijkstra(scipy.sparse.csr_matrix(adjacency), directed=False, return_predecessors=True)
    labels = list(labels)
    scores = []
    for a, b in pairs:
        if predecessors[a, b] < 0:
            scores.append(0.0)
            continue
        path = [b]
        while path[-1] != a:
            path.append(int(predecessors[a, path[-1]]))
        scores.append(path_score(path[::-1], labels, labels[a]))
    return np.asarray(scores)


def pooled(scores: np.ndarray) -> float:
    return float(np.mean(scores))
