"""Pruned against full: finetune both with the same budget, time both, tabulate the change.

:func:`compare_pruned` is the paper's closing experiment as one call: finetune ``model_name`` for
``task`` in full and pruned at ``layer`` (same data, seed, batch order, epochs and learning rate:
:func:`convexlab.finetune.finetune_for_profile`, so a full run finetuned earlier is reused), then
time the inference of both finetuned classifiers on the same batch, interleaving the two models'
repeats so that a drift of the machine's speed affects both alike. The result is cached in
``cache_path("compare", ...)`` under a key of both runs' keys and the timing settings (:func:`convexlab.cache.stage_key`).

Signs and units (as in the paper's poster table): accuracy change in percentage points
(pruned − full); time, parameter and FLOP changes relative to the full model (−0.25 is 25 %
less).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from convexlab import distributed
from convexlab._progress import transformers_bars
from convexlab.cache import cache_path, load_json, profile_params, save_json, stage_key
from convexlab.finetune import FinetuneResult, finetune_for_profile
from convexlab.profiles import Profile, get_profile
from convexlab.timing import InferenceTiming, compare_inference

__all__ = ["PruneComparison", "compare_pruned"]

COMPARE_VERSION = 1  # bump when the comparison changes meaning, so cached ones are recomputed
# What the comparison reads of the profile besides its two runs (whose keys carry the rest): the
# timing batch and repeats, where and in which dtype it times, and the seed of the timed batch.
COMPARE_FIELDS = ("timing_batch_size", "timing_repeats", "device", "dtype", "seed")


def _relative(new: float, old: float) -> float:
    return (new - old) / old if old else float("nan")


@dataclass
class PruneComparison:
    """A finetuned full model against the same model pruned at ``layer`` and finetuned alike."""

    model_name: str  # the pretrained model both runs start from
    task: str  # "word" or "speaker"
    layer: int  # transformer layers kept by the pruned model (1..layer)
    n_layers: int  # transformer layers of the full model
    full: FinetuneResult  # the full model's finetuning run
    pruned: FinetuneResult  # the pruned model's finetuning run
    full_inference: InferenceTiming  # inference cost of the finetuned full classifier
    pruned_inference: InferenceTiming  # inference cost of the finetuned pruned classifier
    profile: str  # name of the profile the runs used
    key: str  # cache key
    context: dict = field(default_factory=dict)  # timing settings and the profile's fields

    # -- the paper's figures, derived --
    @property
    def accuracy_full(self) -> float:
        return self.full.accuracy

    @property
    def accuracy_pruned(self) -> float:
        return self.pruned.accuracy

    @property
    def accuracy_change(self) -> float:
        """pruned − full accuracy, as a fraction (0.0122 is +1.22 percentage points)."""
        return self.pruned.accuracy - self.full.accuracy

    @property
    def macro_f1_change(self) -> float:
        return self.pruned.macro_f1 - self.full.macro_f1

    @property
    def train_time_change(self) -> float:
        """Relative change of the training wall time (−0.478 is 47.8 % less)."""
        return _relative(self.pruned.train_seconds, self.full.train_seconds)

    @property
    def inference_time_change(self) -> float:
        """Relative change of the median inference time per batch."""
        return _relative(self.pruned_inference.seconds_per_batch, self.full_inference.seconds_per_batch)

    @property
    def parameters_change(self) -> float:
        return _relative(self.pruned_inference.n_parameters, self.full_inference.n_parameters)

    @property
    def flops_change(self) -> float:
        return _relative(self.pruned_inference.flops_per_clip, self.full_inference.flops_per_clip)

    @property
    def table(self) -> pd.DataFrame:
        """The poster table with absolute figures: one row per quantity, columns full, pruned,
        change and unit of the change ("pp" for accuracy and F1, "%" for the rest)."""
        f, p, fi, pi = self.full, self.pruned, self.full_inference, self.pruned_inference
        rows = [
            ("accuracy (%)", 100 * f.accuracy, 100 * p.accuracy, 100 * self.accuracy_change, "pp"),
            ("macro-F1 (%)", 100 * f.macro_f1, 100 * p.macro_f1, 100 * self.macro_f1_change, "pp"),
            ("training time (s)", f.train_seconds, p.train_seconds, 100 * self.train_time_change, "%"),
            (f"inference time (ms per batch of {fi.batch_size})", 1e3 * fi.seconds_per_batch,
             1e3 * pi.seconds_per_batch, 100 * self.inference_time_change, "%"),
            ("parameters (M)", fi.n_parameters / 1e6, pi.n_parameters / 1e6, 100 * self.parameters_change, "%"),
            ("GFLOPs per clip", fi.flops_per_clip / 1e9, pi.flops_per_clip / 1e9, 100 * self.flops_change, "%"),
        ]
        table = pd.DataFrame(rows, columns=["quantity", "full", "pruned", "change", "unit"]).set_index("quantity")
        table.attrs.update(model=self.model_name, task=self.task, layer=self.layer, n_layers=self.n_layers)
        return table

    def to_dict(self) -> dict:
        data = {
            "model_name": self.model_name, "task": self.task, "layer": self.layer, "n_layers": self.n_layers,
            "full": self.full.to_dict(), "pruned": self.pruned.to_dict(),
            "full_inference": self.full_inference.to_dict(), "pruned_inference": self.pruned_inference.to_dict(),
            "profile": self.profile, "key": self.key, "context": self.context,
        }
        # The derived figures too, so a JSON reader (and the book's tables) need not recompute them.
        for name in ("accuracy_full", "accuracy_pruned", "accuracy_change", "macro_f1_change", "train_time_change",
                     "inference_time_change", "parameters_change", "flops_change"):
            data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PruneComparison":
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        data["full"], data["pruned"] = FinetuneResult.from_dict(data["full"]), FinetuneResult.from_dict(data["pruned"])
        data["full_inference"] = InferenceTiming.from_dict(data["full_inference"])
        data["pruned_inference"] = InferenceTiming.from_dict(data["pruned_inference"])
        return cls(**data)


def _compare_key(full_key: str, pruned_key: str, profile: Any, *, timing_batch_size: int | None = None,
                 timing_repeats: int | None = None, timing_rounds: int = 2) -> str:
    """A comparison's key: its two runs' keys plus the timing settings (:data:`COMPARE_FIELDS`, overridden)."""
    params = profile_params(profile, COMPARE_FIELDS) | {"timing_rounds": timing_rounds}
    if timing_batch_size:
        params["timing_batch_size"] = timing_batch_size
    if timing_repeats:
        params["timing_repeats"] = timing_repeats
    return stage_key("compare", COMPARE_VERSION, inputs={"full": full_key, "pruned": pruned_key}, params=params)


def compare_pruned(
    model_name: str,
    task: str,
    layer: int,
    *,
    profile: Any = "lite",
    timing_batch_size: int | None = None,
    timing_repeats: int | None = None,
    timing_rounds: int = 2,
    cache: bool = True,
) -> PruneComparison:
    """Finetune ``model_name`` full and pruned at ``layer`` for ``task``; compare accuracy and cost.

    ``profile`` (a :class:`convexlab.Profile` or preset name) gives the data, finetuning
    hyper-parameters, device and dtype. Inference is timed on batches of ``timing_batch_size``
    one-second clips (default ``profile.timing_batch_size``), ``timing_repeats`` timed passes per
    model (default ``profile.timing_repeats``) split over ``timing_rounds`` interleaved rounds.
    """
    from transformers import AutoModelForAudioClassification

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    batch_size = timing_batch_size or profile.timing_batch_size
    repeats = timing_repeats or profile.timing_repeats

    full = finetune_for_profile(model_name, task, profile)
    if not 1 <= layer <= full.num_layers:
        raise ValueError(f"layer={layer} is outside 1..{full.num_layers}, the transformer layers of {model_name}")
    pruned = finetune_for_profile(model_name, task, profile, num_layers=layer)

    timing = {"batch_size": batch_size, "repeats": repeats, "rounds": timing_rounds, "device": profile.device,
              "dtype": profile.dtype}
    key = _compare_key(full.key, pruned.key, profile, timing_batch_size=batch_size, timing_repeats=repeats,
                       timing_rounds=timing_rounds)
    path = cache_path("compare", f"{full.run_dir.name.rsplit('-', 1)[0]}-L{layer}-{key}.json")
    if distributed.broadcast_object(cache and path.is_file() if distributed.is_main() else None):
        return PruneComparison.from_dict(load_json(path))
    if not distributed.is_main():  # inference is timed once, on rank 0, with the device to itself
        distributed.barrier()
        return PruneComparison.from_dict(load_json(path))

    with transformers_bars():
        models = {
            "full": AutoModelForAudioClassification.from_pretrained(full.model_dir),
            "pruned": AutoModelForAudioClassification.from_pretrained(pruned.model_dir),
        }
    timings = compare_inference(models, batch_size=batch_size, n_repeats=repeats, rounds=timing_rounds,
                                device=profile.device, dtype=profile.dtype, seed=profile.seed)
    comparison = PruneComparison(
        model_name=model_name,
        task=task,
        layer=layer,
        n_layers=full.num_layers,
        full=full,
        pruned=pruned,
        full_inference=timings["full"],
        pruned_inference=timings["pruned"],
        profile=profile.name,
        key=key,
        context={"timing": timing, "profile": profile.to_dict()},
    )
    save_json(path, comparison.to_dict())
    distributed.barrier()
    return comparison
