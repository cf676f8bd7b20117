"""The exact k-nearest-neighbour graph that graph convexity walks on.

Each point is joined to its ``k`` nearest *other* points (Euclidean); equal distances are ranked
by the lower index, the published code's rule; a zero distance (a duplicate point) takes its
place among the ``k`` but gives no edge. The graph is the union of these relations made
undirected, weighted by the distance, and stored so that "no edge" is "not stored".

How it stays exact and fast: a float32 search in torch, block by block (so it runs on a GPU
when one is given and never holds an N x N matrix larger than one block), shortlists
``k + extra`` candidates per point on centred data; the shortlist's distances are recomputed in
float64 from the original coordinates and ranked stably by (distance, index). A float32 error
bound then certifies, per point, that no point outside the shortlist can be nearer than the
k-th neighbour; the rare point that cannot be certified (many duplicates, near-ties at the
cut-off) is ranked over all points in float64. The result equals the one from a full float64
``cdist`` and a stable sort.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse
import torch

__all__ = ["KnnGraph", "knn_graph", "as_float64_matrix"]

_FLOAT32_UNIT_ROUNDOFF = 2.0**-24


@dataclass(frozen=True)
class KnnGraph:
    adjacency: scipy.sparse.csr_array  # (N, N) symmetric, float64 edge lengths, sorted indices, no stored zeros
    neighbors: np.ndarray  # (N, k) int64: each point's k nearest other points, ranked by (distance, index)
    distances: np.ndarray  # (N, k) float64: their Euclidean distances (0 for a duplicate: no edge)
    n_uncertified: int  # points whose float32 shortlist could not be certified and were ranked in full float64
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "knn" (search + re-rank), "graph" (assembly)


def as_float64_matrix(X, *, name: str = "X") -> np.ndarray:
    """``X`` (NumPy array or torch tensor of shape (N, D)) as a C-contiguous float64 array, validated."""
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must have shape (N, D) (one row per point); got shape {X.shape}. "
            "Pass one layer at a time, or use layerwise_convexity for a stack of layers."
        )
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}. Convert it with X.astype(float).")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        bad_rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad_rows.size} row(s) (first: {bad_rows[:5].tolist()}); "
            "drop or repair those points (e.g. check the extraction for empty audio) before computing convexity."
        )
    return X


@numba.njit(parallel=True, cache=True)
def _candidate_distances(X, rows, candidates):  # pragma: no cover - compiled
    """Euclidean distances, float64, summed in coordinate order like ``scipy.spatial.distance.cdist``.

    X: (N, D) float64; rows: (B,) int64; candidates: (B, m) int64 -> (B, m) float64.
    """
    n_rows, n_candidates = candidates.shape
    out = np.empty((n_rows, n_candidates))
    for r in numba.prange(n_rows):
        i = rows[r]
        for c in range(n_candidates):
            j = candidates[r, c]
            total = 0.0
            for t in range(X.shape[1]):
                diff = X[i, t] - X[j, t]
                total += diff * diff
            out[r, c] = np.sqrt(total)
    return out


@numba.njit(parallel=True, cache=True)
def _row_distances(X, i):  # pragma: no cover - compiled
    """Distances from point ``i`` to every point, float64: X (N, D) -> (N,)."""
    n, dim = X.shape
    out = np.empty(n)
    for j in numba.prange(n):
        total = 0.0
        for t in range(dim):
            diff = X[i, t] - X[j, t]
            total += diff * diff
        out[j] = np.sqrt(total)
    return out


@contextlib.contextmanager
def _exact_float32_matmul():
    """Full float32 products (no TF32 on GPUs): the certification bound assumes float32 rounding."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _rank_stably(distances: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row ordered by (distance, index). Both inputs (B, m) -> two (B, k)."""
    order = np.lexsort((indices, distances), axis=-1)[:, :k]
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(distances, order, axis=1)


