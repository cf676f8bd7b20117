"""The book's glue: each chapter's results as one call, cached so that any chapter runs alone.

This module runs the experiments (extraction, convexity tables, finetuning, pruning, timing, the
cut study). What only reshapes their tables lives in :mod:`convexlab.tables`, and the paper's
reported numbers in :mod:`convexlab.reported`; both are re-exported here, so that a chapter
reaches everything it needs as ``pipeline.<name>``.

Every function here takes a :class:`convexlab.Profile` and returns a tidy ``pandas.DataFrame``
(one row per model, task, concept, stage and layer) ready for :mod:`convexlab.plots`. Results
are stored in the convexlab cache under a key that chains the keys of their inputs (the clips'
content digest, the measured weights' key: :func:`convexlab.models.model_key` or a finetuning run's
key) with the profile fields each table reads (:data:`CONVEXITY_FIELDS`), so chapter 5
reuses chapter 4's convexity curves, chapter 6 reuses chapter 5's finetuned models, and a chapter
run on its own computes what is missing.

Which clips are measured: graph convexity of a concept ("word" or "speaker") is measured on the
*held-out* clips of that concept's own task (word convexity on the word task's validation and
test splits, speaker convexity on the speaker task's test split), optionally subsampled to
``profile.n_per_class`` clips per class. Finetuning never trains on them, so the convexity of a
finetuned model is not measured on clips it was trained on, and "before" and "after" are
measured on the same clips.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import pandas as pd

# frontier and models as modules: their functions are looked up at call time (tests replace them)
from convexlab import distributed, frontier as F, models
from convexlab.cache import cache_path, load_json, profile_params, save_json, stage_key
from convexlab.compare import compare_pruned
from convexlab.convexity import best_layer, layerwise_convexity, pruning_depth
from convexlab.data import load_task
from convexlab.extract import EXTRACT_VERSION, layer_embeddings
from convexlab.families import TASKS
from convexlab.finetune import finetune_for_profile, finetune_run_key, finetuned_layer_embeddings
from convexlab.models import family_or_name, load_model
from convexlab.parallel import FinetuneJob, finetune_runs
from convexlab.profiles import Profile, get_profile
from convexlab.recipes import recipe_spec
from convexlab.reported import paper_best_layers, paper_table
from convexlab.tables import (
    best_layers, comparison_row, convexity_change, cut_rule_summary, depth_cost_split, example_clips,
    layer_structure_table, projection_layers, pruning_vs_paper,
)
from convexlab.timing import compare_depths

__all__ = [
    "CONCEPTS",
    "STAGES",
    "CONVEXITY_FIELDS",
    "as_profile",
    "corpus_description",
    "world_description",
    "analysis_dataset",
    "concept_labels",
    "model_embeddings",
    "finetuned_model",
    "finetuned_models",
    "convexity_by_layer",
    "all_models_convexity",
    "best_layers",
    "layer_structure_table",
    "choose_layer",
    "before_after_convexity",
    "pruning_results",
    "comparison_row",
    "inference_by_depth",
    "depth_cost_split",
    "paper_table",
    "dataset_overview",
    "projection_layers",
    "example_clips",
    "convexity_change",
    "paper_best_layers",
    "pruning_vs_paper",
    "CutStudy",
    "cut_rules",
    "cut_picks",
    "cut_study",
    "cut_rule_summary",
]

CONCEPTS = TASKS  # the two concepts of the paper; each is also a task
STAGES = ("pretrained", "finetuned")  # which weights a convexity curve was measured on
HELD_OUT = "held-out"  # every clip outside the train split: what convexity is measured on
_CACHE_VERSION = 1  # bump when the content of a cached table changes meaning
_CONVEXITY_COLUMNS = ["model", "family", "task", "concept", "stage", "layer", "score", "class_mean",
                      "ci_low", "ci_high", "p_best", "n_clips", "n_classes"]


def as_profile(profile: Profile | str) -> Profile:
    """A :class:`Profile` from a profile or a preset name ("lite", "paper", "large")."""
    return profile if isinstance(profile, Profile) else get_profile(profile)


_CORPUS_NAMES = {
    "synthetic": "a synthetic corpus of word-like sounds",
    "spoken": "spoken words by espeak-ng",
    "speech_commands": "Speech Commands v0.02",
}


def corpus_description(profile: Profile | str) -> str:
    """The profile's corpus in words; a generated one with its words x speakers x repetitions (spoken: and rate)."""
    profile = as_profile(profile)
    corpus = _CORPUS_NAMES.get(profile.corpus, profile.corpus)
    if profile.corpus in ("synthetic", "spoken"):
        corpus += f" ({profile.n_words} words x {profile.n_speakers} speakers x {profile.n_repetitions} repetitions"
        if profile.corpus == "spoken":
            corpus += ", {}-{} words per minute".format(*profile.speaking_rate)
        corpus += ")"
    return corpus


