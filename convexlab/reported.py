"""The paper's reported numbers (Dorszewski, Tětková and Hansen 2024), and nothing else.

The book shows these beside its own results, always labelled "paper (reported)", never as its
own. They are data, typed in from the paper's poster table and its layer figures; this module
imports nothing of convexlab, so any layer (tables, plots, the chapters) can read them.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["SOURCE", "paper_table", "paper_best_layers"]

SOURCE = "paper (reported)"  # the label of every reported row, in every table and figure

# (task, accuracy change, training time change, inference time change) of the base models pruned
# at their most convex layer and finetuned on Speech Commands v0.02; fractions (-0.0025 is -0.25 %)
_PRUNING = (("word", -0.0025, -0.234, -0.259), ("speaker", 0.0122, -0.478, -0.587))
# (concept, model size, most convex layer, transformer layers)
_BEST_LAYERS = (("word", "base", 8, 12), ("speaker", "base", 2, 12), ("word", "large", 15, 24),
                ("speaker", "large", 4, 24))


def paper_table() -> pd.DataFrame:
    """The paper's poster table: pruned vs full base models after finetuning.

    These are the *paper's* numbers for the base models on Speech Commands v0.02, exactly as
    the poster table prints them (one figure per task). One row per task (2 rows); columns
    source, task, accuracy_change, train_time_change, inference_time_change, as fractions.
    """
    return pd.DataFrame([{"source": SOURCE, "task": task, "accuracy_change": accuracy,
                          "train_time_change": train, "inference_time_change": inference}
                         for task, accuracy, train, inference in _PRUNING])


def paper_best_layers() -> pd.DataFrame:
    """The most convex layers the paper reports, for the base (12-layer) and large (24-layer) models.

    One row per concept and model size (4 rows); columns source, concept, model_size,
    best_layer, n_layers, relative_depth (best_layer / n_layers).
    """
    return pd.DataFrame([{"source": SOURCE, "concept": concept, "model_size": size, "best_layer": best,
                          "n_layers": n, "relative_depth": best / n} for concept, size, best, n in _BEST_LAYERS])
