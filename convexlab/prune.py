"""Prune a speech model at a layer: keep transformer layers 1..L, delete the rest.

Layer indices follow ``hidden_states`` of the Hugging Face model (see DESIGN.md): index 0 is the
input of the first transformer layer, index ``l`` the output of transformer layer ``l``. Pruning
at ``L`` therefore keeps ``encoder.layers[:L]`` and sets ``config.num_hidden_layers = L``, so the
pruned model saves and reloads with ``from_pretrained`` like any other checkpoint, and loading a
checkpoint with ``num_hidden_layers=L`` in its config (``convexlab.models.load_model(...,
num_layers=L)``) is the same operation.

What the pruned model returns:

* ``hidden_states[0..L]`` of the pruned model equal the full model's ``hidden_states[0..L]``
  exactly (in transformers 5.x every entry of ``hidden_states`` is the raw output of a layer).
* Post-layer-norm models (``do_stable_layer_norm=False``: the base checkpoints) normalise inside
  every layer, so the pruned ``last_hidden_state`` is the full model's ``hidden_states[L]``.
* Stable-layer-norm models (``do_stable_layer_norm=True``: the large checkpoints) apply one final
  ``encoder.layer_norm`` after the last layer. Pruning keeps that norm, so the pruned
  ``last_hidden_state`` is ``encoder.layer_norm(full.hidden_states[L])``: the classification head
  sees normalised features, as it does on the full model. (With ``L = 0`` that is the norm of
  the positional-conv input.)
* WavLM computes its relative position bias in layer 0 only and passes it on; layer 0 is kept
  whenever ``L >= 1``, so the pruned layers receive exactly the bias they received before.
* Classification wrappers with ``use_weighted_layer_sum=True`` hold one weight per hidden state;
  pruning keeps the first ``L + 1`` weights (the softmax renormalises them over the kept layers).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["prune", "transformer_layers", "num_transformer_layers", "count_parameters"]


def _encoder(model: nn.Module) -> nn.Module:
    """The transformer encoder of a base model or of a task wrapper (via ``model.base_model``)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not isinstance(getattr(encoder, "layers", None), nn.ModuleList):
        raise TypeError(
            f"{type(model).__name__} has no transformer encoder at base_model.encoder.layers; prune() "
            "supports wav2vec2-style models (Wav2Vec2, WavLM, HuBERT, Data2VecAudio, ...) and their "
            "*ForAudioClassification / *ForSequenceClassification wrappers"
        )
    return encoder


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The model's transformer layers, in order (``len`` is L, the number of transformer layers)."""
    return _encoder(model).layers


def num_transformer_layers(model: nn.Module) -> int:
    """L: the number of transformer layers the model runs (``hidden_states`` has L + 1 entries)."""
    return len(transformer_layers(model))


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) in seen or (trainable_only and not parameter.requires_grad):
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total


def prune(model: nn.Module, layer: int) -> nn.Module:
    """Keep transformer layers 1..``layer`` of ``model`` and delete the rest, in place.

    ``model`` is a base model (``Wav2Vec2Model``, ``WavLMModel``, ``HubertModel``, ...) or a task
    wrapper around one (``*ForAudioClassification`` / ``*ForSequenceClassification``, found through
    ``model.base_model``). ``layer`` is a ``hidden_states`` index, ``0 <= layer <= L``. The model
    is modified in place (its config too, so ``save_pretrained`` writes the pruned depth) and
    returned for chaining. See the module docstring for what the pruned model outputs.
    """
    encoder = _encoder(model)
    n_layers = len(encoder.layers)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int hidden_states index, got {layer!r} ({type(layer).__name__})")
    if not 0 <= layer <= n_layers:
        raise ValueError(
            f"Cannot prune at layer {layer}: the model has {n_layers} transformer layers, so the layer "
            f"must be in 0..{n_layers} (0 keeps only the feature encoder and positional embedding)"
        )
    encoder.layers = nn.ModuleList(list(encoder.layers)[:layer])

    weights = getattr(model, "layer_weights", None)
    if isinstance(weights, nn.Parameter) and weights.shape[0] == n_layers + 1:
        # One weight per hidden state: keep those of the states that still exist.
        with torch.no_grad():
            model.layer_weights = nn.Parameter(weights[: layer + 1].clone(), requires_grad=weights.requires_grad)

    # The wrapper, the base model and the encoder usually share one config object; set each one
    # that exists so a wrapper holding its own copy cannot disagree with the weights.
    owners = (model, getattr(model, "base_model", model), encoder)
    configs = {id(m.config): m.config for m in owners if getattr(m, "config", None) is not None}
    for config in configs.values():
        config.num_hidden_layers = layer
    return model