def world_description(profile: Profile | str) -> str:
    """One sentence on what a profile runs on: its corpus and, for miniatures, their size and recipe.

    The corpus as :func:`corpus_description`; miniatures their layers and width
    (:func:`convexlab.models.recipe_miniature_config` of ``profile.pretrain_recipe``) and the
    recipe's description, so a chapter's prose about "the miniatures" never goes out of date.
    """
    profile = as_profile(profile)
    corpus = corpus_description(profile)
    if not profile.miniature:
        return f"{corpus}; checkpoints {', '.join(profile.models)}"
    config = models.recipe_miniature_config("hubert", profile.pretrain_recipe)  # a recipe sizes every family alike
    recipe = recipe_spec(profile.pretrain_recipe)
    return (f"{corpus}; miniature models of {config.num_hidden_layers} layers x width {config.hidden_size}, "
            f"pretrained with recipe {recipe.name!r} ({recipe.description})")


def _check_concept(concept: str) -> str:
    if concept not in CONCEPTS:
        raise ValueError(f"Unknown concept {concept!r}; use one of {list(CONCEPTS)}")
    return concept


def _check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}; use one of {list(STAGES)}")
    return stage


# --------------------------------------------------------------------------- data


def analysis_dataset(task: str, profile: Profile | str, *, split: str = HELD_OUT):
    """The clips convexity is measured on, at most ``profile.n_per_class`` per class.

    ``split="held-out"`` (default): every clip of ``task`` that finetuning does not train on
    (the word task's validation and test splits, the speaker task's test split); or one split
    name. Returns a :class:`convexlab.data.AudioDataset` (N clips).
    """
    profile = as_profile(profile)
    dataset = load_task(_check_concept(task), profile)
    if split == HELD_OUT:
        dataset = dataset.select([i for i, s in enumerate(dataset.splits) if s != "train"], split=HELD_OUT)
    else:
        dataset = dataset.subset(split)
    if profile.n_per_class is not None:
        dataset = dataset.subsample(profile.n_per_class, seed=profile.seed)
    if dataset.task == "speaker":
        # the authors' plain random split can leave a speaker one held-out clip (or none):
        # graph convexity needs pairs, so such speakers are left out of the analysis
        counts = dataset.class_counts()
        if any(n < 2 for n in counts.values()):
            dropped = sorted(label for label, n in counts.items() if n < 2)
            dataset = dataset.select([i for i, label in enumerate(dataset.labels) if counts[label] >= 2],
                                     single_clip_speakers_dropped=len(dropped))
    return dataset.require_pairs()


def concept_labels(dataset: Any, concept: str) -> np.ndarray:
    """The label of every clip for ``concept``: its word or its speaker, shape (N,)."""
    field = {"word": "words", "speaker": "speakers"}[_check_concept(concept)]
    return np.asarray(getattr(dataset, field))


