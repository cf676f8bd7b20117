"""Finetuning sizing: which lite finetuning settings give full-model accuracies that mean something, and at what cost.

For each named setting (profile overrides of the finetuning fields), each model (default: the
profile's four miniatures), each task (word, speaker) and each seed, the full model is finetuned
with the library's own :func:`convexlab.finetune.finetune_for_profile` -- the function the
chapters use through :func:`convexlab.pipeline.finetuned_model` -- and scored on the task's
held-out test clips. It prints one row per setting, model and task: accuracy mean +- sample std
over the seeds, the worst seed, seconds per run (training wall time, and the whole call's wall and
CPU time: data, training, evaluation, saving) and whether the target is met (words >= 80 %,
speakers >= 50 % by default, on the mean), then a summary per setting.

Seeds (``--seed-mode``):

- ``profile`` (default): the profile's ``seed`` is set to each seed, as the book's ``seed``
  parameter does. In this library that one seed chooses the pretrained miniature (pretraining
  seed; a new one is pretrained and cached on first use, about 20 s per family), the capped
  training clips, the head's initialisation and the batch order.
- ``finetune``: the pretrained miniature of the profile's seed is kept (passed as its folder) and
  only finetuning varies: the head's initialisation and the batch order (``seed=`` of
  :func:`convexlab.finetune.finetune`); the capped training clips are the profile seed's.

Every run retrains (``cache=False``) so that its time is measured; ``--reuse`` takes a finished run
from the cache instead (its CPU time is then unknown, shown as NaN, and its wall time is the
stored training time). The feature encoder is always frozen by the library.

Settings: the built-in ones below (``--list`` prints them), or your own with
``--setting NAME field=value ...`` (repeatable; values are Python literals, ``None`` for all clips).

    OMP_NUM_THREADS=1 python benchmarks/finetune_sizing.py --list
    OMP_NUM_THREADS=1 python benchmarks/finetune_sizing.py --settings today --models mini-wav2vec2 --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/finetune_sizing.py --settings today all-e4 --json sizing.json
    OMP_NUM_THREADS=1 python benchmarks/finetune_sizing.py --setting mine max_train_per_class=None finetune_epochs=6
"""

from __future__ import annotations

import argparse
import ast
import json
import time

import numpy as np
import pandas as pd
import torch

from convexlab import pipeline
from convexlab.finetune import finetune_for_profile
from convexlab.families import MINIATURE_NAMES
from convexlab.plots import miniature_label
from convexlab.pretrain import ensure_pretrained
from convexlab.profiles import get_profile

# name -> profile overrides (finetuning fields only: the corpus stays the profile's)
SETTINGS: dict[str, dict] = {
    "today": {},  # the profile as it is (lite: 40 clips per class, 4 epochs, batch 8, lr 3e-4 / head 1e-2, no dropout)
    "all-e4": {"max_train_per_class": None},
    "all-e4-lr3e-4": {"max_train_per_class": None, "learning_rate": 3e-4},
    "all-e4-b16": {"max_train_per_class": None, "finetune_batch_size": 16},
    "all-e8": {"max_train_per_class": None, "finetune_epochs": 8.0},
    "c60-e6": {"max_train_per_class": 60, "finetune_epochs": 6.0},
    "c20-e12": {"finetune_epochs": 12.0},
    "c20-e12-lr3e-4": {"finetune_epochs": 12.0, "learning_rate": 3e-4},
    "c20-e12-lr3e-3": {"finetune_epochs": 12.0, "learning_rate": 3e-3},
    "c20-e12-h3e-2": {"finetune_epochs": 12.0, "finetune_head_learning_rate": 3e-2},
    "c20-e4-lr3e-3-h3e-2": {"learning_rate": 3e-3, "finetune_head_learning_rate": 3e-2},
    "c60-e4": {"max_train_per_class": 60},
    "all-e3": {"max_train_per_class": None, "finetune_epochs": 3.0},
}

TASKS = tuple(pipeline.CONCEPTS)


