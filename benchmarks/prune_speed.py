"""Does pruning turn into wall-clock savings? Inference time of base models pruned at 2, 4, 8, 12.

For each base architecture (wav2vec2, WavLM, HuBERT; ccc-wav2vec 2.0 is the wav2vec2 network)
with random weights from its default config (no download: the cost of a forward pass does not
depend on the weights), time the model pruned at each depth against the full 12-layer model in
the same process, interleaving the models' repeats, and print the measured time ratio next to
the FLOP ratio (FlopCounterMode). Pruning that pays off in wall-clock time has a time ratio
close to its FLOP ratio; the convolutional feature encoder is a fixed cost, so neither ratio
goes to zero.

Where the two ratios part, the split line says why (:func:`convexlab.timing.split_cost`): a
least-squares line through the (layers, time) and (layers, FLOPs) points separates each model's
cost into a fixed part (the convolutional feature encoder, the feature projection and the
positional convolution) and a part per transformer layer. When the fixed part runs at a lower FLOP
rate than the layers (convolutions and their element-wise normalisation are less efficient than
the layers' matrix products on most hardware), the fixed part's share of time exceeds its share
of FLOPs, and the time ratio of a shallow model stays above its FLOP ratio by about that
difference.

On Linux the script restarts itself with glibc's allocator told to keep freed memory
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``). With the defaults,
the feature encoder's large activations (a batch of 32 one-second clips makes 200 MB tensors) are
handed back to the kernel after every pass and page-faulted in again on the next: on a 2-core CPU
that was a fifth of the run's time, all of it in the fixed part. PyTorch's CPU tuning guide gives
the same advice (a caching allocator such as jemalloc or tcmalloc). ``--system-malloc`` measures
with the defaults instead; the first line of the output says which was used.

    python benchmarks/prune_speed.py --quick                    # CPU, batch 8, few repeats
    python benchmarks/prune_speed.py                            # CPU, batch 32
    python benchmarks/prune_speed.py --device cuda --dtype bfloat16 --repeats 20   # GPU
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd
import torch
from transformers import AutoModel

from convexlab.models import base_config
from convexlab.timing import compare_depths, split_cost

ARCHITECTURES = ("wav2vec2", "wavlm", "hubert")  # ccc-wav2vec2 shares wav2vec2's network

RETAINING_MALLOC = {  # glibc settings under which freed activations stay mapped for the next pass
    "MALLOC_MMAP_THRESHOLD_": str(4 << 30),  # serve large blocks from the heap, not fresh mmaps
    "MALLOC_TRIM_THRESHOLD_": str(64 << 30),  # never give the heap's free top back to the kernel
    "MALLOC_TOP_PAD_": str(1 << 30),  # grow the heap in 1 GiB steps
}


def _malloc_retained() -> bool:
    return all(os.environ.get(name) == value for name, value in RETAINING_MALLOC.items())


def malloc_mode() -> str:
    """Which allocator settings this process runs under, for the output's first line."""
    if _malloc_retained():
        return "glibc malloc keeping freed memory (" + ", ".join(f"{k}={v}" for k, v in RETAINING_MALLOC.items()) + ")"
    return "the default allocator settings"


def restart_with_retaining_malloc(argv: list[str]) -> None:
    """Re-execute this script with :data:`RETAINING_MALLOC` set, unless asked not to or already set.

    The settings are read when the C library starts, so they cannot be changed in a running process.
    """
    if not sys.platform.startswith("linux") or "--system-malloc" in argv or "--help" in argv or "-h" in argv:
        return
    if _malloc_retained():
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], os.environ | RETAINING_MALLOC)


def benchmark(family: str, *, depths, batch_size, repeats, rounds, device, dtype, clip_seconds) -> pd.DataFrame:
    config = base_config(family)
    torch.manual_seed(0)
    full = AutoModel.from_config(config)
    timings = compare_depths(full, depths, batch_size=batch_size, n_repeats=repeats, rounds=rounds, n_warmup=2,
                             device=device, dtype=dtype, clip_seconds=clip_seconds)
    baseline = timings[config.num_hidden_layers]
    rows = []
    for depth, timing in sorted(timings.items()):
        time_ratio = timing.seconds_per_batch / baseline.seconds_per_batch
        flop_ratio = timing.flops_per_clip / baseline.flops_per_clip
        rows.append({
            "family": family, "layers": depth, "ms_per_batch": 1e3 * timing.seconds_per_batch,
            "iqr_ms": 1e3 * timing.seconds_per_batch_iqr, "time_ratio": time_ratio, "flop_ratio": flop_ratio,
            "time/flop": time_ratio / flop_ratio, "gflops_per_clip": timing.flops_per_clip / 1e9,
            "params_M": timing.n_parameters / 1e6,
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 repeats: minutes on a small CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per forward pass (default 32; 8 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per model (default 10; 3 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2; 1 with --quick)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 12])
    parser.add_argument("--families", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep the C library's default allocator settings (see the module docstring)")
    parser.add_argument("--json", default=None, help="also write the table (and the settings) to this JSON file")
    args = parser.parse_args(argv)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    batch_size = args.batch_size or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 10)
    rounds = min(args.rounds or (1 if args.quick else 2), repeats)
    depths = sorted(set(args.depths) | {12})

    print(f"device {args.device} ({torch.get_num_threads()} threads), dtype {dtype}, batch {batch_size} x "
          f"{args.clip_seconds:g} s clips, {repeats} repeats in {rounds} interleaved round(s); "
          f"torch {torch.__version__}; {malloc_mode()}", flush=True)
    tables = []
    for family in args.families:
        table = benchmark(family, depths=depths, batch_size=batch_size, repeats=repeats, rounds=rounds,
                          device=args.device, dtype=dtype, clip_seconds=args.clip_seconds)
        with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
            print(table.to_string(index=False), flush=True)
        split = split_cost(table["layers"], table["ms_per_batch"] / 1e3, table["gflops_per_clip"] * 1e9,
                           batch_size=batch_size)
        print(f"  fixed part (feature encoder, projection, positional conv): {split.fixed_time_share:.1%} of the "
              f"full model's time, {split.fixed_flop_share:.1%} of its FLOPs; achieved "
              f"{split.fixed_flop_rate / 1e9:.0f} GFLOP/s in the fixed part, "
              f"{split.layer_flop_rate / 1e9:.0f} GFLOP/s in the transformer layers", flush=True)
        tables.append(table)
    result = pd.concat(tables, ignore_index=True)
    pruned = result[result["layers"] < 12]
    worst = (pruned["time/flop"] - 1).abs().max()
    print(f"largest |time ratio / FLOP ratio - 1| over pruned models: {worst:.1%} (target on GPU: <= 10%)")
    if args.json:
        import json

        settings = {"device": args.device, "dtype": dtype, "batch_size": batch_size, "repeats": repeats,
                    "rounds": rounds, "clip_seconds": args.clip_seconds, "torch": torch.__version__,
                    "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"}
        with open(args.json, "w") as handle:
            json.dump({"settings": settings, "rows": json.loads(result.to_json(orient="records"))}, handle, indent=2)
    return 0


if __name__ == "__main__":
    restart_with_retaining_malloc(sys.argv[1:])
    sys.exit(main())
