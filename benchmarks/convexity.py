"""Graph convexity: speed, memory and agreement against the reference approaches.

    python benchmarks/convexity.py            # the issue's cases (long: the references take minutes)
    python benchmarks/convexity.py --quick    # small sizes, a minute or two

Each case runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own; the
baseline RSS after imports and data generation is printed beside it. The data is generated in
each subprocess from the same seed, so every method sees the same points and the same pairs.

Cases:
1. per-pair: N = 2,000, D = 768, 20 classes, all pairs; convexlab vs one networkx Dijkstra per
   pair (the published code's way). Scores must agree to 1e-9.
2. all-pairs: N = 10,000, D = 768, 35 classes, 5,000 pairs per class; convexlab vs scipy's
   Dijkstra from every source with a dense N x N result (the course code's way).
3. scaling: N = 2k ... 50k, D = 768, 35 classes, 5,000 pairs per class, for clustered
   embeddings and for the same points with random labels; time per step (kNN, graph, paths).

Data: "clustered" = 35 isotropic Gaussian classes (unit variance per dimension) around centres
drawn from N(0, 0.3^2 I): the classes overlap (about a fifth of the kNN edges join two classes)
yet score about 0.97. "random" = the same points with shuffled labels: every search has to
settle most of the graph before its last target, the worst case for early stopping.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the networkx / scipy references live beside the tests


def make_data(kind: str, n: int, dim: int, n_classes: int, *, seed: int = 0):
    """(N, D) float32 embeddings and (N,) int labels; see the module docstring."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, dim)) * 0.3
    X = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    if kind == "random":
        labels = rng.permutation(labels)
    return X, labels


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(spec: dict) -> dict:
    """Run one method on one case; return times, scores file and memory."""
    from convexlab._paths import sample_pairs
    from convexlab.convexity import _encode_labels, _layer_scores, _prepare, graph_convexity

    X, labels = make_data(spec["kind"], spec["n"], spec["dim"], spec["n_classes"])
    classes = _encode_labels(labels, X.shape[0])
    pairs = sample_pairs(classes.codes, n_classes=len(classes.labels), max_pairs=spec["max_pairs"], seed=0)
    sources, targets = pairs.sources, pairs.targets
    fraction = spec.get("reference_fraction", 1.0)
    if spec["method"] != "convexlab" and fraction < 1.0:
        # time the (linear-cost) per-pair reference on a random subset of the pairs
        keep = np.sort(np.random.default_rng(1).choice(sources.size, int(sources.size * fraction), replace=False))
        sources, targets = sources[keep], targets[keep]
    else:
        keep = np.arange(sources.size)
    if spec["method"] == "convexlab":
        graph_convexity(np.random.default_rng(0).normal(size=(50, 4)), np.arange(50) % 2, n_neighbors=3)  # JIT load
    baseline = current_rss_mib()
    started = time.perf_counter()
    timings = {}
    if spec["method"] == "convexlab":
        X64, classes, pairs = _prepare(X, labels, 10, spec["max_pairs"], 0)
        timings["pairs"] = time.perf_counter() - started
        scores, _, step_times = _layer_scores(X64, classes, pairs, n_neighbors=10, device=None)
        timings.update(step_times)
    elif spec["method"] == "per-pair":
        from convexity_reference import per_pair_scores

        scores = per_pair_scores(X, labels, list(zip(sources.tolist(), targets.tolist())), k=10)
    else:
        from convexity_reference import all_pairs_scores

        scores = all_pairs_scores(X, labels, list(zip(sources.tolist(), targets.tolist())), k=10)
    elapsed = time.perf_counter() - started
    np.save(spec["scores_path"], np.stack([keep.astype(np.float64), scores]))
    return {
        "seconds": elapsed,
        "timings": timings,
        "score": float(np.mean(scores)),
        "n_pairs": int(scores.size),
        "peak_rss_mib": rss_mib(),
        "baseline_rss_mib": baseline,
    }