def parse_value(text: str):
    """A Python literal (``None``, ``1e-3``, ``8``, ``True``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_setting(words: list[str]) -> tuple[str, dict]:
    """``["name", "field=value", ...]`` -> (name, overrides)."""
    if not words:
        raise argparse.ArgumentTypeError("--setting needs a name, then field=value pairs")
    name, overrides = words[0], {}
    for pair in words[1:]:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise argparse.ArgumentTypeError(f"--setting {name}: {pair!r} is not field=value")
        overrides[field] = parse_value(value)
    return name, overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="lite", help="named profile (default lite)")
    parser.add_argument("--settings", nargs="+", default=None,
                        help=f"built-in settings to run (default: today); known: {', '.join(SETTINGS)}")
    parser.add_argument("--setting", nargs="+", action="append", default=[], metavar="NAME_OR_FIELD=VALUE",
                        help="a custom setting: NAME field=value ... (repeatable)")
    parser.add_argument("--models", nargs="+", help="models (default: the profile's)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed-mode", choices=["profile", "finetune"], default="profile",
                        help="profile: the profile's seed (pretraining too); finetune: finetuning seed only")
    parser.add_argument("--target-word", type=float, default=0.80, help="word accuracy target (mean over seeds)")
    parser.add_argument("--target-speaker", type=float, default=0.50, help="speaker accuracy target")
    parser.add_argument("--reuse", action="store_true", help="take finished runs from the cache (no timing)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--json", default=None, help="also write every run and the tables to this JSON file")
    parser.add_argument("--list", action="store_true", help="print the built-in settings and exit")
    return parser


def chosen_settings(args) -> dict[str, dict]:
    names = args.settings if args.settings is not None else ([] if args.setting else ["today"])
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {unknown}; known: {list(SETTINGS)} (or --setting NAME field=value)")
    chosen = {name: dict(SETTINGS[name]) for name in names}
    for words in args.setting:
        name, overrides = parse_setting(words)
        chosen[name] = overrides
    return chosen


def one_run(model: str, task: str, profile, *, seed: int, seed_mode: str, reuse: bool) -> dict:
    """Finetune the full model once with the library's function; accuracy and cost."""
    if seed_mode == "profile":
        run_profile, name, extra = profile.replace(seed=seed), model, {}
    else:  # keep the profile seed's pretrained miniature; vary the finetuning seed only
        run_profile, extra = profile, {"seed": seed}
        name = (str(ensure_pretrained(MINIATURE_NAMES[model], seed=profile.seed, recipe=profile.pretrain_recipe))
                if model in MINIATURE_NAMES else model)
    called_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = finetune_for_profile(name, task, run_profile, cache=reuse, progress=False, **extra)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    cached = result.context.get("finished_at", called_at) < called_at  # a finished run found in the cache
    return {
        "model": model, "task": task, "seed": seed, "accuracy": result.accuracy, "macro_f1": result.macro_f1,
        "chance": result.chance_accuracy, "n_train": result.n_train, "n_eval": result.n_eval,
        "epochs": result.hyperparameters["epochs"], "n_steps": result.training.n_steps,
        "train_s": result.train_seconds, "wall_s": result.train_seconds if cached else wall,
        "cpu_s": float("nan") if cached else cpu, "cached": bool(cached),
        "threads": result.training.context.get("torch_threads", torch.get_num_threads()),
    }


def summarise(runs: pd.DataFrame, targets: dict[str, float]) -> pd.DataFrame:
    table = runs.groupby(["setting", "model", "task"], sort=False).agg(
        acc_mean=("accuracy", "mean"), acc_std=("accuracy", "std"), acc_min=("accuracy", "min"),
        n_seeds=("seed", "nunique"), n_train=("n_train", "first"), n_eval=("n_eval", "first"),
        train_s=("train_s", "mean"), wall_s=("wall_s", "mean"), cpu_s=("cpu_s", "mean")).reset_index()
    table["target"] = table["task"].map(targets)
    table["met"] = table["acc_mean"] >= table["target"]
    return table


