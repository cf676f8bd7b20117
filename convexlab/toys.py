"""Two-dimensional toy data for teaching convexity: blobs, moons and rings.

Chapter 3 of the book uses these to show the difference between *Euclidean* convexity (the
straight segment between two members of a class stays in the class) and *graph* convexity
(the shortest path through the data's kNN graph stays in the class), and how the graph score
reacts to the number of neighbours k and to noise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

# Euclidean convexity is the package's one implementation (the layer rule of convexlab.frontier uses it too)
from convexlab.convexity import euclidean_convexity, graph_convexity

__all__ = ["TOY_DATASETS", "toy_dataset", "euclidean_convexity", "convexity_sweep"]

TOY_DATASETS = ("blobs", "moons", "rings")  # names accepted by toy_dataset


def toy_dataset(name: str, *, n_samples: int = 300, noise: float = 0.08, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A labelled 2-D toy: ``X`` float64 (n_samples, 2) and integer labels ``y`` (n_samples,).

    ``"blobs"``: three Gaussian clouds (convex in both senses); ``"moons"``: two interleaved
    half circles (graph-convex, not Euclidean-convex); ``"rings"``: a ring around a disc (the
    outer ring is graph-convex only). ``noise`` is the standard deviation of the Gaussian
    jitter, relative to the unit scale of the shapes.
    """
    from sklearn import datasets

    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    if name == "blobs":
        X, y = datasets.make_blobs(n_samples=n_samples, centers=[(-2.0, 0.0), (2.0, 0.0), (0.0, 3.0)],
                                   cluster_std=max(noise, 1e-3) * 6, random_state=seed)
    elif name == "moons":
        X, y = datasets.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    elif name == "rings":
        X, y = datasets.make_circles(n_samples=n_samples, noise=noise / 2, factor=0.45, random_state=seed)
    else:
        raise ValueError(f"Unknown toy dataset {name!r}; choose one of {list(TOY_DATASETS)}")
    return X.astype(np.float64), y.astype(np.int64)


def convexity_sweep(
    *,
    datasets: Sequence[str] = TOY_DATASETS,
    n_neighbors: Sequence[int] = (3, 5, 10, 20, 40),
    noises: Sequence[float] = (0.05, 0.15, 0.3),
    n_samples: int = 300,
    max_pairs: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Graph and Euclidean convexity of each toy for every k and noise level.

    Returns one row per (dataset, noise, n_neighbors) with columns dataset, noise, n_neighbors,
    graph_convexity (pooled score) and euclidean_convexity (which does not depend on k).
    """
    rows = []
    for name in datasets:
        for noise in noises:
            X, y = toy_dataset(name, n_samples=n_samples, noise=noise, seed=seed)
            euclidean = euclidean_convexity(X, y, max_pairs=max_pairs, seed=seed)
            for k in n_neighbors:
                result = graph_convexity(X, y, n_neighbors=k, max_pairs=max_pairs, seed=seed)
                rows.append({"dataset": name, "noise": noise, "n_neighbors": k,
                             "graph_convexity": result.score, "euclidean_convexity": euclidean})
    return pd.DataFrame(rows)