def _nearest_exact(X64: np.ndarray, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Point ``i``'s k nearest other points by a full float64 row: two (k,) arrays."""
    distances = _row_distances(X64, i)
    others = np.delete(np.arange(X64.shape[0]), i)
    neighbors, dist = _rank_stably(distances[others][None, :], others[None, :], k)
    return neighbors[0], dist[0]


def _assemble_graph(neighbors: np.ndarray, distances: np.ndarray) -> scipy.sparse.csr_array:
    """Union of the directed kNN relations as a symmetric CSR matrix without zero-length edges."""
    n, k = neighbors.shape
    source = np.repeat(np.arange(n, dtype=np.int64), k)
    target = neighbors.ravel()
    length = distances.ravel()
    keep = length > 0  # a duplicate point is a neighbour but not an edge
    source, target, length = source[keep], target[keep], length[keep]
    low, high = np.minimum(source, target), np.maximum(source, target)
    # An edge found from both ends appears twice; its two lengths are bitwise equal
    # ((a-b)^2 == (b-a)^2), so keeping either copy is exact.
    _, first = np.unique(low * n + high, return_index=True)
    low, high, length = low[first], high[first], length[first]
    rows = np.concatenate([low, high])
    cols = np.concatenate([high, low])
    weights = np.concatenate([length, length])
    adjacency = scipy.sparse.csr_array((weights, (rows, cols)), shape=(n, n))
    adjacency.sort_indices()
    return adjacency


def knn_graph(
    X,
    *,
    n_neighbors: int = 10,
    device: str | torch.device | None = None,
    extra_candidates: int | None = None,
    block_bytes: int = 64 * 2**20,
) -> KnnGraph:
    """The exact, undirected, distance-weighted kNN graph of ``X``.

    X: (N, D) NumPy array or torch tensor, finite. ``n_neighbors``: k, at most N - 1.
    ``device``: where the float32 shortlist search runs ("cpu", "cuda", ...; default CPU).
    ``extra_candidates``: shortlist size beyond k (default max(k, 8)); more only costs time.
    ``block_bytes``: memory for one block of float32 distances (rows x N).
    """
    X64 = as_float64_matrix(X)
    n, dim = X64.shape
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be at least 1; got {n_neighbors}.")
    if n < n_neighbors + 1:
        raise ValueError(
            f"Need at least n_neighbors + 1 = {n_neighbors + 1} points to find {n_neighbors} neighbours each; "
            f"got {n}. Use more points or a smaller n_neighbors."
        )
    started = time.perf_counter()
    n_candidates = min(n - 1, n_neighbors + (max(n_neighbors, 8) if extra_candidates is None else extra_candidates))
    device = torch.device("cpu" if device is None else device)

    # Centring removes the shared offset that would otherwise eat float32's precision.
    centred = torch.from_numpy((X64 - X64.mean(axis=0)).astype(np.float32)).to(device)
    squared_norms = (centred * centred).sum(dim=1)
    norms = np.sqrt(squared_norms.double().cpu().numpy())
    # Rigorous bound on the float32 error of a squared distance |x_i|^2 + |x_j|^2 - 2 x_i.x_j
    # (dot products, norms and the float32 rounding of the centred data), for any j.
    tolerance = 2.0 * (dim + 6) * _FLOAT32_UNIT_ROUNDOFF * (norms + norms.max()) ** 2

    neighbors = np.empty((n, n_neighbors), dtype=np.int64)
    distances = np.empty((n, n_neighbors), dtype=np.float64)
    uncertified: list[int] = []
    rows_per_block = max(1, min(n, block_bytes // (4 * n)))
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        rows = np.arange(start, stop)
        # |x_j|^2 - 2 x_i.x_j ranks row i like the squared distance (|x_i|^2 is constant per row).
        with _exact_float32_matmul():
            partial = torch.addmm(squared_norms[None, :], centred[start:stop], centred.T, alpha=-2.0)
        partial[torch.arange(stop - start, device=device), torch.arange(start, stop, device=device)] = torch.inf
        shortlist_partial, shortlist = torch.topk(partial, n_candidates, dim=1, largest=False, sorted=True)
        shortlist = shortlist.cpu().numpy().astype(np.int64)
        last_squared = shortlist_partial[:, -1].double().cpu().numpy() + norms[rows] ** 2
        exact = _candidate_distances(X64, rows, shortlist)
        block_neighbors, block_distances = _rank_stably(exact, shortlist, n_neighbors)
        neighbors[start:stop], distances[start:stop] = block_neighbors, block_distances
        if n_candidates < n - 1:
            kth_squared = block_distances[:, -1] ** 2
            # Every point outside the shortlist has float32 squared distance >= last_squared,
            # hence true squared distance >= last_squared - tolerance.
            certified = last_squared - tolerance[rows] > kth_squared * (1 + 1e-12) + 1e-300
            uncertified.extend(rows[~certified].tolist())
    for i in uncertified:
        neighbors[i], distances[i] = _nearest_exact(X64, i, n_neighbors)
    searched = time.perf_counter()
    adjacency = _assemble_graph(neighbors, distances)
    assembled = time.perf_counter()
    return KnnGraph(
        adjacency=adjacency,
        neighbors=neighbors,
        distances=distances,
        n_uncertified=len(uncertified),
        timings={"knn": searched - started, "graph": assembled - searched},
    )
