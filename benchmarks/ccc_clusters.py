"""ccc-wav2vec 2.0's clustering module on one-second clips: how many groups, how many distractors weakened.

    python benchmarks/ccc_clusters.py                          # spoken-v4's corpus, factors 16 8 4 2 1
    python benchmarks/ccc_clusters.py --recipe spoken-v12 --batches 50

The authors cluster each batch's masked targets (both views) into
``max(2, masked frames per utterance // cluster_factor)`` groups and scale down the logits of the
distractors that share the positive's group. On their ~15 s crops (~380 masked frames) factor 16
gives about 23 groups, so about one distractor in 23 is weakened. For each factor this prints, over
``--batches`` batches of the recipe's pretraining corpus (its batch size, mask and silence rule):
masked frames per utterance, groups per batch (the objective's own
:meth:`convexlab.objectives.ClusterContrastiveObjective.n_clusters`: set by the batch's shortest utterance), and the fraction of distractors in the
positive's group, measured with the objective itself on a freshly initialised model (its quantiser
is random, so the fraction shows the clustering's granularity, not a trained model's targets).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexlab.objectives import augment_for_cross_contrast  # noqa: E402
from convexlab.pretrain import _build_objective, pretraining_waveforms, recipe_configs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="spoken-v4", help="pretraining recipe whose ccc-wav2vec2 corpus and batches to use")
    parser.add_argument("--factors", type=int, nargs="+", default=[16, 8, 4, 2, 1], help="cluster factors to compare")
    parser.add_argument("--batches", type=int, default=50, help="batches drawn per factor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config, model_config = recipe_configs(args.recipe, "ccc-wav2vec2")
    waveforms = pretraining_waveforms(config)
    print(f"{args.recipe}: {len(waveforms)} pretraining clips, batch {config.batch_size}, mask_prob {config.mask_prob}, "
          f"mask_length {config.mask_length}, silent frames {config.target_silence_db} dB down never masked")
    print(f"{'factor':>6} {'masked/utt':>10} {'shortest':>8} {'groups':>12} {'weakened':>9}")
    for factor in args.factors:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)  # HF's mask and distractor sampling draw from NumPy's global generator
        rng = np.random.default_rng(args.seed)
        objective = _build_objective("ccc-wav2vec2", model_config, config.replace(cluster_factor=factor), args.seed).eval()
        per_utterance, shortest, groups, weakened = [], [], [], []
        with torch.no_grad():
            for _ in range(args.batches):
                batch = torch.from_numpy(waveforms[rng.choice(len(waveforms), config.batch_size, replace=False)])
                mask, negatives = objective._mask_and_negatives(batch)
                counts = mask.sum(1)
                views = [objective._view(batch, mask),
                         objective._view(augment_for_cross_contrast(batch, generator=objective.generator), mask, speech_of=batch)]
                same = objective._same_cluster([v.targets for v in views], mask, negatives)[0]
                per_utterance.extend(counts.tolist())
                shortest.append(int(counts.min()))
                groups.append(objective.n_clusters(mask))
                weakened.append(float(same[mask].float().mean()))
        print(f"{factor:>6} {np.mean(per_utterance):>10.1f} {np.mean(shortest):>8.1f} "
              f"{np.mean(groups):>5.1f} ({min(groups)}-{max(groups)}) {np.mean(weakened):>9.3f}")


if __name__ == "__main__":
    main()
