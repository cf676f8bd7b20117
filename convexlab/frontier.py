"""Where to cut? The pruning frontier of a model and the layer-selection rules measured on it.

The frontier (:func:`pruning_frontier`): the model cut at each depth 1..L (keeping transformer
layers 1..L) and finetuned for a task with a profile's recipe, every depth on the same batches
in the same order (checked through each run's ``batch_ids_digest``, not assumed). Every run is
cached by :func:`convexlab.finetune.finetune_for_profile` under its own key (model, task, depth,
data, recipe, seed), so a second call trains nothing. Per depth: accuracy (mean and spread over
seeds), training time, parameters, FLOPs per clip and, when asked, inference time. The *oracle*
depth (:func:`oracle_depth`) is the smallest depth whose accuracy lies within ``tolerance`` of
the full model's: what a rule that knew the finetuning results would pick.

Layer-selection rules (:class:`LayerRule`): a small function from the *pretrained* model's
per-layer embeddings of the analysis clips, shape (L + 1, N, D) (hidden state 0 is the input of
the first transformer layer), and their labels to a depth in 1..L:

- ``graph-convexity``: the most convex layer (the paper's rule; :func:`convexlab.convexity.best_layer`).
- ``euclidean-convexity``: the layer with the highest :func:`euclidean_convexity`.
- ``linear-probe``: the layer with the best 3-fold cross-validated accuracy of a standardised
  logistic regression.
- ``cka-redundancy``: the first layer after which linear CKA between consecutive layers stays at
  or above a threshold (0.95): the layers above it add little (the follow-up's redundancy idea).
- ``keep-all`` and ``keep-half`` (ceil(L / 2)): the trivial baselines.

Every rule's layer goes through :func:`convexlab.convexity.pruning_depth` (re-exported here as
``keep_at_least_one``): depth 0 keeps no transformer layer, so a rule that picks hidden state 0
prunes at depth 1. :func:`pick_depths` applies the rules,
:func:`rule_report` measures each pick against the frontier; the figure is
:func:`convexlab.plots.plot_frontier`.

Euclidean convexity (Tětková et al. 2023, "On convex conceptual regions in deep network
representations", alongside graph convexity; ``reference/graph-convexity.md`` defines only the
graph one, so the definition used here is stated in :func:`convexlab.convexity.euclidean_convexity`,
the one implementation, which the 2-D toys of :mod:`convexlab.toys` use too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from convexlab._knn import as_float64_matrix
# euclidean_convexity lives in convexity (toys uses it too) and is re-exported here, where its rule is
from convexlab.convexity import best_layer, euclidean_convexity, layerwise_convexity, pruning_depth
from convexlab.finetune import FinetuneResult, finetune_for_profile
from convexlab.models import load_model
from convexlab.parallel import FinetuneJob, finetune_runs
from convexlab.profiles import Profile, get_profile
from convexlab.prune import num_transformer_layers, prune
from convexlab.timing import compare_depths, flops_per_clip

__all__ = [
    "linear_cka",
    "euclidean_convexity",
    "keep_at_least_one",
    "LayerRule",
    "graph_convexity_rule",
    "euclidean_convexity_rule",
    "linear_probe_rule",
    "cka_redundancy_rule",
    "keep_all",
    "keep_half",
    "RULES",
    "pick_depths",
    "Frontier",
    "pruning_frontier",
    "oracle_depth",
    "rule_report",
]


# --------------------------------------------------------------------------- measures


def _centred(X) -> np.ndarray:
    X64 = as_float64_matrix(X)
    return X64 - X64.mean(axis=0, keepdims=True)


def linear_cka(X, Y) -> float:
    """Linear centred kernel alignment of two representations of the same N points.

    X: (N, D1), Y: (N, D2) (NumPy arrays or tensors). With both centred over the points,
    CKA = ||Yᵀ X||_F² / (||Xᵀ X||_F ||Yᵀ Y||_F) (Kornblith et al. 2019), in [0, 1]; it is
    invariant to orthogonal transformations and isotropic scaling of either argument, and
    CKA(X, X) = 1. A constant representation (no variance) has CKA 0 with everything.
    """
    Xc, Yc = _centred(X), _centred(Y)
    if Xc.shape[0] != Yc.shape[0]:
        raise ValueError(f"X and Y must hold the same points: X has {Xc.shape[0]} rows, Y has {Yc.shape[0]}.")
    # Rescale first so the products of large embeddings neither overflow nor lose precision;
    # CKA is invariant to isotropic scaling, so this changes nothing else.
    x_scale, y_scale = np.linalg.norm(Xc), np.linalg.norm(Yc)
    if x_scale == 0 or y_scale == 0:
        return 0.0
    Xc, Yc = Xc / x_scale, Yc / y_scale
    cross = np.linalg.norm(Yc.T @ Xc) ** 2
    return float(cross / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)))


def _class_codes(labels, n_points: int) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(pd.Series(list(labels)), sort=True)
    if codes.size != n_points:
        raise ValueError(f"labels has {codes.size} entries but X has {n_points} rows; pass one label per point.")
    return codes.astype(np.int64), len(uniques)


# --------------------------------------------------------------------------- rules


keep_at_least_one = pruning_depth  # the rule's clamp, from its one home (convexlab.convexity)


def _stack(embeddings) -> np.ndarray:
    """(L + 1, N, D) float array from an array, a tensor or a LayerEmbeddings."""
    if hasattr(embeddings, "embeddings") and not isinstance(embeddings, (np.ndarray, torch.Tensor)):
        embeddings = embeddings.embeddings  # a convexlab.extract.LayerEmbeddings
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().float().numpy()
    stack = np.asarray(embeddings)
    if stack.ndim != 3 or stack.shape[0] < 2:
        raise ValueError(f"embeddings must have shape (L + 1, N, D) with L >= 1 (hidden states 0..L); "
                         f"got shape {stack.shape}.")
    return stack


@dataclass(frozen=True)
class LayerRule:
    """A rule that picks where to cut a model from its pretrained per-layer embeddings."""

    name: str  # short name, used as the rule's row label in tables and figures
    uses_labels: bool  # True if the rule reads the labels (False: unsupervised or trivial)
    choose: Callable[[np.ndarray, Any], Hashable] = field(repr=False)  # (L + 1, N, D), labels -> hidden-state index
    description: str = ""  # one line for tables: what the rule maximises or tests

    def pick(self, embeddings, labels=None) -> int:
        """The depth in 1..L this rule picks. embeddings: (L + 1, N, D); labels: N labels (or None
        for rules with ``uses_labels=False``)."""
        stack = _stack(embeddings)
        if self.uses_labels and labels is None:
            raise ValueError(f"Rule {self.name!r} uses the labels; pass them.")
        return pruning_depth(self.choose(stack, labels), stack.shape[0] - 1)


def _argmax_layer(scores: Sequence[float]) -> int:
    """The hidden-state index with the highest of ``scores`` (L + 1,), by the package's one rule
    (:func:`convexlab.convexity.best_layer`: ties go to the shallower layer)."""
    return int(best_layer(pd.DataFrame({"layer": np.arange(len(scores)), "score": np.asarray(scores, dtype=np.float64)})))


def graph_convexity_rule(*, n_neighbors: int = 10, max_pairs: int | None = 5000, seed: int = 0) -> LayerRule:
    """The paper's rule: the most convex layer under graph convexity (kNN graph with ``n_neighbors``)."""

    def choose(stack, labels):
        table = layerwise_convexity(stack, labels, n_neighbors=n_neighbors, max_pairs=max_pairs, seed=seed,
                                    n_bootstrap=0, progress=False)
        return best_layer(table)

    return LayerRule("graph-convexity", True, choose, f"most graph-convex layer (k = {n_neighbors})")


