"""Extraction throughput: clips per second for each base architecture, and the lite profile's cost.

    python benchmarks/extract.py                      # CPU fp32, batch 32, 2 timed batches
    python benchmarks/extract.py --device cuda --dtype bfloat16 --batches 10
    python benchmarks/extract.py --skip-base          # only the lite corpus + miniatures

Each base architecture (wav2vec2, WavLM, HuBERT; ccc-wav2vec 2.0 is a wav2vec2 network) is built
with random weights from its library-default config, which is the base checkpoint's shape, so a
forward pass costs what the real checkpoint costs; nothing is downloaded. What is timed is
:func:`convexlab.extract.pooled_hidden_states`: the forward pass with all hidden states plus the
masked mean pooling, on one-second clips.

The FLOP-bound ratio: the model's FLOPs per batch are counted with
``torch.utils.flop_counter.FlopCounterMode``; the machine's attainable rate is measured in the
same process with a large matrix multiplication in the same dtype on the same device. The ratio
(model FLOP/s over matmul FLOP/s) says how close extraction runs to the hardware's limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexlab.extract import extract_layers, pooled_hidden_states  # noqa: E402
from convexlab.models import FAMILIES, base_config, load_model, torch_dtype  # noqa: E402

BASE_ARCHITECTURES = ("wav2vec2", "wavlm", "hubert")  # ccc-wav2vec2 has wav2vec2's network


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, *, size: int, repeats: int = 3) -> float:
    """Attainable FLOP/s of a (size x size) @ (size x size) matmul: the FLOP-bound baseline."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    times = _timed(lambda: a @ b, device, repeats)
    return 2 * size**3 / min(times)


def forward_flops(model, inputs: torch.Tensor) -> int:
    """FLOPs of one pooled forward pass, as torch's FlopCounterMode counts them."""
    counter = FlopCounterMode(display=False)
    # no_grad, not inference_mode: under inference_mode the weight-norm parametrisation of the
    # positional conv fails inside FlopCounterMode (torch 2.11)
    with counter, torch.no_grad():
        pooled_hidden_states(model, inputs)
    return counter.get_total_flops()


def benchmark_architecture(family: str, *, device, dtype, batch_size: int, batches: int) -> dict:
    torch.manual_seed(0)
    model = AutoModel.from_config(base_config(family)).to(device=device, dtype=dtype).eval()
    inputs = torch.randn(batch_size, 16_000, device=device, dtype=dtype)
    flops = forward_flops(model, inputs[:2]) * batch_size / 2  # counting the full batch costs a full pass
    with torch.inference_mode():
        pooled_hidden_states(model, inputs[:2])  # warm-up (allocator, kernels) on a small batch

        def run():
            pooled_hidden_states(model, inputs)

        times = _timed(run, device, batches)
    median = statistics.median(times)
    return dict(
        family=family,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        layers=model.config.num_hidden_layers,
        clips_per_s=batch_size / median,
        gflop_per_clip=flops / batch_size / 1e9,
        achieved_tflops=flops / median / 1e12,
        seconds=times,
    )


def benchmark_lite(*, device, dtype, batch_size: int, threads_note: str) -> None:
    """Time to generate the lite corpus from scratch and extract it with the four miniatures."""
    import os

    from convexlab.data import load_task
    from convexlab.profiles import get_profile
    from convexlab.synth import synthetic_corpus

    with tempfile.TemporaryDirectory() as cache:
        os.environ["CONVEXLAB_CACHE"] = cache  # a fresh cache: nothing is reused
        profile = get_profile("lite-synthetic")
        start, cpu_start = time.perf_counter(), time.process_time()
        synthetic_corpus(n_words=profile.n_words, n_speakers=profile.n_speakers,
                         n_repetitions=profile.n_repetitions, seed=profile.seed, progress=False)
        generate_s, generate_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        dataset = load_task("word", profile)
        # CPU seconds beside wall seconds: on a shared machine the wall time mostly measures the others
        print(f"\nlite corpus: {profile.n_words} words x {profile.n_speakers} speakers x {profile.n_repetitions} "
              f"repetitions = {len(dataset)} clips generated in {generate_s:.1f} s wall, {generate_cpu:.1f} s CPU")
        print(f"extraction at batch {batch_size}, {threads_note}:")
        total = 0.0
        for name in profile.models:
            model = load_model(name, pretrained=False, device=device, dtype=dtype)  # same cost as pretrained
            start, cpu_start = time.perf_counter(), time.process_time()
            result = extract_layers(model, dataset, batch_size=batch_size, device=device, dtype=dtype,
                                    progress=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            total += seconds
            print(f"  {name:<18} {tuple(result.embeddings.shape)} in {seconds:5.1f} s wall, {cpu:5.1f} s CPU "
                  f"({len(dataset) / seconds:4.0f} clips/s wall; incl. reading audio and writing the cache)")
            start = time.perf_counter()
            extract_layers(model, dataset, batch_size=batch_size, device=device, dtype=dtype, progress=False)
            print(f"  {'':<18} cache hit in {time.perf_counter() - start:.2f} s")
        print(f"  all four miniatures: {total:.1f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2, help="timed batches per architecture")
    parser.add_argument("--matmul-size", type=int, default=None, help="size of the baseline matmul")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--skip-base", action="store_true", help="skip the base architectures")
    parser.add_argument("--skip-lite", action="store_true", help="skip the lite corpus timing")
    parser.add_argument("--json", default=None, help="also write the base architectures' figures to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; dtype {str(dtype).removeprefix('torch.')}; torch {torch.__version__}; "
          f"base architectures at batch {args.batch_size} one-second clips")

    if not args.skip_base:
        size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
        peak = matmul_flops_per_second(device, dtype, size=size)
        print(f"FLOP-bound baseline: {size}x{size} matmul at {peak / 1e12:.3f} TFLOP/s (same process, same dtype)\n")
        print(f"{'architecture':<14}{'params':>9}{'layers':>7}{'GFLOP/clip':>12}{'clips/s':>10}"
              f"{'TFLOP/s':>9}{'of bound':>10}   batch times (s)")
        rows = []
        for family in BASE_ARCHITECTURES:
            r = benchmark_architecture(family, device=device, dtype=dtype, batch_size=args.batch_size,
                                       batches=args.batches)
            rows.append(r)
            print(f"{r['family']:<14}{r['params_m']:>8.1f}M{r['layers']:>7}{r['gflop_per_clip']:>12.2f}"
                  f"{r['clips_per_s']:>10.1f}{r['achieved_tflops']:>9.3f}{r['achieved_tflops'] * 1e12 / peak:>10.1%}"
                  f"   {', '.join(f'{t:.2f}' for t in r['seconds'])}")
        print(f"(ccc-wav2vec2 = the wav2vec2 network; {FAMILIES['ccc-wav2vec2'].base_id} costs the same)")
        if args.json:
            import json

            with open(args.json, "w") as handle:
                json.dump({"settings": {"device": where, "dtype": str(dtype).removeprefix("torch."),
                                        "batch_size": args.batch_size, "batches": args.batches,
                                        "torch": torch.__version__, "matmul_tflops": peak / 1e12},
                           "rows": rows}, handle, indent=2, default=str)

    if not args.skip_lite:
        benchmark_lite(device=device, dtype=dtype, batch_size=16,
                       threads_note=f"{torch.get_num_threads()} torch threads")


if __name__ == "__main__":
    main()
