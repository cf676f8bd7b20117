"""Reshaping the book's tables: from per-layer, per-run and per-depth rows to the summaries the
chapters print. Pure functions of their input tables (nothing here runs a model or reads the
cache); :mod:`convexlab.pipeline`, which runs the experiments, re-exports them.

The one "most convex layer" is :func:`convexlab.convexity.best_layer` (ties to the shallower
layer); every summary here that names a best layer goes through it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from convexlab.convexity import best_layer, layer_structure
from convexlab.families import TASKS
from convexlab.profiles import Profile, get_profile
from convexlab.reported import paper_table
from convexlab.timing import split_cost

__all__ = [
    "best_layers",
    "layer_structure_table",
    "convexity_change",
    "comparison_row",
    "pruning_vs_paper",
    "depth_cost_split",
    "projection_layers",
    "example_clips",
    "cut_rule_summary",
]

_CURVE_KEYS = ("model", "family", "task", "concept", "stage")  # what tells one convexity curve from another


def best_layers(table: pd.DataFrame) -> pd.DataFrame:
    """The most convex layer of each curve of a convexity table.

    ``table``: rows of a :func:`convexlab.pipeline.convexity_by_layer` table (one per curve and
    layer). One row per curve; columns: the curve's keys among model, family, task, concept,
    stage; best_layer, n_layers (transformer layers of the model), score, ci_low and ci_high
    (bootstrap interval of the best layer's score; NaN without a bootstrap), p_best (bootstrap
    probability of that layer), relative_depth (best_layer / n_layers). Ties go to the
    shallower layer: it gives the smaller model.
    """
    keys = [k for k in _CURVE_KEYS if k in table.columns]
    rows = []
    for values, curve in table.groupby(keys, sort=False):
        curve = curve.sort_values("layer")
        best = curve[curve["layer"] == best_layer(curve)].iloc[0]
        n_layers = int(curve["layer"].max())
        rows.append({**dict(zip(keys, values)), "best_layer": int(best["layer"]), "n_layers": n_layers,
                     "score": float(best["score"]), "ci_low": float(best.get("ci_low", np.nan)),
                     "ci_high": float(best.get("ci_high", np.nan)), "p_best": float(best.get("p_best", np.nan)),
                     "relative_depth": int(best["layer"]) / n_layers if n_layers else np.nan})
    return pd.DataFrame(rows)


def layer_structure_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's layer structure tested per model (:func:`convexlab.convexity.layer_structure`).

    ``table``: a :func:`convexlab.pipeline.all_models_convexity` table with bootstrap intervals,
    both concepts (``task`` "word" and "speaker") for each model and stage. One row per model and
    stage; columns: model, stage (when present), n_layers, speaker_peak, word_peak, speakers_early,
    words_inside, words_above_input, holds.
    """
    keys = [k for k in ("model", "stage") if k in table.columns]
    rows = []
    for values, curves in table.groupby(keys, sort=False):
        by_task = {task: curve.sort_values("layer") for task, curve in curves.groupby("task")}
        missing = set(TASKS) - set(by_task)
        if missing:
            raise ValueError(f"Model {values!r} has no {sorted(missing)} curve: the layer structure needs both tasks.")
        verdict = layer_structure(by_task["word"], by_task["speaker"])
        rows.append({**dict(zip(keys, values)), **dataclasses.asdict(verdict)})
    return pd.DataFrame(rows)


def convexity_change(table: pd.DataFrame) -> pd.DataFrame:
    """How finetuning moved convexity: one row per model, task (finetuned for) and concept.

    ``table`` is a :func:`convexlab.pipeline.before_after_convexity` table. Columns: model,
    family, task, concept, last_before / last_after (convexity at the last layer, pretrained /
    finetuned), last_change (after − before), best_before / best_after (most convex layer).
    """
    rows = []
    for (model, family, task, concept), curves in table.groupby(["model", "family", "task", "concept"], sort=False):
        before = curves[curves["stage"] == "pretrained"].sort_values("layer")
        after = curves[curves["stage"] == "finetuned"].sort_values("layer")
        rows.append({
            "model": model, "family": family, "task": task, "concept": concept,
            "last_before": float(before["score"].iloc[-1]), "last_after": float(after["score"].iloc[-1]),
            "last_change": float(after["score"].iloc[-1] - before["score"].iloc[-1]),
            "best_before": int(best_layer(before)),
            "best_after": int(best_layer(after)),
        })
    return pd.DataFrame(rows)


# the columns of a convexlab.compare.PruneComparison that a pruning_results row keeps
_COMPARISON_FIELDS = ("layer", "n_layers", "accuracy_full", "accuracy_pruned", "accuracy_change",
                      "train_time_change", "inference_time_change", "parameters_change", "flops_change")


def comparison_row(comparison: Any) -> dict[str, Any]:
    """One row of :func:`convexlab.pipeline.pruning_results` from a prune comparison (anything with
    ``to_dict()``, or a dataclass): the kept layer, the accuracies and the relative changes."""
    data = comparison.to_dict() if hasattr(comparison, "to_dict") else dataclasses.asdict(comparison)
    return {key: data.get(key) for key in _COMPARISON_FIELDS}