def run_case(spec: dict, *, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        spec = {**spec, "scores_path": str(Path(folder) / "scores.npy")}
        command = [sys.executable, __file__, "--worker", json.dumps(spec)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"timeout": timeout}
        if done.returncode != 0:
            raise RuntimeError(f"case {spec} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        keep, scores = np.load(spec["scores_path"])
        result["keep"], result["scores"] = keep.astype(np.int64), scores
        return result


def compare(ours: dict, reference: dict, name: str) -> None:
    our_scores = ours["scores"][reference["keep"]]
    difference = np.abs(our_scores - reference["scores"]).max()
    fraction = reference["n_pairs"] / ours["n_pairs"]
    reference_seconds = reference["seconds"] / fraction  # per-pair cost is linear in the pairs
    note = "" if fraction == 1 else f" (timed on {reference['n_pairs']} of {ours['n_pairs']} pairs, scaled)"
    print(f"  same scores as {name}: max |difference| = {difference:.2e} over {reference['n_pairs']} pairs "
          f"-> {'IDENTICAL (<= 1e-9)' if difference <= 1e-9 else 'DIFFERENT'}")
    print(f"  time: convexlab {ours['seconds']:.2f} s, {name} {reference_seconds:.1f} s{note} "
          f"-> {reference_seconds / ours['seconds']:.0f}x faster")
    print(f"  peak RSS: convexlab {ours['peak_rss_mib']:.0f} MiB (baseline {ours['baseline_rss_mib']:.0f}), "
          f"{name} {reference['peak_rss_mib']:.0f} MiB (baseline {reference['baseline_rss_mib']:.0f}) "
          f"-> ratio {ours['peak_rss_mib'] / reference['peak_rss_mib']:.2f}; above baseline "
          f"{ours['peak_rss_mib'] - ours['baseline_rss_mib']:.0f} vs "
          f"{reference['peak_rss_mib'] - reference['baseline_rss_mib']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    parser.add_argument("--sizes", type=int, nargs="*", help="N for the scaling table")
    parser.add_argument("--kinds", nargs="*", default=["clustered", "random"], help="data kinds for the scaling table")
    parser.add_argument("--skip", nargs="*", default=[], choices=["per-pair", "all-pairs", "scaling"])
    parser.add_argument("--reference-fraction", type=float, default=1.0,
                        help="time the per-pair reference on this fraction of the pairs (its cost is linear)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case before it is reported as a timeout")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    dim = 768
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")
    if "per-pair" not in args.skip:
        n = 400 if args.quick else 2000
        print(f"\n[1] N = {n}, D = {dim}, 20 classes, all pairs: convexlab vs networkx per-pair Dijkstra")
        spec = {"kind": "clustered", "n": n, "dim": dim, "n_classes": 20, "max_pairs": None}
        ours = run_case({**spec, "method": "convexlab"}, timeout=args.timeout)
        reference = run_case({**spec, "method": "per-pair", "reference_fraction": args.reference_fraction},
                             timeout=args.timeout)
        compare(ours, reference, "networkx per-pair")
    if "all-pairs" not in args.skip:
        n = 2000 if args.quick else 10000
        print(f"\n[2] N = {n}, D = {dim}, 35 classes, 5000 pairs per class: convexlab vs scipy all-pairs Dijkstra")
        spec = {"kind": "clustered", "n": n, "dim": dim, "n_classes": 35, "max_pairs": 5000}
        ours = run_case({**spec, "method": "convexlab"}, timeout=args.timeout)
        reference = run_case({**spec, "method": "all-pairs"}, timeout=args.timeout)
        compare(ours, reference, "scipy all-pairs")
    if "scaling" not in args.skip:
        sizes = args.sizes or ([1000, 2000, 4000] if args.quick else [2000, 5000, 10000, 20000, 50000])
        print(f"\n[3] scaling: D = {dim}, 35 classes, 5000 pairs per class, k = 10 (seconds; one run each)")
        header = f"{'data':>9} {'N':>6} {'total':>7} {'kNN':>6} {'graph':>6} {'paths':>7} {'paths%':>6} {'score':>6} {'peak MiB':>8}"
        print(header)
        previous = {}
        for kind in args.kinds:
            for n in sizes:
                result = run_case({"kind": kind, "n": n, "dim": dim, "n_classes": 35, "max_pairs": 5000,
                                   "method": "convexlab"}, timeout=args.timeout)
                if "timeout" in result:
                    print(f"{kind:>9} {n:>6} {'> ' + str(int(result['timeout'])):>7}  (timed out)", flush=True)
                    continue
                t = result["timings"]
                print(f"{kind:>9} {n:>6} {result['seconds']:7.2f} {t['knn']:6.2f} {t['graph']:6.2f} {t['paths']:7.2f} "
                      f"{100 * t['paths'] / result['seconds']:5.0f}% {result['score']:6.3f} {result['peak_rss_mib']:8.0f}",
                      flush=True)
                previous.setdefault(kind, []).append((n, result["seconds"]))
        for kind, points in previous.items():
            if len(points) >= 2:
                sizes_, seconds = np.log([p[0] for p in points]), np.log([p[1] for p in points])
                print(f"  {kind}: time grows as about N^{np.polyfit(sizes_, seconds, 1)[0]:.2f} over N = "
                      f"{points[0][0]}..{points[-1][0]}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