def euclidean_convexity_rule(*, n_points: int = 10, max_pairs: int | None = 500, seed: int = 0) -> LayerRule:
    """The layer with the highest :func:`euclidean_convexity`."""

    def choose(stack, labels):
        return _argmax_layer([euclidean_convexity(layer, labels, n_points=n_points, max_pairs=max_pairs, seed=seed)
                              for layer in stack])

    return LayerRule("euclidean-convexity", True, choose, "most Euclidean-convex layer")


def probe_scores(X, labels, *, n_folds: int = 3, seed: int = 0, max_iter: int = 1000,
                 threads: int | None = 1) -> np.ndarray:
    """(n_folds,) accuracies of a standardised logistic regression (lbfgs, ``max_iter``) on X: (N, D)
    over ``n_folds`` stratified folds shuffled with ``seed``, fitted with ``threads`` BLAS/OpenMP
    threads (None: the libraries' own count). The library's one linear probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    codes, _ = _class_codes(labels, len(X))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    # One thread by default: lbfgs on a few hundred clips multiplies tiny matrices, where a second
    # OpenBLAS/OpenMP thread costs more in hand-offs than it computes (many times slower on two
    # cores: benchmarks/probe_threads.py). The fits, and so the accuracies, are the same.
    with threadpool_limits(limits=threads):
        return cross_val_score(probe, np.asarray(X, dtype=np.float64), codes, cv=folds)


def probe_accuracy(X, labels, *, n_folds: int = 3, seed: int = 0, max_iter: int = 1000,
                   threads: int | None = 1) -> float:
    """Mean of :func:`probe_scores`: the cross-validated accuracy of a linear probe on X: (N, D)."""
    return float(probe_scores(X, labels, n_folds=n_folds, seed=seed, max_iter=max_iter, threads=threads).mean())


def linear_probe_rule(*, n_folds: int = 3, seed: int = 0) -> LayerRule:
    """The layer whose linear probe (standardised logistic regression) has the best
    ``n_folds``-fold cross-validated accuracy on the analysis clips."""

    def choose(stack, labels):
        return _argmax_layer([probe_accuracy(layer, labels, n_folds=n_folds, seed=seed) for layer in stack])

    return LayerRule("linear-probe", True, choose, f"best {n_folds}-fold linear-probe accuracy")


def consecutive_cka(embeddings) -> np.ndarray:
    """(L,) linear CKA of each pair of consecutive hidden states: entry j is CKA(h_j, h_{j+1})."""
    stack = _stack(embeddings)
    return np.array([linear_cka(stack[j], stack[j + 1]) for j in range(stack.shape[0] - 1)])


def cka_redundancy_rule(*, threshold: float = 0.95) -> LayerRule:
    """The first layer l after which every consecutive pair is redundant: CKA(h_j, h_{j+1}) >=
    ``threshold`` for all j >= l (l = L when the last pair is already below it)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1]; got {threshold}.")

    def choose(stack, labels):
        below = np.flatnonzero(consecutive_cka(stack) < threshold)
        return 0 if below.size == 0 else int(below[-1]) + 1  # the layer after the last non-redundant step

    return LayerRule("cka-redundancy", False, choose, f"first layer after which consecutive CKA >= {threshold}")


