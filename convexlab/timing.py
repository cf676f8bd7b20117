"""Honest cost figures: inference time, training time, memory, parameters and FLOPs.

Every figure is stored with the context it was measured in (device and its name, batch size,
dtype, thread count, torch/transformers versions), because a time without its context cannot be
compared with anything.

Inference (:func:`measure_inference`): random one-second clips (the cost of a forward pass does
not depend on the audio or the weights), ``n_warmup`` untimed forwards (allocator, kernel
selection, caches), then ``n_repeats`` timed forwards, each bracketed by a device
synchronisation on CUDA; the median and interquartile range summarise them. FLOPs per clip are
counted once with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts matrix
multiplications, convolutions and attention (element-wise operations and norms are not counted;
they are a small share of these models). Peak memory is the CUDA allocator's peak on a GPU and
the sampled growth of the process's resident memory on a CPU (``memory_kind`` says which).

Where pruning's time saving falls short of its FLOP saving (:func:`split_cost`): a least-squares
line through the (layers, time) and (layers, FLOPs) points of one model timed at several depths
splits its cost into a fixed part (feature encoder, feature projection, positional convolution)
and a part per transformer layer, each with its own FLOP rate.

Training (:class:`TrainingTimer`): a ``transformers.TrainerCallback`` that records the wall time
of ``Trainer.train`` and of each epoch, synchronising CUDA at the boundaries.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback

from convexlab.families import SAMPLE_RATE
from convexlab.models import dtype_name, torch_dtype
from convexlab.prune import count_parameters, num_transformer_layers, prune

__all__ = [
    "InferenceTiming",
    "TrainingTiming",
    "CostSplit",
    "split_cost",
    "TrainingTimer",
    "measure_inference",
    "compare_inference",
    "compare_depths",
    "flops_per_clip",
    "timing_context",
    "describe_inference",
]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def timing_context(*, device: str | torch.device, dtype: str | torch.dtype, batch_size: int | None) -> dict:
    """What a figure was measured with: device, its name, dtype, batch size, threads, versions."""
    import transformers

    device = torch.device(device)
    return {
        "device": str(device),
        "device_name": _device_name(device),
        "dtype": dtype_name(dtype),
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
    }


@dataclass
class InferenceTiming:
    """Inference cost of one model at one batch size and dtype."""

    seconds_per_batch: float  # median wall time of one forward pass over a batch
    seconds_per_batch_iqr: float  # interquartile range of the per-batch times
    seconds_per_clip: float  # seconds_per_batch / batch_size
    seconds_per_clip_iqr: float  # seconds_per_batch_iqr / batch_size
    repeats: list[float]  # every timed forward pass, seconds, in order
    batch_size: int  # clips per forward pass
    clip_seconds: float  # length of each clip
    n_warmup: int  # untimed forward passes before the repeats
    peak_memory_bytes: int | None  # see memory_kind; None when it could not be measured
    memory_kind: str  # "cuda_max_allocated" or "cpu_rss_growth_sampled"
    n_parameters: int  # all parameters of the model
    n_layers: int | None  # transformer layers the model runs (None: not a wav2vec2-style model)
    flops_per_clip: float  # FLOPs of one forward pass over one clip (FlopCounterMode)
    context: dict = field(default_factory=dict)  # device, dtype, batch size, threads, versions

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InferenceTiming":
        return cls(**data)


@dataclass
class TrainingTiming:
    """Wall time of one ``Trainer.train`` call."""

    train_seconds: float  # wall time from the start to the end of training
    epoch_seconds: list[float]  # wall time of each (possibly partial) epoch, in order
    epochs: float  # epochs trained (may be fractional)
    seconds_per_epoch: float  # train_seconds / epochs
    seconds_per_sample: float  # train_seconds / training samples processed
    n_samples: int  # training samples processed (clips x epochs, counting repeats)
    n_steps: int  # optimizer steps
    resumed: bool  # True if training resumed from a checkpoint (times cover the resumed part only)
    context: dict = field(default_factory=dict)  # device, dtype, batch size, threads, versions

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingTiming":
        return cls(**data)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ResidentMemorySampler:
    """Peak growth of this process's resident memory, sampled every ``interval`` seconds.

    CPU tensors have no allocator statistics, so sampling RSS is the available measure; it is
    approximate (short peaks can fall between samples, freed memory may stay resident).
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.peak_growth: int | None = None
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _run(self, baseline: int) -> None:
        peak = baseline
        while not self._stop.is_set():
            peak = max(peak, self._rss() or peak)
            time.sleep(self.interval)
        self.peak_growth = max(peak, self._rss() or peak) - baseline

    @contextlib.contextmanager
    def running(self) -> Iterator["_ResidentMemorySampler"]:
        baseline = self._rss()
        if baseline is None:  # not Linux: no cheap RSS reading, report None
            yield self
            return
        thread = threading.Thread(target=self._run, args=(baseline,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def _random_clips(batch_size: int, clip_seconds: float, *, device, dtype, seed: int) -> torch.Tensor:
    """Seeded white noise, shape (batch_size, clip_seconds * 16000)."""
    generator = np.random.default_rng(seed)
    audio = generator.standard_normal((batch_size, int(round(clip_seconds * SAMPLE_RATE))), dtype=np.float32)
    return torch.from_numpy(audio).to(device=device, dtype=dtype)


def flops_per_clip(model: nn.Module, *, clip_seconds: float = 1.0, device="cpu", dtype=torch.float32) -> float:
    """FLOPs of one forward pass over one clip (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    clip = _random_clips(1, clip_seconds, device=device, dtype=torch_dtype(dtype), seed=0)
    counter = FlopCounterMode(display=False)
    # no_grad, not inference_mode: the weight-normed positional conv fails under
    # FlopCounterMode + inference_mode (torch 2.11).
    with torch.no_grad(), counter:
        model(input_values=clip)
    return float(counter.get_total_flops())


def _timed_forwards(model: nn.Module, clips: torch.Tensor, *, device: torch.device, n_warmup: int,
                    n_repeats: int) -> tuple[list[float], int | None]:
    """``n_warmup`` untimed then ``n_repeats`` timed forward passes; (seconds of each, peak memory)."""

    def forward() -> float:
        _synchronize(device)
        start = time.perf_counter()
        model(input_values=clips)
        _synchronize(device)
        return time.perf_counter() - start

    sampler = _ResidentMemorySampler()
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            memory_scope = contextlib.nullcontext()
        else:
            memory_scope = sampler.running()
        with memory_scope:
            for _ in range(n_warmup):
                forward()
            repeats = [forward() for _ in range(n_repeats)]
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else sampler.peak_growth
    return repeats, peak


def compare_inference(
    models: Mapping[str, nn.Module],
    *,
    batch_size: int = 8,
    n_repeats: int = 6,
    rounds: int = 2,
    n_warmup: int = 2,
    clip_seconds: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, InferenceTiming]:
    """Time several models on the same batch, interleaved: ``rounds`` rounds, each giving every
    model ``n_repeats / rounds`` timed passes (warm-up before each model's first round and one
    pass before the others), so a drift of the machine's speed affects all models alike.

    Models are put in eval mode and moved to ``device`` and ``dtype`` in place. Input: seeded
    noise of shape (batch_size, clip_seconds * 16000). Returns one :class:`InferenceTiming` per
    model, under the same names.
    """
    if batch_size < 1 or n_repeats < 1 or n_warmup < 0 or rounds < 1:
        raise ValueError(
            f"Need batch_size >= 1, n_repeats >= 1, rounds >= 1 and n_warmup >= 0; got batch_size={batch_size}, "
            f"n_repeats={n_repeats}, rounds={rounds}, n_warmup={n_warmup}"
        )
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available; use device='cpu'")
    dtype = torch_dtype(dtype)
    models = {name: model.eval().to(device=device, dtype=dtype) for name, model in models.items()}
    clips = _random_clips(batch_size, clip_seconds, device=device, dtype=dtype, seed=seed)
    per_round = [n_repeats // rounds + (1 if r < n_repeats % rounds else 0) for r in range(rounds)]
    repeats: dict[str, list[float]] = {name: [] for name in models}
    peaks: dict[str, list[int]] = {name: [] for name in models}
    for round_index, count in enumerate(per_round):
        if count == 0:
            continue
        for name, model in models.items():
            times, peak = _timed_forwards(model, clips, device=device, n_repeats=count,
                                          n_warmup=n_warmup if round_index == 0 else 1)
            repeats[name] += times
            if peak is not None:
                peaks[name].append(peak)
    context = timing_context(device=device, dtype=dtype, batch_size=batch_size)
    return {
        name: _summarise(model, repeats[name], max(peaks[name]) if peaks[name] else None, batch_size=batch_size,
                         clip_seconds=clip_seconds, n_warmup=n_warmup, device=device, dtype=dtype,
                         context=context | {"rounds": rounds})
        for name, model in models.items()
    }


def compare_depths(model: nn.Module, depths: Sequence[int] | None = None, **timing) -> dict[int, InferenceTiming]:
    """Time ``model`` cut to each of ``depths`` transformer layers (default: 1..L), interleaved on one batch.

    The model itself serves its own depth; the other depths are pruned copies. ``timing`` goes to
    :func:`compare_inference` (batch size, repeats, rounds, device, dtype, ...). Returns one
    :class:`InferenceTiming` per depth.
    """
    n_layers = num_transformer_layers(model)
    depths = sorted(set(depths)) if depths is not None else list(range(1, n_layers + 1))
    bad = [d for d in depths if not 0 <= d <= n_layers]
    if bad:
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        raise ValueError(f"depths {bad} are outside 0..{n_layers}, the layers {name} has")
    models = {str(d): model if d == n_layers else prune(copy.deepcopy(model), d) for d in depths}
    return {int(name): result for name, result in compare_inference(models, **timing).items()}


def _summarise(model, repeats, peak, *, batch_size, clip_seconds, n_warmup, device, dtype, context) -> InferenceTiming:
    median = statistics.median(repeats)
    q25, q75 = np.percentile(repeats, [25, 75])
    try:
        n_layers = num_transformer_layers(model)
    except TypeError:
        n_layers = None
    return InferenceTiming(
        seconds_per_batch=float(median),
        seconds_per_batch_iqr=float(q75 - q25),
        seconds_per_clip=float(median / batch_size),
        seconds_per_clip_iqr=float((q75 - q25) / batch_size),
        repeats=[float(r) for r in repeats],
        batch_size=batch_size,
        clip_seconds=clip_seconds,
        n_warmup=n_warmup,
        peak_memory_bytes=peak,
        memory_kind="cuda_max_allocated" if device.type == "cuda" else "cpu_rss_growth_sampled",
        n_parameters=count_parameters(model),
        n_layers=n_layers,
        flops_per_clip=flops_per_clip(model, clip_seconds=clip_seconds, device=device, dtype=dtype),
        context=context,
    )


def measure_inference(
    model: nn.Module,
    *,
    batch_size: int = 8,
    n_repeats: int = 5,
    n_warmup: int = 2,
    clip_seconds: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    seed: int = 0,
) -> InferenceTiming:
    """Time ``model``'s forward pass on a batch of ``batch_size`` clips of ``clip_seconds``.

    The model is put in eval mode and moved to ``device`` and ``dtype`` in place. Input: seeded
    noise of shape (batch_size, clip_seconds * 16000). The defaults are sized for the lite book
    (a second or two per miniature model on a small CPU); the paper's setting is
    ``batch_size=32, n_repeats=20, n_warmup=3`` on a GPU.
    """
    return compare_inference({"model": model}, batch_size=batch_size, n_repeats=n_repeats, rounds=1,
                             n_warmup=n_warmup, clip_seconds=clip_seconds, device=device, dtype=dtype,
                             seed=seed)["model"]


class TrainingTimer(TrainerCallback):
    """Records the wall time of ``Trainer.train`` and of each epoch (CUDA synchronised).

    Pass it in ``Trainer(callbacks=[timer])``; after training, :meth:`result` gives a
    :class:`TrainingTiming`.
    """

    def __init__(self, *, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._train_start: float | None = None
        self._epoch_start: float | None = None
        self.train_seconds: float | None = None
        self.epoch_seconds: list[float] = []
        self._start_step = 0
        self._end_step = 0
        self._start_epoch = 0.0
        self._end_epoch = 0.0

    def _now(self) -> float:
        _synchronize(self.device)
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_start = self._now()
        self._start_step, self._start_epoch = state.global_step, float(state.epoch or 0.0)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_start = self._now()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._epoch_start is not None:
            self.epoch_seconds.append(self._now() - self._epoch_start)
            self._epoch_start = None

    def on_train_end(self, args, state, control, **kwargs):
        self.train_seconds = self._now() - self._train_start
        self._end_step, self._end_epoch = state.global_step, float(state.epoch or 0.0)

    def result(self, *, n_samples: int, batch_size: int, dtype: str | torch.dtype) -> TrainingTiming:
        """The measured times; ``n_samples`` is the number of training samples processed."""
        if self.train_seconds is None:
            raise RuntimeError("TrainingTimer.result() called before Trainer.train() finished")
        epochs = self._end_epoch - self._start_epoch
        return TrainingTiming(
            train_seconds=self.train_seconds,
            epoch_seconds=list(self.epoch_seconds),
            epochs=epochs,
            seconds_per_epoch=self.train_seconds / epochs if epochs > 0 else float("nan"),
            seconds_per_sample=self.train_seconds / n_samples if n_samples > 0 else float("nan"),
            n_samples=int(n_samples),
            n_steps=self._end_step - self._start_step,
            resumed=self._start_step > 0,
            context=timing_context(device=self.device, dtype=dtype, batch_size=batch_size),
        )


def describe_inference(t: InferenceTiming) -> str:
    """A one-line summary of an :class:`InferenceTiming`, for notebooks and logs."""
    return (
        f"{t.seconds_per_batch * 1e3:.1f} ms/batch (IQR {t.seconds_per_batch_iqr * 1e3:.1f}) at batch "
        f"{t.batch_size}, {t.context.get('dtype')} on {t.context.get('device_name')}; "
        f"{t.n_parameters / 1e6:.2f} M parameters, {t.flops_per_clip / 1e9:.2f} GFLOPs/clip"
    )


@dataclass
class CostSplit:
    """A model's inference cost split into a fixed part and a part per transformer layer.

    Fitted by least squares over the depths a model was timed at; the fixed part is what runs
    whatever the depth (feature encoder, feature projection, positional convolution).
    """

    fixed_seconds: float  # per batch, the fixed part
    seconds_per_layer: float  # per batch, one transformer layer
    fixed_flops: float  # per clip, the fixed part
    flops_per_layer: float  # per clip, one transformer layer
    n_layers: int  # the deepest depth timed (the full model)
    batch_size: int  # clips per timed batch

    @property
    def fixed_time_share(self) -> float:
        """Share of the full model's time spent in the fixed part."""
        return self.fixed_seconds / (self.fixed_seconds + self.n_layers * self.seconds_per_layer)

    @property
    def fixed_flop_share(self) -> float:
        """Share of the full model's FLOPs in the fixed part."""
        return self.fixed_flops / (self.fixed_flops + self.n_layers * self.flops_per_layer)

    @property
    def fixed_flop_rate(self) -> float:
        """FLOP/s achieved in the fixed part."""
        return self.batch_size * self.fixed_flops / self.fixed_seconds

    @property
    def layer_flop_rate(self) -> float:
        """FLOP/s achieved in a transformer layer."""
        return self.batch_size * self.flops_per_layer / self.seconds_per_layer


def split_cost(layers, seconds_per_batch, flops_per_clip, *, batch_size: int) -> CostSplit:
    """Fit ``seconds = fixed + layers * per_layer`` and the same for FLOPs; a :class:`CostSplit`.

    ``layers``, ``seconds_per_batch`` and ``flops_per_clip``: one value per timed depth (shape
    (K,), K >= 2 distinct depths). When the fixed part runs at a lower FLOP rate than the layers,
    its share of the time exceeds its share of the FLOPs, and a shallow model's time ratio stays
    above its FLOP ratio by about that difference.
    """
    layers = np.asarray(layers, dtype=float)
    seconds = np.asarray(seconds_per_batch, dtype=float)
    flops = np.asarray(flops_per_clip, dtype=float)
    if not layers.shape == seconds.shape == flops.shape or layers.ndim != 1:
        raise ValueError(f"layers, seconds_per_batch and flops_per_clip must be 1-D and of one length; got shapes "
                         f"{layers.shape}, {seconds.shape}, {flops.shape}")
    if len(np.unique(layers)) < 2:
        raise ValueError(f"A fixed part and a part per layer need timings at two depths or more; got depths {layers.tolist()}")
    if not (np.isfinite(seconds).all() and np.isfinite(flops).all()):
        raise ValueError("seconds_per_batch and flops_per_clip must be finite")
    seconds_per_layer, fixed_seconds = np.polyfit(layers, seconds, 1)
    flops_per_layer, fixed_flops = np.polyfit(layers, flops, 1)
    return CostSplit(fixed_seconds=float(fixed_seconds), seconds_per_layer=float(seconds_per_layer),
                     fixed_flops=float(fixed_flops), flops_per_layer=float(flops_per_layer),
                     n_layers=int(layers.max()), batch_size=batch_size)
