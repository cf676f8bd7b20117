"""Command-line stages: ``python -m convexlab <stage> ...`` (``--help`` lists them).

Every stage's parser and handler (``handler(args) -> exit status``) lives here, in one module at
the top of the package's layers, so that no lower module imports a higher one for its command:
``prune-compare --layer auto`` needs :func:`convexlab.pipeline.choose_layer`, which builds on
:mod:`convexlab.compare`. ``__main__`` only calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from convexlab import distributed
from convexlab._argtypes import UsageError, nonnegative_int, positive_int
from convexlab.cache import save_json
from convexlab.compare import compare_pruned
from convexlab.data import load_task
from convexlab.extract import layer_embeddings
from convexlab.families import TASKS
from convexlab.models import DTYPES
from convexlab.pipeline import choose_layer
from convexlab.pretrain import (
    COMMITTED_WEIGHTS,
    FAMILY_OBJECTIVES,
    ensure_pretrained,
    export_pretrained,
    loss_trend,
    recipe_configs,
    training_log,
)
from convexlab.recipes import RECIPES
from convexlab.profiles import get_profile

__all__ = ["build_parser", "main", "add_extract_cli", "add_prune_compare_cli", "add_pretrain_cli"]

# the stages, in the order ``--help`` lists them
STAGES = ("add_extract_cli", "add_prune_compare_cli", "add_pretrain_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m convexlab", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        globals()[stage](subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UsageError as err:  # a bad value found by the handler: argparse's one line and exit 2
        parser.error(" ".join(str(err).split()))


# --------------------------------------------------------------------------- extract


def add_extract_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``python -m convexlab extract``."""
    parser = subparsers.add_parser(
        "extract",
        help="extract and cache the mean-pooled hidden states of every layer",
        description="Extract the mean-pooled hidden states of every layer for a task's clips and cache them.",
    )
    parser.add_argument("--model", action="append", required=True,
                        help="miniature name, hub id or local folder; repeat it, or 'all' for the profile's models")
    parser.add_argument("--task", choices=TASKS, default="word")
    parser.add_argument("--profile", default="lite", help="profile preset (lite, lite-synthetic, paper, large)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one profile field, e.g. --set n_speakers=8 (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the profile's)")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES))
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--n-per-class", type=nonnegative_int, default=None,
                        help="clips per class (default: the profile's n_per_class; 0 for all)")
    parser.add_argument("--split", default=None, help="only this split (train, validation, test)")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the pretrained ones")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_run_extract_cli)


def _parse_overrides(items: list[str]) -> dict:
    """``["n_words=3", "device=cpu"]`` -> ``{"n_words": 3, "device": "cpu"}`` (JSON values, else strings)."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return overrides


def _run_extract_cli(args: argparse.Namespace) -> int:
    try:
        profile = get_profile(args.profile, **_parse_overrides(args.set))
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    with distributed.main_process_first(args.device or profile.device):  # a synthetic corpus is made once
        dataset = load_task(args.task, profile)
    if args.split:
        dataset = dataset.subset(args.split)
    n_per_class = profile.n_per_class if args.n_per_class is None else (args.n_per_class or None)
    if n_per_class:
        dataset = dataset.subsample(n_per_class, seed=profile.seed)
    models = [m for name in args.model for m in (profile.models if name == "all" else [name])]
    for model_name in models:
        result = layer_embeddings(model_name, dataset, profile=profile, device=args.device, dtype=args.dtype,
                                  batch_size=args.batch_size, pretrained=not args.untrained,
                                  progress=False if args.no_progress else None)
        status = "cached" if result.meta.get("cache_hit") else "extracted"
        if not distributed.is_main():
            continue
        print(f"{model_name}: {status} {args.task} embeddings {tuple(result.embeddings.shape)} "
              f"(layers+1, clips, width) -> {result.meta['cache_file']}")
    return 0


# --------------------------------------------------------------------------- prune-compare


def add_prune_compare_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``python -m convexlab prune-compare``."""
    parser = subparsers.add_parser(
        "prune-compare",
        help="finetune a model full and pruned at a layer; print accuracy and cost changes",
        description=(
            "Finetune MODEL for TASK in full and pruned at LAYER with the profile's data and hyper-parameters, "
            "time both, and print the paper's table. Runs are cached; a second call is instant."
        ),
    )
    parser.add_argument("--model", required=True, help="miniature name, hub id or local model folder")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--layer", required=True,
                        help="transformer layers to keep (1..L), or 'auto' for the most convex layer of the task's concept")
    parser.add_argument("--profile", default="lite", help="profile preset: lite, lite-synthetic, paper or large (default: lite)")
    parser.add_argument("--device", default=None, help="override the profile's device (cpu, cuda)")
    parser.add_argument("--timing-batch-size", type=positive_int, default=None, help="clips per timed forward pass")
    parser.add_argument("--timing-repeats", type=positive_int, default=None, help="timed forward passes per model")
    parser.add_argument("--json", default=None, help="also write the whole comparison as JSON to this file")
    parser.set_defaults(handler=_prune_compare_command)
    return parser


