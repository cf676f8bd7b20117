"""The model-family registry: plain data, and the rules that tell a family from a name or a config.

The bottom of the package's layers: this module imports nothing of convexlab (and nothing heavy),
so that data, models, pretraining, plots and the book can all read the one registry.
:mod:`convexlab.models` re-exports its names (``FAMILIES``, ``ModelFamily``, ``MINIATURE_NAMES``,
``TASKS``, ``FAMILY_CONFIG_KEY``) and builds the transformers configs from it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SAMPLE_RATE",
    "CLIP_SAMPLES",
    "TASKS",
    "ModelFamily",
    "FAMILIES",
    "MINIATURE_NAMES",
    "FAMILY_CONFIG_KEY",
    "MINIATURE_SIZE",
    "MINIATURE_QUANTISER",
    "family_spec",
    "known_family",
    "family_in_name",
    "family_of_config_dict",
]

SAMPLE_RATE = 16_000  # Hz: every clip of this project, and the rate every model expects
CLIP_SAMPLES = SAMPLE_RATE  # one second: every clip is generated at, or padded or cut to, this length
TASKS = ("word", "speaker")  # the tasks (each a concept) that get a classification head


@dataclass(frozen=True)
class ModelFamily:
    name: str  # family name used throughout convexlab: "wav2vec2", "wavlm", "hubert", "ccc-wav2vec2"
    base_id: str  # hub id of the 12-layer base checkpoint the paper uses
    large_id: str | None  # hub id of the 24-layer checkpoint, None where the family has none
    model_type: str  # transformers model_type of the architecture ("wav2vec2", "wavlm", "hubert")
    miniature_name: str  # name of the small same-architecture model for the lite profile and tests


FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily("wav2vec2", "facebook/wav2vec2-base", "facebook/wav2vec2-large", "wav2vec2", "mini-wav2vec2"),
        ModelFamily("wavlm", "microsoft/wavlm-base", "microsoft/wavlm-large", "wavlm", "mini-wavlm"),
        ModelFamily("hubert", "facebook/hubert-base-ls960", "facebook/hubert-large-ll60k", "hubert", "mini-hubert"),
        # ccc-wav2vec 2.0 changes the pretraining loss, not the network: its checkpoint is a wav2vec2 model.
        ModelFamily("ccc-wav2vec2", "vasista22/ccc-wav2vec2-base", None, "wav2vec2", "mini-ccc-wav2vec2"),
    )
}
MINIATURE_NAMES: dict[str, str] = {family.miniature_name: family.name for family in FAMILIES.values()}
FAMILY_CONFIG_KEY = "convexlab_family"  # extra config field that records a miniature's family

# The miniature: same classes and same conv strides (20 ms frames at 16 kHz) as the base models,
# narrow enough that a batch of 16 one-second clips runs in a few tens of milliseconds on a CPU.
MINIATURE_SIZE = dict(
    hidden_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=192,
    # 32 channels keep the CNN at ~40 % of the FLOPs, as in the base models, so that pruning
    # transformer layers saves what it saves there
    conv_dim=(32, 32, 32, 32, 32, 32, 32),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    classifier_proj_size=64,
)
# Only the wav2vec2-style quantiser has these; they size the pretraining head, not the encoder.
MINIATURE_QUANTISER = dict(
    num_codevector_groups=2,
    num_codevectors_per_group=64,
    codevector_dim=64,
    proj_codevector_dim=64,
)


def family_spec(name: str) -> ModelFamily:
    """The :class:`ModelFamily` called ``name``; ``ValueError`` naming the families otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"Unknown model family {name!r}; choose one of {sorted(FAMILIES)}") from None


def known_family(name: str) -> str | None:
    """The family of a miniature name or of a family's hub id; None for any other name."""
    name = str(name)
    if name in MINIATURE_NAMES:
        return MINIATURE_NAMES[name]
    for family in FAMILIES.values():
        if name in (family.base_id, family.large_id):
            return family.name
    return None


def family_in_name(name: str) -> str | None:
    """The family a name spells out ("…ccc…" before its parent wav2vec2), or None: the last resort."""
    lowered = str(name).lower()
    if "ccc" in lowered:
        return "ccc-wav2vec2"
    for family in ("wavlm", "hubert", "wav2vec2"):
        if family in lowered:
            return family
    return None


def family_of_config_dict(config: dict, name: str = "") -> str:
    """The family of a model config (``config.json``'s dict): the recorded family, else the model_type."""
    if config.get(FAMILY_CONFIG_KEY) in FAMILIES:
        return config[FAMILY_CONFIG_KEY]
    model_type = config.get("model_type")
    if model_type == "wav2vec2" and "ccc" in str(name).lower():
        return "ccc-wav2vec2"
    for family in FAMILIES.values():
        if family.model_type == model_type and family.name != "ccc-wav2vec2":
            return family.name
    raise ValueError(
        f"{name or 'This model'} has model_type {model_type!r}, which is none of the families "
        f"{sorted(FAMILIES)}; convexlab supports wav2vec2, WavLM and HuBERT architectures."
    )
