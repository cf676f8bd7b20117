"""The four self-supervised speech model families, and one way to load any of them.

A model is named by a Hugging Face hub id (``facebook/wav2vec2-base``), a local folder written by
``save_pretrained``, or a *miniature* name (``mini-wav2vec2``, ``mini-wavlm``, ``mini-hubert``,
``mini-ccc-wav2vec2``): the same architecture class as the base checkpoint with a few narrow
layers, for the lite profile and the tests. Every model comes back in eval mode with layerdrop 0,
so that layer ``l`` of a run is always the same function of the input.

The registry itself (:data:`FAMILIES`, :class:`ModelFamily`, :data:`MINIATURE_NAMES`, :data:`TASKS`)
lives in :mod:`convexlab.families` and is re-exported here. Layering: :mod:`convexlab.pretrain`
sits above this module (it builds its models from :func:`miniature_config`); a miniature's
pretrained weights are reached from here through the two function-level imports of
``convexlab.pretrain`` below, the one cycle of this module.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    HubertConfig,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    WavLMConfig,
)

from convexlab._progress import transformers_bars
from convexlab.cache import file_digest, stable_hash, stage_key
from convexlab.recipes import recipe_spec
from convexlab.families import (
    FAMILIES,
    FAMILY_CONFIG_KEY,
    MINIATURE_NAMES,
    MINIATURE_QUANTISER,
    MINIATURE_SIZE,
    SAMPLE_RATE,
    TASKS,
    ModelFamily,
    family_in_name,
    family_of_config_dict,
    family_spec,
    known_family,
)

__all__ = [
    "ModelFamily",
    "FAMILIES",
    "MINIATURE_NAMES",
    "CheckpointUnavailableError",
    "base_config",
    "miniature_config",
    "recipe_miniature_config",
    "family_of",
    "family_or_name",
    "TASKS",
    "FAMILY_CONFIG_KEY",
    "load_model",
    "model_key",
    "feature_extractor_for",
    "DTYPES",
    "torch_dtype",
    "dtype_name",
]

_CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "wav2vec2": Wav2Vec2Config,
    "wavlm": WavLMConfig,
    "hubert": HubertConfig,
}

def base_config(family: str) -> PretrainedConfig:
    """The architecture of ``family``'s base checkpoint, built locally (no download).

    The library defaults of Wav2Vec2Config / WavLMConfig / HubertConfig are the base models'
    shapes (12 layers, width 768, group-norm feature extractor), so a model built from this
    config costs exactly what the real checkpoint costs.
    """
    spec = family_spec(family)
    config = _CONFIG_CLASSES[spec.model_type](layerdrop=0.0)
    setattr(config, FAMILY_CONFIG_KEY, spec.name)
    return config


def miniature_config(
    family: str, *, conv_dim: int | None = None, hidden_size: int | None = None, num_layers: int | None = None
) -> PretrainedConfig:
    """A small config of ``family``'s architecture: 6 layers of width 64, same 20 ms frames.

    Like the base checkpoints it uses the group-norm feature extractor and post-layer-norm
    transformer (``do_stable_layer_norm=False``). The overrides (a pretraining recipe's
    ``model``, :mod:`convexlab.recipes`) resize it: ``conv_dim`` channels in all 7 feature-encoder
    layers, ``hidden_size`` the transformer's width (feed-forward 3x, classifier projection the
    same), ``num_layers`` its depth.
    """
    spec = family_spec(family)
    extra = MINIATURE_QUANTISER if spec.model_type == "wav2vec2" else {}
    config = _CONFIG_CLASSES[spec.model_type](
        **MINIATURE_SIZE,
        **extra,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        layerdrop=0.0,
    )
    if conv_dim:
        config.conv_dim = (conv_dim,) * len(config.conv_dim)
    if hidden_size:
        config.hidden_size, config.intermediate_size = hidden_size, 3 * hidden_size
        if hasattr(config, "classifier_proj_size"):
            config.classifier_proj_size = hidden_size
    if num_layers:
        config.num_hidden_layers = num_layers
    setattr(config, FAMILY_CONFIG_KEY, spec.name)
    return config


def family_of(name_or_model: str | os.PathLike | PreTrainedModel | PretrainedConfig) -> str:
    """The family name of a miniature name, hub id, local folder, model or config.

    Raises ``ValueError`` when the architecture is none of the four families.
    """
    if isinstance(name_or_model, PreTrainedModel):
        return _family_of_config(name_or_model.config)
    if isinstance(name_or_model, PretrainedConfig):
        return _family_of_config(name_or_model)
    name = str(name_or_model)
    family = known_family(name)
    if family is not None:
        return family
    config_file = Path(name).expanduser() / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        return family_of_config_dict(config, name)
    family = family_in_name(name)
    if family is not None:
        return family
    raise ValueError(
        f"Cannot tell the model family of {name!r}: it is not a miniature name {sorted(MINIATURE_NAMES)}, "
        f"not a known hub id, and not a folder with a config.json. Pass one of those."
    )


def _family_of_config(config: PretrainedConfig) -> str:
    return family_of_config_dict(config.to_dict(), getattr(config, "_name_or_path", ""))


def family_or_name(name_or_model: str | os.PathLike) -> str:
    """:func:`family_of`, or the name itself where it names none of the families: the one fallback
    of the tables and figures, which must not fail on an unusual name."""
    try:
        return family_of(name_or_model)
    except (ValueError, OSError):  # an unknown name, a config of another architecture, an unreadable folder
        return str(name_or_model)


# The dtypes a run may extract, time or infer in: the one list (the CLI's --dtype choices, the
# profile's dtype field and every function that takes a dtype name read it from here).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``torch.float32`` from ``"float32"`` or ``"torch.float32"`` (a torch dtype of :data:`DTYPES`
    is returned as is). Raises ``ValueError`` naming the accepted names for anything else."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"Unsupported dtype {dtype}; use one of {list(DTYPES)}")
        return dtype
    try:
        return DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"Unsupported dtype {dtype!r}; use one of {list(DTYPES)}") from None


def dtype_name(dtype: str | torch.dtype) -> str:
    """The name of a dtype as stored beside results: ``"float32"`` (checked by :func:`torch_dtype`)."""
    return str(torch_dtype(dtype)).removeprefix("torch.")


class CheckpointUnavailableError(FileNotFoundError):
    """A hub checkpoint that is neither in the local Hugging Face cache nor downloadable now."""


def _unavailable_message(model_id: str, reason: BaseException) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "it could not be downloaded"
    return (
        f"Could not load the checkpoint {model_id!r}: {why} ({type(reason).__name__}: {reason}).\n"
        f"Ways to provide it:\n"
        f"  1. on a machine with network access, load it once (unset HF_HUB_OFFLINE) so it lands in the "
        f"Hugging Face cache;\n"
        f"  2. elsewhere run `hf download {model_id}` (or `huggingface-cli download {model_id}`), copy the "
        f"cache here and set HF_HOME to it;\n"
        f"  3. pass a local folder holding its config.json and weights: load_model('/path/to/folder');\n"
        f"  4. or use a miniature model ({', '.join(MINIATURE_NAMES)}) that needs no download."
    )


def _model_class(task: str | None, num_labels: int | None):
    if task is None:
        if num_labels is not None:
            raise ValueError("num_labels needs a task: pass task='word' or task='speaker' (or drop num_labels)")
        return AutoModel
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; use one of {TASKS} (or task=None for the bare encoder)")
    if num_labels is None or num_labels < 2:
        raise ValueError(f"task={task!r} needs num_labels >= 2 (the number of classes), got {num_labels!r}")
    return AutoModelForAudioClassification


# the dropout rates a finetuning run may set; every family's config has all four
DROPOUT_CONFIG_FIELDS = ("hidden_dropout", "attention_dropout", "activation_dropout", "final_dropout")


def _config_overrides(
    base_layers: int, *, num_layers: int | None, task: str | None, num_labels: int | None,
    label_names: Sequence[str] | None, dropout: float | None = None,
) -> dict:
    overrides: dict = {"layerdrop": 0.0}
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} is not a rate; pass a value in [0, 1) or None (the checkpoint's own)")
        overrides.update({name: float(dropout) for name in DROPOUT_CONFIG_FIELDS})
    if num_layers is not None:
        if not 1 <= num_layers <= base_layers:
            raise ValueError(
                f"num_layers={num_layers} is outside 1..{base_layers} (the model has {base_layers} transformer "
                f"layers); pass a depth in that range"
            )
        overrides["num_hidden_layers"] = int(num_layers)
    if task is not None:
        if label_names is None:
            label_names = [f"LABEL_{i}" for i in range(num_labels)]
        if len(label_names) != num_labels:
            raise ValueError(f"label_names has {len(label_names)} names but num_labels={num_labels}; make them agree")
        # num_labels follows from id2label; setting both keeps transformers from resetting one of them
        overrides["id2label"] = {i: str(name) for i, name in enumerate(label_names)}
        overrides["label2id"] = {str(name): i for i, name in enumerate(label_names)}
        overrides["num_labels"] = int(num_labels)
    return overrides


def _finish(model: PreTrainedModel, device: str | torch.device, dtype: torch.dtype) -> PreTrainedModel:
    model.config.layerdrop = 0.0
    return model.to(device=device, dtype=dtype).eval()


def load_model(
    name_or_path: str | os.PathLike,
    *,
    task: str | None = None,
    num_labels: int | None = None,
    num_layers: int | None = None,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
    revision: str | None = None,
    recipe: str | None = None,
    dropout: float | None = None,
) -> PreTrainedModel:
    """Load a model in eval mode with layerdrop 0.

    ``name_or_path``: a miniature name, a hub id, or a local ``save_pretrained`` folder.
    ``task=None`` gives the bare encoder (``AutoModel``); ``task="word"|"speaker"`` with
    ``num_labels`` gives ``AutoModelForAudioClassification`` (a fresh head). ``num_layers=L``
    keeps transformer layers 1..L (``num_hidden_layers=L``), i.e. the model pruned at layer L.
    Miniatures: ``pretrained=True`` loads the self-supervised miniature from
    :func:`convexlab.pretrain.ensure_pretrained`; ``pretrained=False`` builds random weights from
    ``seed`` (the same seed gives the same weights, and ``num_layers=L`` gives exactly the first L
    layers of the full random model). ``recipe`` names the miniature's pretraining recipe
    (:mod:`convexlab.recipes`; None: ``PretrainConfig``'s defaults, as ``"synthetic-v1"``), which also
    sets its size, random weights included; other models ignore it. ``dropout`` sets every dropout rate of
    :data:`DROPOUT_CONFIG_FIELDS` in the config the model is built from (None: the checkpoint's own).
    Hub checkpoints honour ``HF_HUB_OFFLINE``; one that cannot be
    found raises :class:`CheckpointUnavailableError` saying how to provide it.
    """
    dtype = torch_dtype(dtype)
    model_class = _model_class(task, num_labels)
    name = str(name_or_path)
    if name in MINIATURE_NAMES:
        family = MINIATURE_NAMES[name]
        config = recipe_miniature_config(family, recipe)
        overrides = _config_overrides(config.num_hidden_layers, num_layers=num_layers, task=task,
                                      num_labels=num_labels, label_names=label_names, dropout=dropout)
        folder = _pretrained_miniature(family, seed=seed, recipe=recipe) if pretrained else None
        if folder is None:
            model = _random_model(model_class, config, overrides, seed=seed)
            model.config._name_or_path = name
            return _finish(model, device, dtype)
        name = str(folder)
    elif not pretrained:
        return _finish(_random_from_checkpoint_config(name, model_class, num_layers, task, num_labels, label_names,
                                                      seed=seed, revision=revision, dropout=dropout), device, dtype)
    with transformers_bars():
        model = _from_pretrained(name, model_class, num_layers=num_layers, task=task, num_labels=num_labels,
                                 label_names=label_names, dtype=dtype, revision=revision, dropout=dropout)
    return _finish(model, device, dtype)


# config entries that say where or how a model was loaded, not what it computes
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "_commit_hash",
                        "_attn_implementation_autoset", "output_hidden_states", "return_dict")
MODEL_KEY_VERSION = 1  # bump when model_key's recipe changes


def model_key(name_or_path: str | os.PathLike, *, pretrained: bool = True, seed: int = 0,
              revision: str | None = None, recipe: str | None = None) -> str:
    """The key of the weights :func:`load_model` would give for these arguments, without building the model.

    What the model computes, not what it is called: a miniature's key is its pretraining folder's
    key (:func:`convexlab.pretrain.pretrained_path`: config, pretraining recipe, objective version
    and seed), or its config and ``seed`` for random weights; a local folder's (or a hub id's
    locally cached snapshot's) is the digest of its ``config.json`` (minus load-time entries) and
    of every weight file (:func:`convexlab.cache.file_digest`, memoised by path, size and mtime).
    A hub id with no local snapshot is keyed by its id and revision (it is downloaded on load; the
    next key then digests the files). ``pretrained=False`` (random weights from the checkpoint's
    config) keys on the config and ``seed``. ``recipe``: a miniature's pretraining recipe, as in
    :func:`load_model`.
    """
    name = str(name_or_path)
    if name in MINIATURE_NAMES:
        family = MINIATURE_NAMES[name]
        if pretrained:
            # here, not at the top: pretrain imports this module (cycle)
            from convexlab.pretrain import pretrained_path, recipe_configs

            config, model_config = recipe_configs(recipe, family) if recipe else (None, None)
            folder = pretrained_path(family, seed=seed, config=config, model_config=model_config)
            return stage_key("model", MODEL_KEY_VERSION, inputs={"pretrained": folder.name})
        config = {k: v for k, v in recipe_miniature_config(family, recipe).to_dict().items()
                  if k not in VOLATILE_CONFIG_KEYS}
        return stage_key("model", MODEL_KEY_VERSION, params={"random_config": config, "seed": seed})
    folder = _model_folder(name, revision)
    if folder is None:
        return stage_key("model", MODEL_KEY_VERSION, params={"hub_id": name, "revision": revision,
                                                             "pretrained": pretrained, "seed": None if pretrained else seed})
    inputs = {"config": _config_file_digest(folder / "config.json")}
    if not pretrained:
        return stage_key("model", MODEL_KEY_VERSION, inputs=inputs, params={"random_init_seed": seed})
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise FileNotFoundError(f"Model folder {folder} holds no weight files (*.safetensors, pytorch_model*.bin)")
    inputs.update({f"weights/{w.name}": file_digest(w) for w in weights})
    return stage_key("model", MODEL_KEY_VERSION, inputs=inputs)


def _model_folder(name: str, revision: str | None) -> Path | None:
    """A local model folder, or the locally cached snapshot of a hub id (None if there is none)."""
    if _is_local(name):
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"Model folder {name!r} has no config.json; pass a folder written by save_pretrained")
        return folder
    if _looks_like_path(name):
        raise FileNotFoundError(f"Model folder {name!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # not cached here (or no hub client): keyed by id and revision
        return None
    return folder if (folder / "config.json").is_file() else None


def _config_file_digest(path: Path) -> str:
    config = json.loads(path.read_text())
    return stable_hash({k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}, length=32)


def _pretrained_miniature(family: str, *, seed: int, recipe: str | None) -> Path:
    from convexlab.pretrain import ensure_pretrained  # here, not at the top: pretrain imports this module (cycle)

    return Path(ensure_pretrained(family, seed=seed, recipe=recipe))


def recipe_miniature_config(family: str, recipe: str | None) -> PretrainedConfig:
    """The miniature of ``family`` at the size of pretraining ``recipe`` (None: the default size)."""
    return miniature_config(family, **(recipe_spec(recipe).model if recipe else {}))


def _random_model(model_class, config: PretrainedConfig, overrides: dict, *, seed: int) -> PreTrainedModel:
    """Random weights from ``seed``; a shallower model takes the first layers of the full one."""
    full_config = config.__class__.from_dict({**config.to_dict(), **{k: v for k, v in overrides.items()
                                                                      if k != "num_hidden_layers"}})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class.from_config(full_config)
    depth = overrides.get("num_hidden_layers")
    if depth is None or depth == full_config.num_hidden_layers:
        return model
    shallow_config = full_config.__class__.from_dict({**full_config.to_dict(), "num_hidden_layers": depth})
    with torch.random.fork_rng(devices=[]):
        shallow = model_class.from_config(shallow_config)
    full_state = model.state_dict()
    missing = [key for key in shallow.state_dict() if key not in full_state]
    if missing:  # would mean the architecture names its layers differently than we assume
        raise RuntimeError(f"Could not map the shallow model's weights {missing[:3]} onto the full model's")
    shallow.load_state_dict({key: full_state[key] for key in shallow.state_dict()})
    return shallow


def _is_local(name: str) -> bool:
    return Path(name).expanduser().is_dir()


def _looks_like_path(name: str) -> bool:
    # hub ids are "name" or "org/name"; anything else that is not a folder is a missing path
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _from_pretrained(name, model_class, *, num_layers, task, num_labels, label_names, dtype, revision, dropout=None):
    if not _is_local(name) and _looks_like_path(name):
        raise FileNotFoundError(
            f"Model folder {name!r} does not exist. Pass an existing save_pretrained folder, a hub id such as "
            f"{FAMILIES['wav2vec2'].base_id!r}, or a miniature name {sorted(MINIATURE_NAMES)}."
        )
    if _is_local(name):
        name = str(Path(name).expanduser())
        if not (Path(name) / "config.json").is_file():
            raise FileNotFoundError(
                f"Model folder {name!r} has no config.json; pass a folder written by save_pretrained "
                f"(config.json + model.safetensors)."
            )
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
        overrides = _config_overrides(config.num_hidden_layers, num_layers=num_layers, task=task,
                                      num_labels=num_labels, label_names=label_names, dropout=dropout)
        for key, value in overrides.items():
            setattr(config, key, value)
        with _quiet_transformers():
            # Loading fewer layers or a fresh head reports the unused/new weights; that is intended here.
            return model_class.from_pretrained(name, config=config, dtype=dtype, revision=revision)
    except OSError as err:
        if _is_local(name):
            raise
        raise CheckpointUnavailableError(_unavailable_message(name, err)) from err


def _random_from_checkpoint_config(name, model_class, num_layers, task, num_labels, label_names, *, seed, revision,
                                   dropout=None):
    """Random weights with a hub checkpoint's architecture (its config only is fetched)."""
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except OSError as err:
        if _is_local(name):
            raise
        raise CheckpointUnavailableError(_unavailable_message(name, err)) from err
    overrides = _config_overrides(config.num_hidden_layers, num_layers=num_layers, task=task,
                                  num_labels=num_labels, label_names=label_names, dropout=dropout)
    model = _random_model(model_class, config, overrides, seed=seed)
    model.config._name_or_path = name
    return model


class _quiet_transformers:
    """Silence transformers' load report for the duration of a block."""

    def __enter__(self):
        self.level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()

    def __exit__(self, *exc):
        transformers.logging.set_verbosity(self.level)


# facebook/wav2vec2-base's preprocessor_config.json: what its feature extractor does
WAV2VEC2_BASE_EXTRACTOR = dict(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                               return_attention_mask=False)


def _ccc_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """ccc-wav2vec2's hub repository has no preprocessor config; the authors give it
    ``facebook/wav2vec2-base``'s feature extractor (its cached copy, else its known settings)."""
    try:
        return AutoFeatureExtractor.from_pretrained(FAMILIES["wav2vec2"].base_id, local_files_only=True)
    except (OSError, ValueError):
        return Wav2Vec2FeatureExtractor(**WAV2VEC2_BASE_EXTRACTOR)


def feature_extractor_for(name_or_model: str | os.PathLike | PreTrainedModel) -> Wav2Vec2FeatureExtractor:
    """How raw audio is turned into ``input_values`` for this model.

    The checkpoint's own ``preprocessor_config.json`` when it has one (it says whether clips are
    normalised to zero mean and unit variance, and whether the model expects an attention mask).
    ``vasista22/ccc-wav2vec2-base`` has none and gets ``facebook/wav2vec2-base``'s, as in the
    authors' code (zero mean, unit variance, no mask).
    Otherwise HF's convention for the architecture: group-norm feature extractors (all base
    models and the miniatures) take raw audio without a mask; layer-norm ones normalise and mask.
    """
    config = name_or_model.config if isinstance(name_or_model, PreTrainedModel) else None
    source = getattr(config, "_name_or_path", "") if config is not None else str(name_or_model)
    if source and source not in MINIATURE_NAMES:
        try:
            return AutoFeatureExtractor.from_pretrained(source)
        except (OSError, ValueError) as err:
            if source == FAMILIES["ccc-wav2vec2"].base_id:
                return _ccc_feature_extractor()
            if not _is_local(source):  # a local folder without one (a miniature) is expected
                warnings.warn(
                    f"No preprocessor config for {source!r} ({err}); assuming HF's convention for its "
                    f"architecture. Download it with the model to use the checkpoint's own settings.",
                    stacklevel=2,
                )
    if config is None and source in MINIATURE_NAMES:
        config = miniature_config(MINIATURE_NAMES[source])
    layer_norm = getattr(config, "feat_extract_norm", "group") == "layer"
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=layer_norm,
        return_attention_mask=layer_norm,
    )