def per_setting(table: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: pairs meeting the target, the worst mean per task, seconds per run."""
    rows = []
    for name, group in table.groupby("setting", sort=False):
        rows.append({
            "setting": name, "pairs": len(group), "met": int(group["met"].sum()),
            "worst_word": group.loc[group.task == "word", "acc_mean"].min(),
            "worst_speaker": group.loc[group.task == "speaker", "acc_mean"].min(),
            "wall_s_per_run": group["wall_s"].mean(), "cpu_s_per_run": group["cpu_s"].mean(),
            "train_s_per_run": group["train_s"].mean(),
            "wall_s_all": float((group["wall_s"] * group["n_seeds"]).sum()),
        })
    return pd.DataFrame(rows)


def _print_table(table: pd.DataFrame) -> None:
    shown = table.copy()
    shown["accuracy"] = [f"{100 * m:5.1f} ± {100 * s:4.1f}" if not np.isnan(s) else f"{100 * m:5.1f}"
                         for m, s in zip(shown.pop("acc_mean"), shown.pop("acc_std"))]
    shown["worst"] = shown.pop("acc_min").map(lambda v: f"{100 * v:.1f}")
    shown["met"] = shown["met"].map({True: "yes", False: "no"})
    shown["target"] = shown["target"].map(lambda v: f"{100 * v:.0f}")
    columns = ["setting", "model", "task", "n_train", "n_eval", "accuracy", "worst", "n_seeds", "train_s", "wall_s",
               "cpu_s", "target", "met"]
    print(shown[columns].to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, overrides in SETTINGS.items():
            print(f"{name:16s} {overrides or '(the profile as it is)'}")
        return
    torch.set_num_threads(args.threads)
    settings = chosen_settings(args)
    base = get_profile(args.profile)
    models = args.models or list(base.models)
    targets = {"word": args.target_word, "speaker": args.target_speaker}
    print(f"profile {base.name}: models {models}, tasks {args.tasks}, seeds {args.seeds} ({args.seed_mode} seeds), "
          f"{args.threads} torch thread(s)")
    print(miniature_label(base))
    for name, overrides in settings.items():
        p = base.replace(**overrides)
        print(f"  {name}: max_train_per_class={p.max_train_per_class}, epochs={p.finetune_epochs:g}, "
              f"batch={p.finetune_batch_size}, lr={p.learning_rate:g}, head lr={p.finetune_head_learning_rate}, "
              f"spec_augment={p.finetune_spec_augment}")

    rows = []
    start = time.perf_counter()
    for name, overrides in settings.items():
        profile = base.replace(**overrides)
        for model in models:
            for task in args.tasks:
                for seed in args.seeds:
                    row = {"setting": name, **one_run(model, task, profile, seed=seed, seed_mode=args.seed_mode,
                                                      reuse=args.reuse)}
                    rows.append(row)
                    print(f"    {name} {model} {task} seed {seed}: {100 * row['accuracy']:.1f} % "
                          f"({row['n_train']} clips, {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU)", flush=True)
    runs = pd.DataFrame(rows)
    table = summarise(runs, targets)
    summary = per_setting(table)

    print(f"\n=== full-model test accuracy, mean ± sample std over seeds {args.seeds} "
          f"(targets: words {100 * targets['word']:.0f} %, speakers {100 * targets['speaker']:.0f} %); "
          f"seconds per run")
    _print_table(table)
    print("\n=== per setting: model/task pairs meeting the target, worst mean accuracy, seconds per run "
          "(mean) and for the whole grid")
    shown = summary.copy()
    for column in ("worst_word", "worst_speaker"):
        shown[column] = shown[column].map(lambda v: f"{100 * v:.1f}")
    print(shown[["setting", "pairs", "met", "worst_word", "worst_speaker", "train_s_per_run", "wall_s_per_run",
                 "cpu_s_per_run", "wall_s_all"]].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\n({time.perf_counter() - start:.0f} s for {len(runs)} runs)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"profile": base.name, "seed_mode": args.seed_mode, "seeds": args.seeds, "targets": targets,
                       "settings": settings, "runs": rows, "table": table.to_dict(orient="records"),
                       "summary": summary.to_dict(orient="records")}, handle, indent=1, default=str)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
