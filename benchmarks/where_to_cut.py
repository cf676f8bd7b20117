"""Where to cut? Every layer-selection rule against the pruning frontier, for every family and task.

For each model of the profile (on lite: the four miniature families) and each task (word,
speaker), :func:`convexlab.pipeline.cut_study` finetunes the model cut at every depth 1..L with
the profile's recipe (the same batches at every depth; each run cached per depth and seed), finds
the oracle depth (the smallest depth within ``--tolerance`` of the full model's accuracy) and
measures each rule's pick from the pretrained model's embeddings of the analysis clips: graph
convexity (the paper's rule), Euclidean convexity, the best linear probe, CKA redundancy
(threshold 0.95), keep all, keep half. It prints

1. the frontier: accuracy, training time, parameters and FLOPs per depth, the oracle marked;
2. the rule-versus-oracle table: each rule's depth, its distance from the oracle, its accuracy gap
   to the full model and to the frontier, and the FLOPs it saves;
3. a summary per rule over all model/task pairs.

On lite the results are the miniature models', not the paper's. A cold run on lite is 4 models x 2
tasks x 12 depths = 96 finetuning runs (about 20-60 s each on one core, one per core at once); on
lite-synthetic 48 runs of 5-15 s; a second run trains nothing.

    python benchmarks/where_to_cut.py                               # lite, all four families
    python benchmarks/where_to_cut.py --models mini-hubert --tasks word
    python benchmarks/where_to_cut.py --seeds 0 1 2 --tolerance 0.02
    python benchmarks/where_to_cut.py --profile paper --threads 8   # base checkpoints (GPU advised)
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from convexlab import pipeline
from convexlab.plots import miniature_label
from convexlab.profiles import get_profile


def _print(table: pd.DataFrame, percent: tuple[str, ...] = (), signed: tuple[str, ...] = ()) -> None:
    shown = table.copy()
    for column in percent:
        if column in shown:
            shown[column] = shown[column].map(lambda v: "–" if pd.isna(v) else f"{100 * v:.1f}%")
    for column in signed:
        if column in shown:
            shown[column] = shown[column].map(lambda v: "–" if pd.isna(v) else f"{100 * v:+.1f}")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="lite", help="named profile: lite, lite-synthetic, paper, large")
    parser.add_argument("--models", nargs="+", help="models to cut (default: the profile's)")
    parser.add_argument("--tasks", nargs="+", default=list(pipeline.CONCEPTS), choices=list(pipeline.CONCEPTS))
    parser.add_argument("--seeds", type=int, nargs="+", help="finetuning seeds (default: the profile's seed)")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="oracle tolerance, absolute accuracy (0.01 = one point)")
    parser.add_argument("--device", help="device (default: the profile's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a busy machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    overrides = {"device": args.device} if args.device else {}
    profile = get_profile(args.profile, **overrides)
    models = args.models or list(profile.models)
    seeds = args.seeds or [profile.seed]
    print(f"profile {profile.name}: models {models}, tasks {args.tasks}, seeds {seeds}, "
          f"tolerance {100 * args.tolerance:g} pt, {args.threads} torch thread(s), device {profile.device}")
    print(miniature_label(profile))
    start = time.perf_counter()
    study = pipeline.cut_study(profile, models=models, tasks=args.tasks, seeds=seeds, tolerance=args.tolerance)
    seconds = time.perf_counter() - start

    print("\n=== the frontier: the model cut at every depth and finetuned (oracle: *)")
    frontier = study.frontier_table()
    frontier["oracle"] = frontier["oracle"].map({True: "*", False: ""})
    frontier["gflops_per_clip"] = frontier.pop("flops_per_clip") / 1e9
    _print(frontier.drop(columns=["family"]), percent=("accuracy", "accuracy_std"))

    print("\n=== each rule against the oracle (gaps in accuracy points; depth_from_oracle > 0 keeps more layers)")
    table = study.table[["model", "task", "rule", "depth", "n_layers", "oracle_depth", "depth_from_oracle",
                         "accuracy", "gap_to_full", "gap_to_frontier", "within_tolerance", "flops_saved",
                         "train_time_saved"]]
    _print(table, percent=("accuracy", "flops_saved", "train_time_saved"), signed=("gap_to_full", "gap_to_frontier"))

    print(f"\n=== per rule, over {study.table.groupby(['model', 'task']).ngroups} model/task pairs")
    _print(pipeline.cut_rule_summary(study.table), percent=("mean_flops_saved",),
           signed=("mean_gap_to_full", "worst_gap_to_full"))
    trained = sum(len(f.runs) for f in study.frontiers.values())
    print(f"\n({seconds:.0f} s for {trained} finetuning runs, cached ones included)")


if __name__ == "__main__":
    main()