def dataset_overview(profile: Profile | str) -> pd.DataFrame:
    """Clips and classes per task and split: columns task, split, clips, classes, clips_per_class."""
    profile = as_profile(profile)
    rows = []
    for task in CONCEPTS:
        dataset = load_task(task, profile)
        splits = np.asarray(dataset.splits)
        labels = np.asarray(dataset.labels)
        for split in ("train", "validation", "test"):
            mask = splits == split
            if not mask.any():
                continue
            counts = pd.Series(labels[mask]).value_counts()
            rows.append({"task": task, "split": split, "clips": int(mask.sum()), "classes": int(counts.size),
                         "min_per_class": int(counts.min()), "max_per_class": int(counts.max())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- models and embeddings


def finetuned_model(model_name: str, task: str, profile: Profile | str, *, num_layers: int | None = None):
    """The run of ``model_name`` (optionally pruned to ``num_layers``) finetuned on ``task``.

    A :class:`convexlab.finetune.FinetuneResult` (accuracy, training time, ``model_dir``). The
    run is cached by :mod:`convexlab.finetune`, so chapters 5 and 6 share it.
    """
    return finetune_for_profile(model_name, _check_concept(task), as_profile(profile), num_layers=num_layers)


def finetuned_models(profile: Profile | str, *, models: Sequence[str] | None = None,
                     tasks: Sequence[str] = CONCEPTS) -> list:
    """:func:`finetuned_model` of every model (default: the profile's) on every task, model by
    model; the runs not cached yet train side by side (:func:`convexlab.parallel.finetune_runs`)."""
    profile = as_profile(profile)
    models = list(models) if models is not None else list(profile.models)
    return finetune_runs([FinetuneJob(model, _check_concept(task)) for model in models for task in tasks], profile)


def model_embeddings(model_name: str, dataset: Any, profile: Profile | str, *, stage: str = "pretrained",
                     task: str | None = None):
    """Layer-wise mean-pooled embeddings, a :class:`convexlab.extract.LayerEmbeddings`.

    ``embeddings`` has shape (L + 1, N, D). ``stage="finetuned"`` uses the encoder of the model
    finetuned on ``task`` (which must then be given).
    """
    profile = as_profile(profile)
    if _check_stage(stage) == "pretrained":
        return layer_embeddings(model_name, dataset, profile=profile, device=profile.device,
                                dtype=profile.dtype, batch_size=profile.batch_size)
    if task is None:
        raise ValueError("model_embeddings(stage='finetuned') needs task='word' or 'speaker': the task it was finetuned on")
    run = finetuned_model(model_name, task, profile)
    return finetuned_layer_embeddings(run, dataset, batch_size=profile.batch_size, device=profile.device,
                                      dtype=profile.dtype)


# --------------------------------------------------------------------------- convexity tables


# What a convexity table reads of the profile besides its inputs: the clips per class of the
# analysis set, the graph and bootstrap settings, the seed and the pretraining recipe (which also
# choose the weights), and the dtype the embeddings are
# extracted in. (device and batch_size only say where and in what chunks the same numbers are
# computed, and the extraction's own key leaves them out too.)
CONVEXITY_FIELDS = ("n_per_class", "n_neighbors", "max_pairs", "n_bootstrap", "seed", "dtype", "pretrain_recipe")


def _convexity_key(*, model: str, dataset: str, task: str, concept: str, stage: str, profile: Profile) -> str:
    """A table's key: the key of the weights measured (a model's, or a finetuning run's), the digest
    of the clips measured, and the table's own parameters (:data:`CONVEXITY_FIELDS`)."""
    return stage_key("convexity-table", _CACHE_VERSION, inputs={"model": model, "dataset": dataset},
                     params={"task": task, "concept": concept, "stage": stage, "extract_version": EXTRACT_VERSION,
                             **profile_params(profile, CONVEXITY_FIELDS)})


def _weights_key(model_name: str, task: str, stage: str, profile: Profile) -> str:
    """The key of the weights a table measures: the model's own, or its finetuning run's for ``task``."""
    if stage == "finetuned":
        return finetune_run_key(model_name, task, profile)
    return models.model_key(model_name, seed=profile.seed, recipe=profile.pretrain_recipe)


def convexity_by_layer(
    model_name: str,
    task: str,
    profile: Profile | str,
    *,
    concept: str | None = None,
    stage: str = "pretrained",
    progress: bool | None = None,
) -> pd.DataFrame:
    """Graph convexity of ``concept`` at every layer of ``model_name``, with bootstrap intervals.

    ``task`` is the task whose weights are measured when ``stage="finetuned"`` (the model
    finetuned for it); ``concept`` (default: the task) is what is measured, on the held-out
    clips of the concept's own task (:func:`analysis_dataset`). Returns a tidy DataFrame, one row per layer 0..L, with columns
    model, family, task, concept, stage, layer, score (pooled mean path score), class_mean,
    ci_low, ci_high (bootstrap interval), p_best (bootstrap probability that the layer is the
    most convex), n_clips, n_classes. Cached.
    """
    profile = as_profile(profile)
    concept = _check_concept(concept or task)
    _check_concept(task)
    _check_stage(stage)
    dataset = analysis_dataset(concept, profile)
    key = _convexity_key(model=_weights_key(model_name, task, stage, profile), dataset=dataset.content_hash(),
                         task=task, concept=concept, stage=stage, profile=profile)
    path = cache_path("pipeline", "convexity", key + ".json")
    if distributed.broadcast_object(path.is_file() if distributed.is_main() else None):  # one decision for all
        return pd.DataFrame(load_json(path))[_CONVEXITY_COLUMNS]

    embeddings = model_embeddings(model_name, dataset, profile, stage=stage, task=task)  # sharded under a launcher
    if not distributed.is_main():  # the graph analysis runs once, on rank 0; the others read its table
        distributed.barrier()
        return pd.DataFrame(load_json(path))[_CONVEXITY_COLUMNS]
    labels = concept_labels(dataset, concept)
    layers = layerwise_convexity(
        embeddings.embeddings, labels, n_neighbors=profile.n_neighbors, max_pairs=profile.max_pairs,
        seed=profile.seed, n_bootstrap=profile.n_bootstrap, progress=progress,
    )
    table = layers.assign(
        model=model_name, family=family_or_name(model_name), task=task, concept=concept, stage=stage,
        n_clips=len(labels), n_classes=len(set(labels.tolist())),
    )[_CONVEXITY_COLUMNS]
    table["layer"] = table["layer"].astype(int)
    save_json(path, table.to_dict(orient="records"))
    distributed.barrier()
    return table


def all_models_convexity(
    profile: Profile | str, *, concepts: Sequence[str] = CONCEPTS, progress: bool | None = None
) -> pd.DataFrame:
    """:func:`convexity_by_layer` of every model of the profile, pretrained, for each concept."""
    profile = as_profile(profile)
    tables = [convexity_by_layer(model, concept, profile, progress=progress)
              for model in profile.models for concept in concepts]
    return pd.concat(tables, ignore_index=True)


def choose_layer(model_name: str, task: str, profile: Profile | str) -> int:
    """The pruning layer of the paper's rule: the most convex layer of the *pretrained* model
    for the task's own concept (at least 1, so that at least one transformer layer is kept)."""
    table = convexity_by_layer(model_name, task, profile, stage="pretrained")
    return pruning_depth(best_layer(table), int(table["layer"].max()))


def before_after_convexity(
    model_name: str, task: str, profile: Profile | str, *, concepts: Sequence[str] = CONCEPTS
) -> pd.DataFrame:
    """Convexity per layer of the pretrained model and of the model finetuned for ``task``.

    Tidy rows for each concept in ``concepts`` and stage in ("pretrained", "finetuned"): the
    task's own concept and the other one.
    """
    tables = [convexity_by_layer(model_name, task, profile, concept=concept, stage=stage)
              for concept in concepts for stage in STAGES]
    # The pretrained curves do not depend on the task; label them with it for side-by-side plots.
    return pd.concat(tables, ignore_index=True).assign(task=task)


# --------------------------------------------------------------------------- pruning


def pruning_results(profile: Profile | str, *, tasks: Sequence[str] = CONCEPTS) -> pd.DataFrame:
    """Prune each model of the profile at its most convex layer, finetune, compare with the full model.

    One row per model and task: model, family, task, layer (kept), n_layers (of the full
    model), accuracy_full, accuracy_pruned, accuracy_change (pruned − full, absolute),
    train_time_change and inference_time_change (relative: −0.25 = 25 % faster),
    parameters_change and flops_change (relative). Changes are fractions, not percent.
    """
    profile = as_profile(profile)
    layers = {(model, task): choose_layer(model, task, profile) for model in profile.models for task in tasks}
    # every full and pruned run first, side by side; then the comparisons, timed one at a time
    finetune_runs([FinetuneJob(model, task, depth) for (model, task), layer in layers.items()
                   for depth in (None, layer)], profile)
    rows = []
    for (model, task), layer in layers.items():
        comparison = compare_pruned(model, task, layer, profile=profile)
        rows.append({"model": model, "family": family_or_name(model), "task": task, **comparison_row(comparison)})
    return pd.DataFrame(rows)


def inference_by_depth(
    model_name: str, profile: Profile | str, *, depths: Sequence[int] | None = None,
    batch_size: int | None = None, n_repeats: int | None = None, rounds: int = 2,
) -> pd.DataFrame:
    """Inference time of ``model_name`` pruned to each depth in ``depths`` (default: 1..L).

    All depths are timed on the same batch in interleaved rounds (:func:`convexlab.timing.compare_inference`),
    so a change in the machine's speed during the measurement hits every depth alike. Batch size
    and repeats default to the profile's ``timing_batch_size`` and ``timing_repeats``.

    Columns: model, family, num_layers, time_ms (median per batch), time_low, time_high
    (interquartile range around the median), gflops_per_clip, batch_size, dtype, device. Not cached: timings
    belong to the machine they were measured on.
    """
    profile = as_profile(profile)
    batch_size = batch_size or profile.timing_batch_size
    full = load_model(model_name, device=profile.device, seed=profile.seed, recipe=profile.pretrain_recipe)
    timings = compare_depths(full, depths, batch_size=batch_size, n_repeats=n_repeats or profile.timing_repeats,
                             rounds=rounds, device=profile.device, dtype=profile.dtype, seed=profile.seed)
    rows = []
    for depth, timing in timings.items():
        median, iqr = 1000 * timing.seconds_per_batch, 1000 * timing.seconds_per_batch_iqr
        rows.append({"model": model_name, "family": family_or_name(model_name), "num_layers": depth, "time_ms": median,
                     "time_low": median - iqr / 2, "time_high": median + iqr / 2,
                     "gflops_per_clip": timing.flops_per_clip / 1e9, "batch_size": batch_size,
                     "dtype": profile.dtype, "device": profile.device})
    return pd.DataFrame(rows).sort_values("num_layers", ignore_index=True)


# --------------------------------------------------------------------------- where to cut?

_CUT_COLUMNS = ["model", "family", "task", "rule", "uses_labels", "depth", "n_layers", "oracle_depth",
                "depth_from_oracle", "accuracy", "accuracy_std", "full_accuracy", "gap_to_full", "gap_to_frontier",
                "within_tolerance", "train_seconds", "train_time_saved", "n_parameters", "flops_per_clip",
                "flops_saved"]


@dataclasses.dataclass
class CutStudy:
    """What :func:`cut_study` measured: the rules' picks on every model/task frontier."""

    table: pd.DataFrame  # one row per model, task and rule: see cut_study
    frontiers: dict  # (model, task) -> convexlab.frontier.Frontier, for plots.plot_frontier
    picks: dict  # (model, task) -> pick_depths table (rule, depth, uses_labels, description)
    tolerance: float  # the oracle's accuracy tolerance (absolute)

    def frontier_table(self) -> pd.DataFrame:
        """Every frontier's per-depth table in one: model, family, task, n_layers, depth, accuracy,
        accuracy_std, train_seconds, n_parameters, flops_per_clip, oracle (True at the oracle depth)."""
        tables = [frontier.table.assign(model=model, family=family_or_name(model), task=task, n_layers=frontier.n_layers,
                                        oracle=frontier.table["depth"] == frontier.oracle_depth)
                  for (model, task), frontier in self.frontiers.items()]
        columns = ["model", "family", "task", "n_layers", "depth", "accuracy", "accuracy_std", "train_seconds",
                   "n_parameters", "flops_per_clip", "oracle"]
        return pd.concat(tables, ignore_index=True)[columns]


def cut_rules(profile: Profile | str):
    """The layer-selection rules of :data:`convexlab.frontier.RULES`, with the graph-convexity rule
    measured exactly as :func:`choose_layer` measures it (the profile's k, pairs budget and seed),
    so that its pick is the pruning chapter's layer."""
    profile = as_profile(profile)
    graph = F.graph_convexity_rule(n_neighbors=profile.n_neighbors, max_pairs=profile.max_pairs, seed=profile.seed)
    return tuple(graph if rule.name == graph.name else rule for rule in F.RULES)


def _picks_key(model_name: str, task: str, dataset: Any, profile: Profile, rules) -> str:
    """The picks' key: the pretrained weights' key, the clips' digest and the rules' settings."""
    return stage_key("cut-picks", _CACHE_VERSION,
                     inputs={"model": _weights_key(model_name, task, "pretrained", profile),
                             "dataset": dataset.content_hash()},
                     params={"task": task, "rules": [(rule.name, rule.description) for rule in rules],
                             "extract_version": EXTRACT_VERSION, **profile_params(profile, CONVEXITY_FIELDS)})


def cut_picks(model_name: str, task: str, profile: Profile | str) -> pd.DataFrame:
    """The depth each of :func:`cut_rules` picks from the *pretrained* ``model_name``'s embeddings of
    the task's analysis clips (:func:`analysis_dataset`), labelled by the task's concept.

    Columns: rule, depth (1..L), uses_labels, description. Cached, keyed by the model, the task,
    the clips' content and the rules' settings.
    """
    profile = as_profile(profile)
    dataset = analysis_dataset(_check_concept(task), profile)
    rules = cut_rules(profile)
    path = cache_path("pipeline", "cut-picks", _picks_key(model_name, task, dataset, profile, rules) + ".json")
    if path.is_file():
        return pd.DataFrame(load_json(path))
    embeddings = model_embeddings(model_name, dataset, profile)
    picks = F.pick_depths(embeddings.embeddings, concept_labels(dataset, task), rules=rules)
    save_json(path, picks.to_dict(orient="records"))
    return picks


def cut_study(
    profile: Profile | str,
    *,
    models: Sequence[str] | None = None,
    tasks: Sequence[str] = CONCEPTS,
    seeds: Sequence[int] | None = None,
    tolerance: float = 0.01,
) -> CutStudy:
    """Where to cut? Each rule's pick against the pruning frontier, for every model and task.

    For each of ``models`` (default: the profile's) and ``tasks``: the rules' picks from the
    pretrained model (:func:`cut_picks`), the frontier (:func:`convexlab.frontier.pruning_frontier`:
    the model cut at every depth 1..L, finetuned with the profile's recipe, once per seed in
    ``seeds``, default the profile's seed) and :func:`convexlab.frontier.rule_report`.

    Caching: the picks are cached by :func:`cut_picks`; the frontier is not cached as a table but
    every finetuning run in it is, per model, task, depth and seed (:mod:`convexlab.finetune`),
    so a second call trains nothing (it only recounts each depth's FLOPs). The full model's run
    and the run at the most convex layer are the pruning chapter's own.

    ``CutStudy.table``: one row per model, task and rule: model, family, task, rule, uses_labels,
    depth (kept layers), n_layers, oracle_depth (smallest depth within ``tolerance`` of the full
    model's accuracy), depth_from_oracle (> 0: more layers than needed), accuracy, accuracy_std,
    full_accuracy, gap_to_full (full minus pick, absolute), gap_to_frontier (best accuracy at any
    depth <= the pick, minus the pick's), within_tolerance (gap_to_full <= tolerance),
    train_seconds, train_time_saved (1 − training time / the full model's), n_parameters,
    flops_per_clip, flops_saved (1 − FLOPs / the full model's).
    """
    profile = as_profile(profile)
    models = list(models) if models is not None else list(profile.models)
    rows, frontiers, all_picks = [], {}, {}
    for model in models:
        for task in tasks:
            picks = cut_picks(model, _check_concept(task), profile)
            frontier = F.pruning_frontier(model, task, profile, seeds=seeds, tolerance=tolerance)
            report = F.rule_report(frontier, picks)
            full = frontier.table.set_index("depth").loc[frontier.n_layers]
            report = report.assign(
                model=model, family=family_or_name(model), task=task, n_layers=frontier.n_layers,
                uses_labels=report["rule"].map(dict(zip(picks["rule"], picks["uses_labels"]))),
                full_accuracy=frontier.full_accuracy,
                within_tolerance=report["gap_to_full"] <= tolerance + 1e-12,
                train_time_saved=1 - report["train_seconds"] / float(full["train_seconds"]),
            )
            rows.append(report[_CUT_COLUMNS])
            frontiers[(model, task)] = frontier
            all_picks[(model, task)] = picks
    table = pd.concat(rows, ignore_index=True)
    table["depth"] = table["depth"].astype(int)
    return CutStudy(table=table, frontiers=frontiers, picks=all_picks, tolerance=float(tolerance))