def _prune_compare_command(args: argparse.Namespace) -> int:
    try:
        profile = get_profile(args.profile, device=args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.layer == "auto":
        layer = choose_layer(args.model, args.task, profile)
    else:
        try:
            layer = int(args.layer)
        except ValueError:
            raise SystemExit(f"--layer must be an integer or 'auto', got {args.layer!r}") from None
    comparison = compare_pruned(args.model, args.task, layer, profile=profile,
                                timing_batch_size=args.timing_batch_size, timing_repeats=args.timing_repeats)
    if not distributed.is_main():  # one table, printed and written by rank 0
        return 0
    print(f"{args.model}, {args.task} task, pruned at layer {layer} of {comparison.n_layers} "
          f"(profile {profile.name}, {comparison.full_inference.context.get('device_name')})")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(comparison.table)
    if args.json:
        save_json(args.json, comparison.to_dict())
        print(f"wrote {args.json}")
    return 0


# --------------------------------------------------------------------------- pretrain


def add_pretrain_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``python -m convexlab pretrain [--recipe R] [--family all] [--steps N] [--seed S] [--threads T] [--export]``."""
    parser = subparsers.add_parser("pretrain", help="pretrain the miniature models (cached; reused when present)")
    parser.add_argument("--recipe", default="synthetic-v1", choices=sorted(RECIPES),
                        help="named pretraining recipe (convexlab.recipes; default: the lite default)")
    parser.add_argument("--family", default="all", choices=["all", *FAMILY_OBJECTIVES], help="family to pretrain")
    parser.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, masking and shuffling seed")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--export", nargs="?", const=str(COMMITTED_WEIGHTS), default=None, metavar="DIR",
                        help=f"copy each pretrained folder into DIR (default {COMMITTED_WEIGHTS}, the committed weights)")
    parser.set_defaults(handler=run_pretrain_cli)


def run_pretrain_cli(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    families = list(FAMILY_OBJECTIVES) if args.family == "all" else [args.family]
    for family in families:
        start = time.perf_counter()
        config, model_config = recipe_configs(args.recipe, family)
        path = ensure_pretrained(family, seed=args.seed, config=config.replace(steps=args.steps),
                                 model_config=model_config)
        if args.export:
            path = export_pretrained(path, args.export, recipe=args.recipe)
        log = training_log(path)
        first, last, n_steps = loss_trend(log)
        print(
            f"mini-{family}: {path}\n  {log['objective']}; loss {first:.3f} -> "
            f"{last:.3f} over {n_steps} steps; trained in {log['seconds']:.1f} s "
            f"(this call {time.perf_counter() - start:.1f} s)"
        )
    return 0
