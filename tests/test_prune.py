"""prune(): exactness against the full model's hidden states, parameters, save/reload."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    AutoModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMForSequenceClassification,
    WavLMModel,
)

from convexlab.prune import count_parameters, num_transformer_layers, prune

N_LAYERS = 4

TINY = dict(
    hidden_size=32,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=2,
    intermediate_size=48,
    conv_dim=(16, 16),
    conv_stride=(5, 4),
    conv_kernel=(10, 8),
    num_conv_pos_embeddings=8,
    num_conv_pos_embedding_groups=2,
    classifier_proj_size=16,
    layerdrop=0.0,
)

ARCHITECTURES = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "wavlm": (WavLMConfig, WavLMModel),
    "hubert": (HubertConfig, HubertModel),
}


def tiny_model(family: str, *, stable: bool, seed: int = 0, **overrides):
    config_class, model_class = ARCHITECTURES[family]
    config = config_class(
        **TINY,
        do_stable_layer_norm=stable,
        feat_extract_norm="layer" if stable else "group",
        **overrides,
    )
    torch.manual_seed(seed)
    return model_class(config).eval()


def audio(batch: int = 2, samples: int = 4000, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def run(model, x):
    with torch.no_grad():
        return model(input_values=x, output_hidden_states=True)


CASES = [(family, stable) for family in ARCHITECTURES for stable in (False, True)]


@pytest.mark.parametrize("family,stable", CASES)
def test_hidden_states_before_the_cut_are_unchanged(family, stable):
    model = tiny_model(family, stable=stable)
    x = audio()
    full = run(model, x)
    assert len(full.hidden_states) == N_LAYERS + 1
    for layer in range(0, N_LAYERS + 1):
        pruned_model = prune(copy.deepcopy(model), layer)
        pruned = run(pruned_model, x)
        assert num_transformer_layers(pruned_model) == layer
        assert pruned_model.config.num_hidden_layers == layer
        # With no layer left nothing is recorded; otherwise states 0..L are the full model's.
        assert len(pruned.hidden_states) == (layer + 1 if layer else 0)
        for mine, theirs in zip(pruned.hidden_states, full.hidden_states[: layer + 1]):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family,stable", CASES)
def test_last_hidden_state_is_full_hidden_state_at_the_cut(family, stable):
    """Post-LN: last_hidden_state == full.hidden_states[L]; stable-LN: the final norm of it."""
    model = tiny_model(family, stable=stable)
    x = audio(seed=1)
    full = run(model, x)
    final_norm = model.encoder.layer_norm
    for layer in range(0, N_LAYERS + 1):
        pruned = run(prune(copy.deepcopy(model), layer), x)
        expected = full.hidden_states[layer]
        if stable:
            with torch.no_grad():
                expected = final_norm(expected)
        torch.testing.assert_close(pruned.last_hidden_state, expected, rtol=0, atol=1e-5)


def test_stable_layer_norm_hidden_states_are_pre_norm_in_transformers_5():
    """The convention prune() documents: every hidden state, the last included, is pre-norm."""
    model = tiny_model("wav2vec2", stable=True)
    full = run(model, audio())
    with torch.no_grad():
        normed = model.encoder.layer_norm(full.hidden_states[-1])
    torch.testing.assert_close(full.last_hidden_state, normed, rtol=0, atol=1e-5)
    assert not torch.allclose(full.last_hidden_state, full.hidden_states[-1], atol=1e-3)


@pytest.mark.parametrize("family,stable", CASES)
def test_parameter_count_drops_by_exactly_the_deleted_layers(family, stable):
    model = tiny_model(family, stable=stable)
    before = count_parameters(model)
    per_layer = [count_parameters(layer) for layer in model.encoder.layers]
    for layer in range(0, N_LAYERS + 1):
        pruned = prune(copy.deepcopy(model), layer)
        assert before - count_parameters(pruned) == sum(per_layer[layer:])


def test_wavlm_keeps_relative_position_bias_of_layer_zero():
    model = tiny_model("wavlm", stable=False)
    assert hasattr(model.encoder.layers[0].attention, "rel_attn_embed")
    assert not hasattr(model.encoder.layers[1].attention, "rel_attn_embed")
    pruned = prune(copy.deepcopy(model), 2)
    torch.testing.assert_close(
        pruned.encoder.layers[0].attention.rel_attn_embed.weight,
        model.encoder.layers[0].attention.rel_attn_embed.weight,
    )


@pytest.mark.parametrize("family,stable", [("wavlm", False), ("wav2vec2", True), ("hubert", False)])
def test_save_and_reload_round_trip(tmp_path, family, stable):
    model = tiny_model(family, stable=stable)
    x = audio(seed=2)
    pruned = prune(model, 2)
    before = run(pruned, x)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 2
    assert num_transformer_layers(reloaded) == 2
    after = run(reloaded, x)
    torch.testing.assert_close(after.last_hidden_state, before.last_hidden_state, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family,stable", [("wav2vec2", False), ("wavlm", True)])
def test_loading_a_checkpoint_at_a_depth_equals_pruning(tmp_path, family, stable):
    """from_pretrained(..., num_hidden_layers=L) on the full checkpoint is prune(model, L)."""
    model = tiny_model(family, stable=stable)
    model.save_pretrained(tmp_path)
    x = audio(seed=3)
    expected = run(prune(copy.deepcopy(model), 3), x)
    shallow = AutoModel.from_pretrained(tmp_path, num_hidden_layers=3).eval()
    torch.testing.assert_close(run(shallow, x).last_hidden_state, expected.last_hidden_state, rtol=0, atol=1e-6)


@pytest.mark.parametrize("classifier", [Wav2Vec2ForSequenceClassification, WavLMForSequenceClassification])
def test_classification_wrapper_is_pruned_through_its_base_model(tmp_path, classifier):
    config_class = Wav2Vec2Config if classifier is Wav2Vec2ForSequenceClassification else WavLMConfig
    torch.manual_seed(0)
    model = classifier(config_class(**TINY, num_labels=5)).eval()
    x = audio(seed=4)
    base_expected = run(prune(copy.deepcopy(model.base_model), 2), x).last_hidden_state
    pruned = prune(model, 2)
    assert pruned.config.num_hidden_layers == 2
    with torch.no_grad():
        logits = pruned(input_values=x).logits
        pooled = pruned.projector(base_expected).mean(dim=1)
        torch.testing.assert_close(logits, pruned.classifier(pooled), rtol=0, atol=1e-5)
    pruned.save_pretrained(tmp_path)
    reloaded = classifier.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_values=x).logits, logits, rtol=0, atol=1e-6)


def test_weighted_layer_sum_keeps_one_weight_per_remaining_state(tmp_path):
    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(**TINY, num_labels=3, use_weighted_layer_sum=True))
    with torch.no_grad():
        model.layer_weights.copy_(torch.arange(N_LAYERS + 1, dtype=torch.float32))
    prune(model, 2)
    assert model.layer_weights.tolist() == [0.0, 1.0, 2.0]
    model.save_pretrained(tmp_path)
    reloaded = Wav2Vec2ForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.layer_weights.tolist() == [0.0, 1.0, 2.0]


@settings(max_examples=8, deadline=None)
@given(layer=st.integers(0, N_LAYERS), seed=st.integers(0, 2**16), samples=st.integers(800, 6000))
def test_pruning_is_exact_for_any_layer_seed_and_length(layer, seed, samples):
    model = tiny_model("wav2vec2", stable=False, seed=seed)
    x = audio(batch=1, samples=samples, seed=seed)
    full = run(model, x)
    pruned = run(prune(model, layer), x)
    torch.testing.assert_close(pruned.last_hidden_state, full.hidden_states[layer], rtol=0, atol=1e-5)


def test_bad_layers_raise_clear_errors():
    model = tiny_model("wav2vec2", stable=False)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        prune(model, 5)
    with pytest.raises(ValueError, match="0..4"):
        prune(model, -1)
    with pytest.raises(TypeError, match="int"):
        prune(model, 2.0)
    with pytest.raises(TypeError, match="encoder"):
        prune(torch.nn.Linear(3, 3), 1)
