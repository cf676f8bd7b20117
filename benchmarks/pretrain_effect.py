"""Did pretraining make a difference? Layer-wise convexity and linear probes, pretrained vs random.

For each miniature family, the pretrained model (``convexlab.pretrain.ensure_pretrained``,
trained on first use) and the randomly initialised one of the same architecture are run on the
*analysis* corpus of the lite profile (speakers and repetitions never seen in pretraining). Per
layer it prints:

- graph convexity of the word and of the speaker concept (``layerwise_convexity``), and
- the cross-validated accuracy of a linear probe (standardised features, logistic regression,
  stratified k-fold) for each concept,

each for the pretrained and the random model, and which layer is best. It also prints the
pretraining time and loss of each family from its training log.

    python benchmarks/pretrain_effect.py                       # all four families
    python benchmarks/pretrain_effect.py --family hubert --per-word 24 --threads 2
    python benchmarks/pretrain_effect.py --family hubert --mask-prob 0.8 --mask-length 10   # a variant
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from convexlab.convexity import layerwise_convexity
from convexlab.data import load_task
from convexlab.extract import extract_layers
from convexlab.models import FAMILIES, load_model
from convexlab.pretrain import PretrainConfig, ensure_pretrained, loss_trend, training_log
from convexlab.profiles import get_profile


def probe_accuracy(X: np.ndarray, labels: np.ndarray, *, folds: int, seed: int) -> float:
    """Mean k-fold accuracy of a linear probe on ``X`` (N, D) for ``labels`` (N,)."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, X, labels, cv=cv).mean())


def layer_table(embeddings, *, n_neighbors: int, max_pairs: int, folds: int, seed: int) -> pd.DataFrame:
    """One row per layer: word/speaker convexity and probe accuracy of one model's embeddings."""
    table = pd.DataFrame({"layer": np.arange(embeddings.n_layers)})
    for concept in ("word", "speaker"):
        labels = embeddings.concept(concept)
        convexity = layerwise_convexity(
            embeddings.embeddings, labels, n_neighbors=n_neighbors, max_pairs=max_pairs, seed=seed,
            n_bootstrap=0, progress=False,
        )
        table[f"{concept}_convexity"] = convexity["score"].to_numpy()
        table[f"{concept}_probe"] = [
            probe_accuracy(embeddings.layer(i), labels, folds=folds, seed=seed) for i in range(embeddings.n_layers)
        ]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="all", choices=["all", *FAMILIES])
    parser.add_argument("--per-word", type=int, default=48, help="clips per word from the analysis corpus")
    parser.add_argument("--n-neighbors", type=int, default=10)
    parser.add_argument("--max-pairs", type=int, default=2000)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="model seed (pretraining and random init)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a busy machine)")
    parser.add_argument("--steps", type=int, help="pretraining override (default: PretrainConfig's)")
    parser.add_argument("--mask-prob", type=float, help="pretraining override")
    parser.add_argument("--mask-length", type=int, help="pretraining override")
    parser.add_argument("--learning-rate", type=float, help="pretraining override")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = PretrainConfig().replace(steps=args.steps, mask_prob=args.mask_prob, mask_length=args.mask_length,
                                      learning_rate=args.learning_rate)
    profile = get_profile("lite")
    dataset = load_task("word", profile).subsample(args.per_word, seed=0)
    print(f"analysis clips: {len(dataset)} ({len(set(dataset.words))} words, {len(set(dataset.speakers))} speakers)")
    families = list(FAMILIES) if args.family == "all" else [args.family]
    summary = []
    for family in families:
        start = time.perf_counter()
        folder = ensure_pretrained(family, seed=args.seed, config=config)
        log = training_log(folder)
        first, last, n_steps = loss_trend(log)
        print(f"\n=== mini-{family}: {log['objective']}")
        print(f"pretraining: {n_steps} steps in {log['seconds']:.1f} s (+{log['setup_seconds']:.1f} s setup, "
              f"{log['torch_threads']} threads); loss {first:.3f} -> {last:.3f}")
        tables = {}
        for kind, pretrained in (("pretrained", True), ("random", False)):
            name = str(folder) if pretrained else FAMILIES[family].miniature_name
            model = load_model(name, pretrained=pretrained, seed=args.seed)
            embeddings = extract_layers(model, dataset, cache=False, progress=False)
            tables[kind] = layer_table(embeddings, n_neighbors=args.n_neighbors, max_pairs=args.max_pairs,
                                       folds=args.folds, seed=args.seed)
        merged = tables["pretrained"].merge(tables["random"], on="layer", suffixes=("", "_rand"))
        columns = ["layer"] + [f"{c}{s}" for c in ("word_convexity", "speaker_convexity", "word_probe", "speaker_probe")
                               for s in ("", "_rand")]
        print(merged[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for kind, table in tables.items():
            summary.append({
                "family": family, "model": kind,
                "best_word_layer": int(table["word_convexity"].idxmax()),
                "best_speaker_layer": int(table["speaker_convexity"].idxmax()),
                "max_word_convexity": table["word_convexity"].max(),
                "max_speaker_convexity": table["speaker_convexity"].max(),
                "best_word_probe": table["word_probe"].max(),
                "best_speaker_probe": table["speaker_probe"].max(),
            })
        print(f"({time.perf_counter() - start:.0f} s for this family)")
    print("\n=== summary (layer 0 is the transformer's input)")
    print(pd.DataFrame(summary).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
