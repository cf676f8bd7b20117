"""Does pruning turn into wall-clock savings? Inference time of base models pruned at 2, 4, 8, 12.

For each base architecture (wav2vec2, WavLM, HuBERT; ccc-wav2vec 2.0 is the wav2vec2 network)
with random weights from its default config (no download: the cost of a forward pass does not
depend on the weights), time the model pruned at each depth against the full 12-layer model in
the same process, interleaving the models' repeats, and print the measured time ratio next to
the FLOP ratio (FlopCounterMode). Pruning that pays off in wall-clock time has a time ratio
close to its FLOP ratio; the convolutional feature encoder is a fixed cost, so neither ratio
goes to zero.

    python benchmarks/prune_speed.py --quick                    # CPU, batch 8, few repeats
    python benchmarks/prune_speed.py                            # CPU, batch 32
    python benchmarks/prune_speed.py --device cuda --dtype bfloat16 --repeats 20   # GPU
"""

from __future__ import annotations

import argparse
import copy
import sys

import pandas as pd
import torch
from transformers import AutoModel

from convexlab.models import base_config
from convexlab.prune import prune
from convexlab.timing import compare_inference

ARCHITECTURES = ("wav2vec2", "wavlm", "hubert")  # ccc-wav2vec2 shares wav2vec2's network


def benchmark(family: str, *, depths, batch_size, repeats, rounds, device, dtype, clip_seconds) -> pd.DataFrame:
    config = base_config(family)
    torch.manual_seed(0)
    full = AutoModel.from_config(config)
    n_layers = config.num_hidden_layers
    models = {depth: (full if depth == n_layers else prune(copy.deepcopy(full), depth)) for depth in depths}
    timings = compare_inference(models, batch_size=batch_size, n_repeats=repeats, rounds=rounds, n_warmup=2,
                                device=device, dtype=dtype, clip_seconds=clip_seconds)
    baseline = timings[n_layers]
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
    args = parser.parse_args(argv)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    batch_size = args.batch_size or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 10)
    rounds = args.rounds or (1 if args.quick else 2)
    depths = sorted(set(args.depths) | {12})

    print(f"device {args.device} ({torch.get_num_threads()} threads), dtype {dtype}, batch {batch_size} x "
          f"{args.clip_seconds:g} s clips, {repeats} repeats in {rounds} interleaved round(s); "
          f"torch {torch.__version__}", flush=True)
    tables = []
    for family in args.families:
        table = benchmark(family, depths=depths, batch_size=batch_size, repeats=repeats, rounds=rounds,
                          device=args.device, dtype=dtype, clip_seconds=args.clip_seconds)
        with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
            print(table.to_string(index=False), flush=True)
        tables.append(table)
    result = pd.concat(tables, ignore_index=True)
    pruned = result[result["layers"] < 12]
    worst = (pruned["time/flop"] - 1).abs().max()
    print(f"largest |time ratio / FLOP ratio - 1| over pruned models: {worst:.1%} (target on GPU: <= 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