def pruning_vs_paper(results: pd.DataFrame, profile: Profile | str) -> pd.DataFrame:
    """This book's pruning results (mean over its models) beside the paper's, one row per source and task.

    ``results``: a :func:`convexlab.pipeline.pruning_results` table; ``profile`` names the rows.
    Columns: source, task, accuracy_change, train_time_change, inference_time_change (fractions).
    The paper's rows are its reported figures (:func:`convexlab.reported.paper_table`), labelled as such.
    """
    name = get_profile(profile).name
    metrics = ["accuracy_change", "train_time_change", "inference_time_change"]
    ours = results.groupby("task", sort=False)[metrics].mean().reset_index()
    ours.insert(0, "source", f"this book, {name} profile (mean of {results['model'].nunique()} models)")
    return pd.concat([ours, paper_table()[["source", "task", *metrics]]], ignore_index=True)


def depth_cost_split(by_depth: pd.DataFrame) -> pd.DataFrame:
    """Per model, the fixed and per-layer parts of the time and FLOPs in an inference-by-depth table.

    ``by_depth``: a :func:`convexlab.pipeline.inference_by_depth` table (one row per model and
    depth). Columns: model, fixed_ms (per batch), ms_per_layer, fixed_time_share and
    fixed_flop_share (of the full model's time and FLOPs), fixed_gflop_per_s and
    layer_gflop_per_s (the FLOP rate each part achieves). See :func:`convexlab.timing.split_cost`.
    """
    rows = []
    for model, table in by_depth.groupby("model", sort=False):
        split = split_cost(table["num_layers"], table["time_ms"] / 1e3, table["gflops_per_clip"] * 1e9,
                           batch_size=int(table["batch_size"].iloc[0]))
        rows.append({"model": model, "fixed_ms": 1e3 * split.fixed_seconds, "ms_per_layer": 1e3 * split.seconds_per_layer,
                     "fixed_time_share": split.fixed_time_share, "fixed_flop_share": split.fixed_flop_share,
                     "fixed_gflop_per_s": split.fixed_flop_rate / 1e9, "layer_gflop_per_s": split.layer_flop_rate / 1e9})
    return pd.DataFrame(rows)


def projection_layers(n_layers: int) -> list[int]:
    """An early, a middle and the last layer of a model with ``n_layers`` transformer layers."""
    if n_layers < 1:
        raise ValueError(f"A model needs at least one transformer layer, got n_layers={n_layers}")
    return sorted({1, max(1, round(n_layers / 2)), n_layers})


def example_clips(dataset: Any, *, word: str | None = None, speaker: str | None = None, n: int = 4) -> list[int]:
    """Indices of ``n`` clips of ``dataset`` (an :class:`convexlab.data.AudioDataset`) to listen to
    and look at, chosen deterministically.

    Give ``word`` to get that word said by ``n`` different speakers, or ``speaker`` to get ``n``
    different words said by that speaker (the first ones in sorted order, first repetition).
    """
    if (word is None) == (speaker is None):
        raise ValueError("example_clips needs exactly one of word= or speaker=")
    words, speakers = np.asarray(dataset.words), np.asarray(dataset.speakers)
    fixed, fixed_values, varying = (words, word, speakers) if word is not None else (speakers, speaker, words)
    candidates = np.flatnonzero(fixed == fixed_values)
    if candidates.size == 0:
        what = "word" if word is not None else "speaker"
        raise ValueError(f"No clip has {what} {fixed_values!r}; choose one of {sorted(set(fixed.tolist()))[:12]} ...")
    order = sorted(candidates.tolist(), key=lambda i: (varying[i], dataset.clip_ids[i]))
    chosen, seen = [], set()
    for index in order:
        if varying[index] not in seen:
            seen.add(varying[index])
            chosen.append(index)
        if len(chosen) == n:
            break
    return chosen


def cut_rule_summary(table: pd.DataFrame) -> pd.DataFrame:
    """How good a guide each rule is, over the model/task pairs of a cut-study table.

    ``table``: :attr:`convexlab.pipeline.CutStudy.table` (one row per model, task and rule).
    One row per rule (in the table's order): pairs, within_tolerance (how many picks lie within
    the tolerance of the full model), at_oracle (picks at exactly the oracle depth),
    mean_abs_depth_from_oracle, mean_depth_from_oracle, mean_gap_to_full, worst_gap_to_full,
    mean_flops_saved.
    """
    grouped = table.groupby("rule", sort=False)
    summary = pd.DataFrame({
        "pairs": grouped.size(),
        "within_tolerance": grouped["within_tolerance"].sum().astype(int),
        "at_oracle": grouped["depth_from_oracle"].apply(lambda d: int((d == 0).sum())),
        "mean_abs_depth_from_oracle": grouped["depth_from_oracle"].apply(lambda d: float(d.abs().mean())),
        "mean_depth_from_oracle": grouped["depth_from_oracle"].mean(),
        "mean_gap_to_full": grouped["gap_to_full"].mean(),
        "worst_gap_to_full": grouped["gap_to_full"].max(),
        "mean_flops_saved": grouped["flops_saved"].mean(),
    })
    return summary.reset_index()
