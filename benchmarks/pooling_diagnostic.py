"""Where in the clip the layer information sits: convexity per layer of clip means over all frames,
speech frames only, and background frames only.

A diagnostic, not the goal's analysis (which pools over all frames, as the paper does): a one-second
clip of one spoken word is mostly background, so the all-frame mean of a layer mixes what the model
keeps on the word's frames with what it keeps on the recording's background. Speech frames are those
within ``--silence-db`` of the clip's loudest frame (:func:`convexlab.objectives.speech_frames`, the
rule the pretraining targets use).

    python benchmarks/pooling_diagnostic.py convexlab/weights/hubert-*-seed0 --recipe spoken-v5 --threads 1
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from convexlab.convexity import layerwise_convexity
from convexlab.data import SAMPLE_RATE, load_task
from convexlab.models import feature_extractor_for, load_model
from convexlab.objectives import speech_frames
from convexlab.profiles import get_profile
from convexlab.recipes import RECIPES, recipe_spec

POOLS = ("all", "speech", "background")


@torch.inference_mode()
def masked_means(model, clips: np.ndarray, *, silence_db: float) -> tuple[dict[str, np.ndarray], float]:
    """Per pool, float32 (L+1, B, D) clip means of ``clips`` (B, S), and the batch's speech fraction."""
    preprocess = feature_extractor_for(model)
    inputs = preprocess(list(clips), sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_values"]
    hidden = torch.stack(model(inputs, output_hidden_states=True).hidden_states).numpy()  # (L+1, B, T, D)
    speech = speech_frames(clips, n_frames=hidden.shape[2], silence_db=silence_db)  # (B, T)
    means = {}
    for pool, mask in zip(POOLS, (np.ones_like(speech), speech, ~speech)):
        weights = mask / np.maximum(mask.sum(1, keepdims=True), 1)
        means[pool] = np.einsum("lbtd,bt->lbd", hidden, weights.astype(np.float32))
    return means, float(speech.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders (or hub ids) to measure")
    parser.add_argument("--recipe", default="spoken-v5", choices=sorted(RECIPES),
                        help="its analysis corpus (default: the committed weights' recipe)")
    parser.add_argument("--per-word", type=int, default=48, help="clips per word (pretrain_effect.py's default)")
    parser.add_argument("--silence-db", type=float, default=30.0, help="speech: frames within this of the loudest")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile("lite-synthetic", **recipe_spec(args.recipe).analysis)
    dataset = load_task("word", profile).subsample(args.per_word, seed=0)
    print(f"analysis clips: {len(dataset)}; k={profile.n_neighbors}, {profile.max_pairs} pairs per class")
    for name in args.models:
        model = load_model(name).eval()
        parts, fractions = {pool: [] for pool in POOLS}, []
        for start in tqdm(range(0, len(dataset), 32), desc=f"hidden states of {name}", unit="batch"):
            clips = np.asarray(dataset.batch(range(start, min(start + 32, len(dataset)))), dtype=np.float32)
            means, fraction = masked_means(model, clips, silence_db=args.silence_db)
            fractions.append(fraction * len(clips))
            for pool in POOLS:
                parts[pool].append(means[pool])
        table = {}
        for pool in POOLS:
            embeddings = np.concatenate(parts[pool], axis=1)
            for concept, labels in (("word", dataset.words), ("speaker", dataset.speakers)):
                scores = layerwise_convexity(embeddings, np.asarray(labels), n_neighbors=profile.n_neighbors,
                                             max_pairs=profile.max_pairs, seed=profile.seed,
                                             n_bootstrap=profile.n_bootstrap, progress=False)["score"]
                table[f"{concept}/{pool}"] = scores.to_numpy()
        table = pd.DataFrame(table).rename_axis("layer")
        print(f"\n=== {name}: speech is {sum(fractions) / len(dataset):.0%} of the frames")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        print("argmax per column:", {column: int(table[column].to_numpy().argmax()) for column in table})


if __name__ == "__main__":
    main()