keep_all = LayerRule("keep-all", False, lambda stack, labels: stack.shape[0] - 1, "all L layers (no pruning)")
keep_half = LayerRule("keep-half", False, lambda stack, labels: math.ceil((stack.shape[0] - 1) / 2),
                      "ceil(L / 2) layers")

RULES: tuple[LayerRule, ...] = (
    graph_convexity_rule(),
    euclidean_convexity_rule(),
    linear_probe_rule(),
    cka_redundancy_rule(),
    keep_all,
    keep_half,
)


def pick_depths(embeddings, labels, *, rules: Sequence[LayerRule] = RULES) -> pd.DataFrame:
    """The depth each rule picks. embeddings: (L + 1, N, D) (or a LayerEmbeddings); labels: N labels.

    Returns one row per rule: rule, depth (1..L), uses_labels, description.
    """
    stack = _stack(embeddings)
    rows = [{"rule": rule.name, "depth": rule.pick(stack, labels), "uses_labels": rule.uses_labels,
             "description": rule.description} for rule in rules]
    return pd.DataFrame(rows, columns=["rule", "depth", "uses_labels", "description"])


# --------------------------------------------------------------------------- the frontier


@dataclass
class Frontier:
    """Finetuning results of one model cut at each depth, for one task and profile."""

    model_name: str  # the model that was cut (miniature name, hub id or folder)
    task: str  # "word" or "speaker"
    profile_name: str  # the profile whose recipe every run used
    n_layers: int  # L, transformer layers of the full model
    seeds: tuple[int, ...]  # finetuning seeds; each depth ran once per seed
    tolerance: float  # accuracy tolerance of the oracle depth (absolute, 0.01 = one point)
    table: pd.DataFrame  # one row per depth: see pruning_frontier
    runs: pd.DataFrame  # one row per run: depth, seed, accuracy, train_seconds, batch_ids_digest, run_dir
    oracle_depth: int  # smallest depth within tolerance of the full model's accuracy
    inference_timed: bool  # True if table's inference_ms was measured (else NaN; FLOPs are always counted)

    @property
    def full_accuracy(self) -> float:
        """Mean accuracy of the full model (depth L)."""
        return float(self.table.loc[self.table["depth"] == self.n_layers, "accuracy"].iloc[0])


