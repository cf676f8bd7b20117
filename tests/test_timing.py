"""Timing records: shapes of the figures and the context every figure carries."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification, Wav2Vec2Model

from convexlab.prune import count_parameters, num_transformer_layers, prune
from convexlab.timing import (
    InferenceTiming,
    TrainingTimer,
    compare_depths,
    compare_inference,
    flops_per_clip,
    measure_inference,
    split_cost,
)

TINY = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48, conv_dim=(16, 16),
    conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
    layerdrop=0.0,
)
CONTEXT_KEYS = {"device", "device_name", "dtype", "batch_size", "torch_threads", "torch", "transformers"}


def tiny(seed: int = 0) -> Wav2Vec2Model:
    torch.manual_seed(seed)
    return Wav2Vec2Model(Wav2Vec2Config(**TINY))


def test_inference_record_carries_its_context_and_consistent_figures():
    model = tiny()
    timing = measure_inference(model, batch_size=3, n_repeats=4, n_warmup=1, clip_seconds=0.5)
    assert isinstance(timing, InferenceTiming)
    assert CONTEXT_KEYS <= set(timing.context)
    assert timing.context["device"] == "cpu" and timing.context["dtype"] == "float32"
    assert timing.context["batch_size"] == 3 and timing.context["torch"] == torch.__version__
    assert len(timing.repeats) == 4 and all(t > 0 for t in timing.repeats)
    assert min(timing.repeats) <= timing.seconds_per_batch <= max(timing.repeats)
    assert math.isclose(timing.seconds_per_clip, timing.seconds_per_batch / 3)
    assert 0 <= timing.seconds_per_batch_iqr <= max(timing.repeats) - min(timing.repeats)
    assert timing.n_parameters == count_parameters(model)
    assert timing.n_layers == 4
    assert timing.memory_kind == "cpu_rss_growth_sampled"
    assert timing.peak_memory_bytes is None or timing.peak_memory_bytes >= 0
    assert InferenceTiming.from_dict(timing.to_dict()) == timing


def test_flops_scale_with_clip_length_and_drop_with_pruning():
    model = tiny()
    one = flops_per_clip(model, clip_seconds=1.0)
    two = flops_per_clip(model, clip_seconds=2.0)
    # Convolutions and linear layers are linear in length, attention quadratic: between 2x and 4x.
    assert 1.9 * one < two < 4.0 * one
    pruned = flops_per_clip(prune(copy.deepcopy(model), 1), clip_seconds=1.0)
    empty = flops_per_clip(prune(copy.deepcopy(model), 0), clip_seconds=1.0)
    assert empty < pruned < one
    # Every transformer layer costs the same, so the FLOPs are linear in depth.
    per_layer = pruned - empty
    assert math.isclose(one, empty + 4 * per_layer, rel_tol=1e-6)


def test_compare_inference_interleaves_rounds_and_keeps_names():
    models = {"full": tiny(), "pruned": prune(tiny(), 1)}
    timings = compare_inference(models, batch_size=2, n_repeats=5, rounds=2, n_warmup=1, clip_seconds=0.25)
    assert set(timings) == {"full", "pruned"}
    assert all(len(t.repeats) == 5 for t in timings.values())
    assert timings["full"].context["rounds"] == 2
    assert timings["pruned"].n_layers == 1 and timings["full"].n_layers == 4
    assert timings["pruned"].flops_per_clip < timings["full"].flops_per_clip


def test_compare_depths_times_pruned_copies_and_the_model_itself():
    model = tiny()
    timings = compare_depths(model, [4, 1, 2, 1], batch_size=2, n_repeats=2, rounds=2, n_warmup=1, clip_seconds=0.25)
    assert list(timings) == [1, 2, 4]
    assert [timings[d].n_layers for d in timings] == [1, 2, 4]
    assert timings[1].flops_per_clip < timings[2].flops_per_clip < timings[4].flops_per_clip
    assert num_transformer_layers(model) == 4  # the model serves its own depth, unpruned
    assert list(compare_depths(model, batch_size=1, n_repeats=1, clip_seconds=0.25)) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"depths \[5\] are outside 0..4"):
        compare_depths(model, [2, 5])


def test_classification_models_are_timed_too():
    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(**TINY, num_labels=4, classifier_proj_size=8))
    timing = measure_inference(model, batch_size=2, n_repeats=2, n_warmup=0, clip_seconds=0.25, dtype="bfloat16")
    assert timing.context["dtype"] == "bfloat16"
    assert next(model.parameters()).dtype == torch.bfloat16  # moved in place, as documented


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="batch_size"):
        measure_inference(tiny(), batch_size=0)
    with pytest.raises(ValueError, match=r"Unsupported dtype 'float8'; use one of \['float32', 'bfloat16', 'float16'\]"):
        measure_inference(tiny(), batch_size=1, n_repeats=1, n_warmup=0, clip_seconds=0.25, dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            measure_inference(tiny(), device="cuda")


def test_training_timer_records_epochs_and_context():
    """Drive the callback the way Trainer does, with a fake clock-free state."""
    from types import SimpleNamespace

    timer = TrainingTimer(device="cpu")
    state = SimpleNamespace(global_step=0, epoch=0.0)
    timer.on_train_begin(None, state, None)
    for epoch in range(2):
        timer.on_epoch_begin(None, state, None)
        sum(range(10_000))
        state.global_step += 5
        state.epoch = epoch + 1.0
        timer.on_epoch_end(None, state, None)
    timer.on_train_end(None, state, None)
    record = timer.result(n_samples=40, batch_size=4, dtype="float32")
    assert record.n_steps == 10 and record.epochs == 2.0 and not record.resumed
    assert len(record.epoch_seconds) == 2 and sum(record.epoch_seconds) <= record.train_seconds
    assert math.isclose(record.seconds_per_epoch, record.train_seconds / 2)
    assert math.isclose(record.seconds_per_sample, record.train_seconds / 40)
    assert CONTEXT_KEYS <= set(record.context) and record.context["batch_size"] == 4


# -- the fixed and per-layer parts of the cost -------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_cost_recovers_a_linear_cost(seed):
    rng = np.random.default_rng(seed)
    fixed_s, s_per_layer = rng.uniform(0.05, 0.5), rng.uniform(0.005, 0.05)
    fixed_flops, flops_per_layer = rng.uniform(1e9, 5e9), rng.uniform(2e8, 1e9)
    layers = np.array([2, 4, 8, 12])
    split = split_cost(layers, fixed_s + s_per_layer * layers, fixed_flops + flops_per_layer * layers, batch_size=32)
    assert split.fixed_seconds == pytest.approx(fixed_s) and split.seconds_per_layer == pytest.approx(s_per_layer)
    assert split.n_layers == 12
    assert split.fixed_time_share == pytest.approx(fixed_s / (fixed_s + 12 * s_per_layer))
    assert split.fixed_flop_share == pytest.approx(fixed_flops / (fixed_flops + 12 * flops_per_layer))
    assert split.fixed_flop_rate == pytest.approx(32 * fixed_flops / fixed_s)
    assert split.layer_flop_rate == pytest.approx(32 * flops_per_layer / s_per_layer)


def test_a_slow_fixed_part_explains_a_time_ratio_above_the_flop_ratio():
    # The fixed part runs at half the FLOP rate of the layers.
    layers = np.array([1, 2, 4, 6])
    flops = 4e9 + 0.7e9 * layers
    seconds = (2 * 4e9 + 0.7e9 * layers) / 1e12
    split = split_cost(layers, seconds, flops, batch_size=1)
    assert split.fixed_time_share > split.fixed_flop_share
    assert split.fixed_flop_rate == pytest.approx(split.layer_flop_rate / 2)
    assert seconds[0] / seconds[-1] > flops[0] / flops[-1]


def test_split_cost_rejects_what_it_cannot_fit():
    with pytest.raises(ValueError, match="two depths"):
        split_cost([6, 6], [1.0, 1.1], [1e9, 1e9], batch_size=1)
    with pytest.raises(ValueError, match="one length"):
        split_cost([2, 6], [1.0], [1e9, 2e9], batch_size=1)
    with pytest.raises(ValueError, match="finite"):
        split_cost([2, 6], [1.0, np.nan], [1e9, 2e9], batch_size=1)
