"""Did pretraining make a difference, and do the miniatures show the paper's layer structure?

For each miniature family and each pretraining seed, the pretrained model
(``convexlab.pretrain.ensure_pretrained``, trained on first use and cached) and the randomly
initialised model of the same architecture are run on the recipe's *analysis* corpus (the
lite-synthetic profile with the recipe's corpus fields; speakers and repetitions never seen in
pretraining). Per layer it prints

- graph convexity of the word and of the speaker concept with bootstrap intervals
  (``layerwise_convexity``: k, pairs budget and bootstraps of the profile, the same for every
  model), and
- the cross-validated accuracy of a linear probe (standardised features, logistic regression,
  stratified k-fold) for each concept,

then, per family and seed, whether the paper's layer structure holds
(``convexlab.convexity.layer_structure``: speakers peak in the first third of the layers, words
strictly inside the stack and above layer 0's bootstrap interval), and the goal: at least 3 of
the 4 families in at least 2 of 3 seeds.

    python benchmarks/pretrain_effect.py                                   # synthetic-v1 (lite-synthetic's), seeds 0 1 2
    python benchmarks/pretrain_effect.py --recipe spoken-v1 --threads 1    # a named recipe (convexlab.recipes)
    python benchmarks/pretrain_effect.py --family hubert --seeds 0 --steps 3000
    python benchmarks/pretrain_effect.py --corpus spoken --conv-dim 64 --hidden-size 64 --steps 3000
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd
import torch
from transformers import AutoModel

from convexlab.convexity import layer_structure, layerwise_convexity
from convexlab.data import load_task
from convexlab.extract import extract_layers
from convexlab.frontier import probe_accuracy
from convexlab.models import FAMILIES, load_model, miniature_config
from convexlab.pretrain import (
    PretrainConfig,
    ensure_pretrained,
    has_second_iteration,
    loss_trend,
    recipe_configs,
    training_log,
)
from convexlab.profiles import get_profile
from convexlab.recipes import RECIPES, recipe_spec

GOAL_FAMILIES, GOAL_SEEDS = 3, 2  # the structure must hold for >= 3 of 4 families in >= 2 of 3 seeds


def layer_tables(embeddings, *, profile, folds: int, seed: int, probes: bool) -> dict[str, pd.DataFrame]:
    """Per concept, the ``layerwise_convexity`` table of one model's embeddings (plus a probe column)."""
    tables = {}
    for concept in ("word", "speaker"):
        labels = embeddings.concept(concept)
        table = layerwise_convexity(
            embeddings.embeddings, labels, n_neighbors=profile.n_neighbors, max_pairs=profile.max_pairs,
            seed=profile.seed, n_bootstrap=profile.n_bootstrap, progress=False,
        )
        table["probe"] = ([probe_accuracy(embeddings.layer(i), labels, n_folds=folds, seed=seed, max_iter=2000)
                           for i in range(embeddings.n_layers)] if probes else np.nan)
        tables[concept] = table
    return tables