def _finetune_depth(model_name, task, profile, *, depth: int | None, seed: int, overrides) -> FinetuneResult:
    """One run; ``depth=None`` is the full model: the same cached run as the pipeline's unpruned one."""
    return finetune_for_profile(model_name, task, profile, num_layers=depth, **(overrides | {"seed": seed}))


def _run_row(result: FinetuneResult, *, depth: int, seed: int) -> dict:
    return {"depth": depth, "seed": seed, "accuracy": result.accuracy, "train_seconds": result.train_seconds,
            "n_parameters": result.n_parameters, "batch_ids_digest": result.batch_ids_digest,
            "run_dir": str(result.run_dir)}


def _costs_by_depth(full: FinetuneResult, depths: Sequence[int], profile, *, time_inference: bool) -> dict:
    """depth -> (flops_per_clip, inference_ms or NaN), measured on the full run's finetuned encoder
    (the cost of a forward pass does not depend on the weights)."""
    encoder = load_model(str(full.model_dir), device=profile.device)
    if time_inference:
        timings = compare_depths(encoder, depths, batch_size=profile.timing_batch_size,
                                 n_repeats=profile.timing_repeats, device=profile.device, dtype=profile.dtype,
                                 seed=profile.seed)
        return {d: (t.flops_per_clip, 1000 * t.seconds_per_batch) for d, t in timings.items()}
    n_layers = num_transformer_layers(encoder)
    costs = {}
    for depth in sorted(depths, reverse=True):  # prune in place, deepest first: no copies
        if depth < n_layers:
            prune(encoder, depth)
        costs[depth] = (flops_per_clip(encoder, device=profile.device), math.nan)
    return costs


