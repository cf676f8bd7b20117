"""The linear-probe rule's cost by thread count: the library's probe at one thread against the libraries' own count.

    python benchmarks/probe_threads.py            # a lite-sized analysis set: 420 clips, 35 classes, 13 layers
    python benchmarks/probe_threads.py --quick

:func:`convexlab.frontier.probe_accuracy` (3-fold standardised logistic regression, the
where-to-cut chapter's linear-probe rule) is fitted on every hidden state of a stand-in stack with
class structure: each class a Gaussian cluster whose separation grows with the layer, so that the
fits need as many lbfgs iterations as on real embeddings. It runs once with ``threads=None`` (the
BLAS and OpenMP pools' own size, one thread per core: the baseline) and once with ``threads=1``
(the default), in this process, and prints both times, their ratio and whether every accuracy is
the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexlab.frontier import probe_accuracy  # noqa: E402


def stand_in_stack(*, n_layers: int, n_classes: int, per_class: int, dim: int, seed: int):
    """(n_layers, n_classes * per_class, dim) embeddings and their (N,) labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    centres = rng.normal(size=(n_classes, dim))
    stack = np.stack([0.3 * (1 + layer / n_layers) * centres[labels] + rng.normal(size=(len(labels), dim))
                      for layer in range(n_layers)])
    return stack, labels


def timed(stack, labels, threads):
    start = time.perf_counter()
    accuracies = [probe_accuracy(layer, labels, threads=threads) for layer in stack]
    return time.perf_counter() - start, accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=13, help="hidden states (a 12-layer miniature has 13)")
    parser.add_argument("--classes", type=int, default=35)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--quick", action="store_true", help="4 layers")
    args = parser.parse_args()

    n_layers = 4 if args.quick else args.layers
    stack, labels = stand_in_stack(n_layers=n_layers, n_classes=args.classes, per_class=args.per_class,
                                   dim=args.dim, seed=0)
    pools = sorted({(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()})
    print(f"{n_layers} layers x {len(labels)} clips x {args.dim} dims, {args.classes} classes; thread pools {pools}")
    baseline, own = timed(stack, labels, None)
    limited, one = timed(stack, labels, 1)
    print(f"libraries' threads: {baseline:.2f} s   one thread: {limited:.2f} s   "
          f"ratio {baseline / limited:.1f}x   same accuracies: {own == one}")


if __name__ == "__main__":
    main()