def _interval(table: pd.DataFrame) -> list[str]:
    return [f"{s:.3f} [{lo:.3f}, {hi:.3f}]" for s, lo, hi in zip(table["score"], table["ci_low"], table["ci_high"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="all", choices=["all", *FAMILIES])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pretraining seeds")
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="named pretraining recipe and its analysis corpus (the flags below override it)")
    parser.add_argument("--corpus", help="analysis and pretraining corpus (default: the recipe's)")
    parser.add_argument("--analysis-words", type=int, help="analysis corpus: words (default: the recipe's)")
    parser.add_argument("--analysis-speakers", type=int, help="analysis corpus: speakers")
    parser.add_argument("--analysis-repetitions", type=int, help="analysis corpus: repetitions of each word")
    parser.add_argument("--per-word", type=int, default=48, help="clips per word from the analysis corpus")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--no-probes", action="store_true", help="skip the linear probes (faster)")
    parser.add_argument("--no-random", action="store_true", help="skip the random-initialisation baseline")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a busy machine)")
    parser.add_argument("--conv-dim", type=int, help="miniature override: feature-encoder channels (all 7 layers)")
    parser.add_argument("--hidden-size", type=int, help="miniature override: transformer width (intermediate 3x)")
    parser.add_argument("--num-layers", type=int, help="miniature override: transformer layers")
    for field in dataclasses.fields(PretrainConfig):  # every recipe field can be overridden
        if field.type in ("int", "float", "int | None", "float | None", "str") and field.name != "corpus":
            kind = {"int": int, "float": float, "int | None": int, "float | None": float, "str": str}[field.type]
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, help="pretraining override")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = recipe_spec(args.recipe or "synthetic-v1")  # synthetic-v1: PretrainConfig's defaults, the default miniature
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(PretrainConfig)}
    analysis = dict(corpus=args.corpus, n_words=args.analysis_words, n_speakers=args.analysis_speakers,
                    n_repetitions=args.analysis_repetitions)
    profile = get_profile("lite-synthetic", **{**spec.analysis, **{k: v for k, v in analysis.items() if v is not None}})
    overrides["corpus"] = args.corpus  # pretrain on the corpus that is analysed (other speakers)
    size = {k: v for k, v in dict(conv_dim=args.conv_dim, hidden_size=args.hidden_size, num_layers=args.num_layers).items() if v}
    dataset = load_task("word", profile).subsample(args.per_word, seed=0)
    print(f"analysis clips: {len(dataset)} ({len(set(dataset.words))} words, {len(set(dataset.speakers))} speakers); "
          f"k={profile.n_neighbors}, {profile.max_pairs} pairs per class, {profile.n_bootstrap} bootstraps")
    print(f"recipe: {spec.name} ({spec.description})")
    changed = {k: v for k, v in {**overrides, **size}.items() if v is not None}
    if changed:
        print(f"overridden by flags: {changed}")
    families = list(FAMILIES) if args.family == "all" else [args.family]
    summary, structure_rows = [], []
    for family in families:
        config = recipe_configs(spec.name, family)[0].replace(**overrides)
        model_config = miniature_config(family, **{**spec.model, **size})
        print(f"\nmini-{family} pretraining config: {config}")
        for seed in args.seeds:
            start = time.perf_counter()
            folder = ensure_pretrained(family, seed=seed, config=config, model_config=model_config)
            log = training_log(folder)
            first, last, n_steps = loss_trend(log)
            print(f"\n=== mini-{family}, seed {seed}: {log['objective']}")
            print(f"pretraining: {n_steps} steps in {log['seconds']:.1f} s (+{log['setup_seconds']:.1f} s setup, "
                  f"{log['torch_threads']} threads, {log['n_clips']} clips); loss {first:.3f} -> {last:.3f}")
            if has_second_iteration(family, config):
                print("loss per iteration: " + "; ".join(
                    "{}: {:.3f} -> {:.3f} over {} steps".format(i, *loss_trend(log, iteration=i)) for i in (1, 2)))
            kinds = [("pretrained", True)] + ([] if args.no_random else [("random", False)])
            tables = {}
            for kind, pretrained in kinds:
                if pretrained:
                    model = load_model(str(folder))
                else:
                    torch.manual_seed(seed)
                    model = AutoModel.from_config(model_config).eval()
                embeddings = extract_layers(model, dataset, cache=False, progress=False)
                tables[kind] = layer_tables(embeddings, profile=profile, folds=args.folds, seed=seed,
                                            probes=not args.no_probes)
            shown = pd.DataFrame({"layer": tables["pretrained"]["word"]["layer"]})
            for kind in tables:
                suffix = "" if kind == "pretrained" else "_rand"
                shown[f"word{suffix}"] = _interval(tables[kind]["word"])
                shown[f"speaker{suffix}"] = _interval(tables[kind]["speaker"])
                if not args.no_probes:
                    shown[f"word_probe{suffix}"] = tables[kind]["word"]["probe"].map("{:.3f}".format)
                    shown[f"speaker_probe{suffix}"] = tables[kind]["speaker"]["probe"].map("{:.3f}".format)
            print(shown.to_string(index=False))
            for kind, pair in tables.items():
                structure = layer_structure(pair["word"], pair["speaker"])
                structure_rows.append({"family": family, "seed": seed, "model": kind, **dataclasses.asdict(structure)})
                summary.append({
                    "family": family, "seed": seed, "model": kind,
                    "max_word_convexity": pair["word"]["score"].max(),
                    "max_speaker_convexity": pair["speaker"]["score"].max(),
                    "best_word_probe": pair["word"]["probe"].max(),
                    "best_speaker_probe": pair["speaker"]["probe"].max(),
                })
            print(f"({time.perf_counter() - start:.0f} s for this family and seed)")
    print("\n=== summary (layer 0 is the transformer's input)")
    print(pd.DataFrame(summary).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    structures = pd.DataFrame(structure_rows)
    print("\n=== the paper's layer structure (speakers in the first third, words inside and above layer 0)")
    print(structures.to_string(index=False))
    pretrained = structures[structures["model"] == "pretrained"]
    seeds_holding = {family: int(n) for family, n in pretrained.groupby("family")["holds"].sum().items()}
    needed = min(GOAL_SEEDS, len(args.seeds))
    families_meeting = sum(n >= needed for n in seeds_holding.values())
    print(f"\nfamilies whose structure holds in >= {needed} of {len(args.seeds)} seeds: {families_meeting} of "
          f"{len(families)} (seeds holding: {seeds_holding}); goal (>= {GOAL_FAMILIES} of 4 families, "
          f">= {GOAL_SEEDS} of 3 seeds): {'MET' if families_meeting >= GOAL_FAMILIES and len(args.seeds) >= 3 else 'NOT MET'}")


if __name__ == "__main__":
    main()