def pruning_frontier(
    model_name: str,
    task: str,
    profile,
    *,
    depths: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    tolerance: float = 0.01,
    time_inference: bool = False,
    **overrides: Any,
) -> Frontier:
    """Finetune ``model_name`` cut at each depth for ``task`` with ``profile``'s recipe.

    ``depths``: depths to run (default 1..L; the full model, depth L, is always added: it runs first,
    unpruned, and gives L).
    ``seeds``: finetuning seeds (default: the profile's seed); every depth runs once per seed.
    ``tolerance``: absolute accuracy tolerance of the oracle depth. ``time_inference``: also time
    a forward pass at each depth (:func:`convexlab.timing.compare_depths`, on the profile's timing
    batch); FLOPs per clip are always counted (one forward pass per depth). ``overrides`` go to
    :func:`convexlab.finetune.finetune_for_profile` (e.g. ``pretrained=False``, ``progress=False``)
    and so into every run's cache key.

    Every run is cached per depth and seed by ``finetune_for_profile``; a second call trains
    nothing. All depths of one seed must have trained on the same batches in the same order
    (their ``batch_ids_digest`` agree), else ``RuntimeError``.

    ``Frontier.table`` columns, one row per depth: depth, accuracy (mean over seeds),
    accuracy_std (sample std over seeds; NaN with one seed), n_seeds, train_seconds (mean),
    n_parameters, flops_per_clip, inference_ms (median per batch; NaN unless timed).
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    seeds = tuple(int(s) for s in (seeds if seeds is not None else (profile.seed,)))
    if not seeds:
        raise ValueError("seeds must hold at least one seed.")
    asked = None if depths is None else sorted({int(d) for d in depths})
    if asked is not None and any(d < 1 for d in asked):
        raise ValueError(f"depths {[d for d in asked if d < 1]} lie outside 1..L: at least one layer is kept.")
    # the full model's depth L is known once its run exists: no extra model load
    full_run = _finetune_depth(model_name, task, profile, depth=None, seed=seeds[0], overrides=overrides)
    n_layers = full_run.num_layers
    bad = [d for d in asked or () if d > n_layers]
    if bad:
        raise ValueError(f"depths {bad} lie outside 1..{n_layers}, the layers {model_name} has.")
    depths = sorted(set(asked if asked is not None else range(1, n_layers + 1)) | {n_layers})
    # the other runs train side by side (convexlab.parallel), the deepest, slowest ones first
    finetune_runs([FinetuneJob(model_name, task, None if d == n_layers else d, overrides | {"seed": seed})
                   for d in reversed(depths) for seed in seeds], profile, progress=overrides.get("progress"))
    rows = []
    for seed in seeds:
        full = _finetune_depth(model_name, task, profile, depth=None, seed=seed, overrides=overrides)
        rows += [_run_row(_finetune_depth(model_name, task, profile, depth=d, seed=seed, overrides=overrides),
                          depth=d, seed=seed) for d in depths if d < n_layers]
        rows.append(_run_row(full, depth=n_layers, seed=seed))
    runs = pd.DataFrame(rows)
    _check_same_batches(runs)
    table = _depth_table(runs, _costs_by_depth(full_run, depths, profile, time_inference=time_inference))
    return Frontier(model_name=str(model_name), task=task, profile_name=profile.name, n_layers=n_layers,
                    seeds=seeds, tolerance=float(tolerance), table=table, runs=runs,
                    oracle_depth=oracle_depth(table, tolerance=tolerance), inference_timed=time_inference)


def _check_same_batches(runs: pd.DataFrame) -> None:
    for seed, rows in runs.groupby("seed"):
        if rows["batch_ids_digest"].nunique() != 1:
            raise RuntimeError(f"Seed {seed}: the depths trained on different batches "
                               f"({dict(zip(rows['depth'], rows['batch_ids_digest']))}); they cannot be compared.")


def _depth_table(runs: pd.DataFrame, costs: dict) -> pd.DataFrame:
    table = runs.groupby("depth", sort=True).agg(
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), n_seeds=("seed", "nunique"),
        train_seconds=("train_seconds", "mean"), n_parameters=("n_parameters", "first"),
    ).reset_index()
    table["flops_per_clip"] = table["depth"].map(lambda d: costs[d][0])
    table["inference_ms"] = table["depth"].map(lambda d: costs[d][1])
    return table


def oracle_depth(table: pd.DataFrame, *, tolerance: float = 0.01) -> int:
    """The smallest depth whose accuracy is at least the full model's minus ``tolerance``.

    ``table``: columns depth and accuracy, the full model being its deepest row.
    """
    if table.empty or not {"depth", "accuracy"} <= set(table.columns):
        raise ValueError(f"Expected a non-empty table with columns depth and accuracy; got {list(table.columns)}.")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance}.")
    ordered = table.sort_values("depth")
    full = float(ordered["accuracy"].iloc[-1])
    # A tiny slack so that "within one point" is not lost to floating-point rounding of the accuracies.
    good = ordered[ordered["accuracy"] >= full - tolerance - 1e-12]
    return int(good["depth"].iloc[0])


def rule_report(frontier: Frontier, picks: pd.DataFrame) -> pd.DataFrame:
    """Each rule's pick measured on the frontier.

    ``picks``: :func:`pick_depths`'s table (rule, depth). One row per rule: rule, depth, accuracy,
    accuracy_std, train_seconds, n_parameters, flops_per_clip, inference_ms (at that depth; NaN when
    the frontier did not run it), oracle_depth, depth_from_oracle (depth − oracle: > 0 keeps more
    layers than needed, < 0 cuts below the tolerance), gap_to_frontier (best accuracy at any depth
    <= the pick, minus the pick's: 0 when the pick is on the frontier), gap_to_full (full model's
    accuracy minus the pick's), flops_saved (1 − FLOPs at the pick / FLOPs of the full model).
    """
    table = frontier.table.set_index("depth")
    full = table.loc[frontier.n_layers]
    rows = []
    for pick in picks.itertuples():
        depth = int(pick.depth)
        at = table.loc[depth] if depth in table.index else None
        accuracy = float(at["accuracy"]) if at is not None else math.nan
        best_below = float(table.loc[table.index <= depth, "accuracy"].max()) if at is not None else math.nan
        rows.append({
            "rule": pick.rule, "depth": depth, "accuracy": accuracy,
            **{column: (at[column] if at is not None else math.nan)
               for column in ("accuracy_std", "train_seconds", "n_parameters", "flops_per_clip", "inference_ms")},
            "oracle_depth": frontier.oracle_depth, "depth_from_oracle": depth - frontier.oracle_depth,
            "gap_to_frontier": best_below - accuracy, "gap_to_full": float(full["accuracy"]) - accuracy,
            "flops_saved": 1 - (at["flops_per_clip"] / full["flops_per_clip"]) if at is not None else math.nan,
        })
    return pd.DataFrame(rows)
