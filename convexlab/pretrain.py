"""Short self-supervised pretraining of the miniature models, so that the offline book has real layers.

Randomly initialised miniatures have no learned hierarchy, so their convexity curves teach
nothing. Here each family's miniature architecture is pretrained with that family's own
objective (:mod:`convexlab.objectives`) on a *pretraining* corpus (synthetic, or spoken with
``PretrainConfig(corpus="spoken")``): the same words as the analysis corpus (spoken: and, with
``n_other_words``, other English words besides), but other speakers (their ids carry
``speaker_prefix``) and other repetitions (another generator seed), so no analysed clip or
speaker was seen in pretraining.

The result is an ordinary Hugging Face model folder in the cache,
``cache_path("pretrained", f"{family}-{key}-seed{seed}")``, where ``key`` hashes the model
config, the :class:`PretrainConfig` and :data:`OBJECTIVE_VERSION`; beside the weights,
``training_log.json`` holds the loss per step. :func:`ensure_pretrained` trains on first use
(with a progress bar) and reuses the folder afterwards; ``convexlab.models.load_model`` calls it
for the miniature names, and ``python -m convexlab pretrain`` (:mod:`convexlab.cli`) runs it
from the shell.

A named recipe (:mod:`convexlab.recipes`, :func:`recipe_configs`) fixes both configs per family.
Models of a recipe too slow for a cold ``make book`` are committed under
:data:`COMMITTED_WEIGHTS` by :func:`export_pretrained`, in folders named as their cache folders,
and :func:`ensure_pretrained` serves such a copy only for exactly its key.

Layering: this module imports :mod:`convexlab.models` at its top (for :func:`miniature_config`);
``models`` reaches back here only inside the two functions that need a pretrained miniature.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, PretrainedConfig

from convexlab._progress import tqdm_disable
from convexlab.cache import atomic_dir, cache_path, load_json, save_json, stable_hash
from convexlab.objectives import (
    ClusterContrastiveObjective,
    ContrastiveObjective,
    MaskedPredictionObjective,
    TARGET_NORMALISATIONS,
    hidden_cluster_targets,
    mfcc_cluster_targets,
)
from convexlab import spoken, synth
from convexlab.data import word_task
from convexlab.models import miniature_config, recipe_miniature_config
from convexlab.recipes import recipe_spec
from convexlab.spoken import spoken_corpus
from convexlab.synth import synthetic_corpus

__all__ = [
    "OBJECTIVE_VERSION",
    "FAMILY_OBJECTIVES",
    "PretrainConfig",
    "PretrainResult",
    "pretrain",
    "pretrained_path",
    "recipe_configs",
    "COMMITTED_WEIGHTS",
    "committed_pretrained",
    "export_pretrained",
    "ensure_pretrained",
    "pretraining_waveforms",
    "first_iteration_config",
    "has_second_iteration",
]

OBJECTIVE_VERSION = 3  # bump when an objective changes, so cached models are retrained
# keyed only into models with a second iteration: 2 since that iteration reseeds from seed + 1 and so
# continues from the cached first-iteration model (1: it continued the first iteration's generators)
ITERATION2_VERSION = 2
# the families whose recipe may add a second iteration (masked prediction of k-means ids, as HuBERT and WavLM)
SECOND_ITERATION_FAMILIES = ("hubert", "wavlm")

FAMILY_OBJECTIVES = {  # family -> the objective it is pretrained with
    "wav2vec2": "contrastive (wav2vec 2.0)",
    "ccc-wav2vec2": "clustering-aided cross-contrastive (ccc-wav2vec 2.0)",
    "hubert": "masked prediction of k-means clusters (HuBERT: MFCC targets, then the first model's features)",
    "wavlm": "masked prediction of k-means clusters with utterance mixing (WavLM: MFCC, then features)",
}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that shapes a pretraining run (all of it goes into the cache key)."""

    # optimisation
    steps: int = 300  # optimizer updates
    batch_size: int = 16  # clips per update
    learning_rate: float = 1e-3  # peak AdamW learning rate
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of the steps, then linear decay to 0
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float = 5.0  # gradient clipping
    layerdrop: float = 0.0  # layer drop while pretraining (a few layers: dropping one is a big change)
    dropout: float = 0.0  # all dropout rates while pretraining (short runs do not overfit; CPU dropout is slow)
    # masking (model frames are 20 ms; a 1 s clip has 49)
    mask_prob: float = 0.65  # expected fraction of frames starting a masked span, times mask_length
    mask_length: int = 5  # frames per masked span
    # contrastive objectives (wav2vec2, ccc-wav2vec2)
    num_negatives: int = 20  # distractors per masked frame, from the same utterance
    codevector_dim: int = 64  # quantised target size (also the projection size)
    num_codevector_groups: int = 2  # product-quantiser groups
    num_codevectors_per_group: int = 64  # codebook entries per group
    diversity_weight: float = 0.1  # weight of the codebook diversity loss
    gumbel_start: float = 2.0  # Gumbel-softmax temperature at the start ...
    gumbel_end: float = 0.5  # ... decayed geometrically to this at the end
    cluster_factor: int = 16  # ccc: k-means clusters = masked frames per utterance // cluster_factor
    scale_factor: float = 0.3  # ccc: logit scale for distractors in the positive's cluster
    cross_weight: float = 0.5  # ccc: weight of each cross-contrastive term (0: no augmentation)
    # masked prediction (hubert, wavlm)
    n_clusters: int = 50  # k-means clusters of MFCC frames
    # MFCC standardisation before k-means: "corpus", or "utterance" (CMVN; over speech frames when
    # target_silence_db is set); for the contrastive families "utterance" standardises the
    # quantiser's input per utterance the same way ("corpus": as wav2vec 2.0, no normalisation)
    target_normalisation: str = "corpus"
    target_silence_db: float | None = None  # frames this many dB below a clip's loudest are never predicted (None: all)
    # what those silent frames become: "ignore" (no target, no loss) or "class" (one extra cluster,
    # the same for every speaker's background, so that predicting it needs no channel information)
    silence_target: str = "ignore"
    projection_dim: int = 64  # size of the projection compared with the cluster embeddings
    mix_probability: float = 0.2  # wavlm: probability that an utterance gets another one mixed in
    # masked prediction, second iteration: a fresh model predicts k-means ids of the first one's features
    iteration2_steps: int = 0  # optimizer updates of the second iteration (0: first iteration only)
    iteration2_layer: int | None = None  # hidden_states index clustered (None: the middle layer, L // 2)
    iteration2_clusters: int = 100  # k-means clusters of those features
    # pretraining corpus: the analysis corpus's words (and n_other_words), disjoint speakers and repetitions
    corpus: str = "synthetic"  # "synthetic" (convexlab.synth) or "spoken" (convexlab.spoken, espeak-ng)
    n_words: int = 12  # words (must match the analysis corpus; spoken: the first n_words of its 35)
    n_speakers: int = 24  # pretraining speakers
    n_repetitions: int = 4  # repetitions of each word by each speaker
    corpus_seed: int = 1_000_003  # generator seed, unlike any analysis seed
    speaker_prefix: str = "pretrain"  # speaker-id prefix, unlike the analysis corpus's
    speaking_rate: tuple[int, int] = (130, 210)  # spoken: words per minute speakers' rates are drawn from
    # spoken: this many words of spoken.OTHER_WORDS besides the analysis words, a broader vocabulary
    # in which those are a minority (as the Speech Commands words are in real pretraining data)
    n_other_words: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "speaking_rate", spoken.check_speaking_rate(self.speaking_rate))  # JSON gives lists
        if self.corpus != "spoken" and self.speaking_rate != spoken.DEFAULT_SPEAKING_RATE:
            raise ValueError(f"speaking_rate={self.speaking_rate} is a spoken-corpus setting but corpus={self.corpus!r}; "
                             "use corpus='spoken' or leave speaking_rate at its default")
        if self.corpus != "spoken" and self.n_other_words:
            raise ValueError(f"n_other_words={self.n_other_words} is a spoken-corpus setting but corpus={self.corpus!r}; "
                             "use corpus='spoken' or n_other_words=0")
        spoken.spoken_words(None, self.n_other_words)  # ValueError naming the range
        if self.target_normalisation not in TARGET_NORMALISATIONS:
            raise ValueError(f"target_normalisation={self.target_normalisation!r}; use 'corpus' or 'utterance' (per utterance)")
        if self.silence_target not in ("ignore", "class"):
            raise ValueError(f"silence_target={self.silence_target!r}; use 'ignore' (no target) or 'class' (one silence class)")

    def replace(self, **overrides: Any) -> "PretrainConfig":
        """A copy with some fields changed (``None`` values are ignored)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"Unknown PretrainConfig field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class PretrainResult:
    family: str  # family name, e.g. "wavlm"
    encoder: torch.nn.Module  # the pretrained HF base model (Wav2Vec2Model, HubertModel or WavLMModel)
    log: list[dict[str, float]]  # one entry per step: step, loss, lr and the objective's parts
    seconds: float  # wall time of the optimisation (corpus and targets excluded)
    cpu_seconds: float  # CPU time of the optimisation, all threads (wall time on a shared machine misleads)
    setup_seconds: float  # wall time to load the corpus and compute targets
    n_clips: int  # clips in the pretraining corpus


def _family_name(family: str) -> str:
    name = family.removeprefix("mini-")
    if name not in FAMILY_OBJECTIVES:
        raise ValueError(f"Unknown model family {family!r}; choose one of {sorted(FAMILY_OBJECTIVES)} (or 'mini-<family>').")
    return name


def _miniature_config(family: str) -> PretrainedConfig:
    return miniature_config(family)


def pretraining_waveforms(config: PretrainConfig = PretrainConfig()) -> np.ndarray:
    """The pretraining corpus (``config.corpus``) as float32 ``(N, 16000)`` clips (generated into the cache once)."""
    if config.corpus not in ("synthetic", "spoken"):
        raise ValueError(f"Unknown pretraining corpus {config.corpus!r}; use 'synthetic' or 'spoken'")
    generate = synthetic_corpus if config.corpus == "synthetic" else spoken_corpus
    spoken_only = ({"speaking_rate": config.speaking_rate, "n_other_words": config.n_other_words}
                   if config.corpus == "spoken" else {})
    root = generate(
        n_words=config.n_words,
        n_speakers=config.n_speakers,
        n_repetitions=config.n_repetitions,
        seed=config.corpus_seed,
        speaker_prefix=config.speaker_prefix,
        **spoken_only,
    )
    dataset = word_task(root)
    return dataset.batch(np.arange(len(dataset)))


# the config fields that set a dropout rate; pretraining overrides them, the saved config keeps the originals
DROPOUT_FIELDS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "feat_quantizer_dropout")


def _silence_class(config: PretrainConfig) -> bool:
    """Whether masked prediction gives silent frames a class of their own (one id after the clusters)."""
    return config.silence_target == "class" and config.target_silence_db is not None


def _build_objective(
    family: str, model_config: PretrainedConfig, config: PretrainConfig, seed: int, *, n_clusters: int | None = None
) -> torch.nn.Module:
    model_config = copy.deepcopy(model_config)
    model_config.layerdrop = config.layerdrop
    for name in DROPOUT_FIELDS:
        if hasattr(model_config, name):
            setattr(model_config, name, config.dropout)
    masking = dict(mask_prob=config.mask_prob, mask_length=config.mask_length)
    if family in ("wav2vec2", "ccc-wav2vec2"):
        contrastive = dict(
            num_negatives=config.num_negatives,
            codevector_dim=config.codevector_dim,
            num_codevector_groups=config.num_codevector_groups,
            num_codevectors_per_group=config.num_codevectors_per_group,
            diversity_weight=config.diversity_weight,
            gumbel_start=config.gumbel_start,
            gumbel_end=config.gumbel_end,
            silence_db=config.target_silence_db,
            normalise_targets=config.target_normalisation == "utterance",
            **masking,
        )
        if family == "wav2vec2":
            return ContrastiveObjective(model_config, **contrastive)
        return ClusterContrastiveObjective(
            model_config,
            cluster_factor=config.cluster_factor,
            scale_factor=config.scale_factor,
            cross_weight=config.cross_weight,
            **contrastive,
        )
    return MaskedPredictionObjective(
        model_config,
        # the silence class is one id after the k-means clusters
        n_clusters=(n_clusters or config.n_clusters) + int(_silence_class(config)),
        projection_dim=config.projection_dim,
        mix_probability=config.mix_probability if family == "wavlm" else 0.0,
        seed=seed,
        **masking,
    )


def _learning_rate_factor(step: int, *, steps: int, warmup_fraction: float) -> float:
    warmup = max(1, round(steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def _optimise(
    objective: torch.nn.Module,
    audio: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    steps: int,
    config: PretrainConfig,
    seed: int,
    description: str,
    iteration: int,
    progress: bool | None,
    first_step: int = 0,
) -> list[dict[str, float]]:
    """AdamW with warm-up and linear decay over ``steps`` batches of ``audio`` ``(N, S)``; the log per step.

    ``targets``: int64 ``(N, T)`` cluster ids for masked prediction, ``None`` for the contrastive
    objectives. Batches are drawn without replacement, reshuffled each epoch, from ``seed``.
    """
    optimizer = torch.optim.AdamW(
        objective.parameters(), lr=config.learning_rate, betas=(0.9, 0.98), eps=1e-6, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, steps=steps, warmup_fraction=config.warmup_fraction),
    )
    batch_order = torch.Generator().manual_seed(seed)  # shuffling has its own generator
    batch_size = min(config.batch_size, len(audio))
    order = torch.randperm(len(audio), generator=batch_order)
    cursor = 0
    log: list[dict[str, float]] = []
    objective.train()
    bar = tqdm(range(steps), desc=description, disable=tqdm_disable(progress))
    for step in bar:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(audio), generator=batch_order), 0
        indices = order[cursor : cursor + batch_size]
        cursor += batch_size
        progress_fraction = step / max(1, steps - 1)
        if targets is None:
            output = objective(audio[indices], progress=progress_fraction)
        else:
            output = objective(audio[indices], targets=targets[indices], progress=progress_fraction)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), config.max_grad_norm)
        optimizer.step()
        entry = {"step": first_step + step, "iteration": iteration, "loss": float(output.loss.detach()),
                 "lr": schedule.get_last_lr()[0], **output.parts}
        schedule.step()
        log.append(entry)
        bar.set_postfix(loss=f"{entry['loss']:.3f}")
    return log


def pretrain(
    family: str,
    *,
    seed: int = 0,
    config: PretrainConfig | None = None,
    model_config: PretrainedConfig | None = None,
    waveforms: np.ndarray | None = None,
    progress: bool | None = True,
) -> PretrainResult:
    """Pretrain one family's miniature from scratch (no caching: see :func:`ensure_pretrained`).

    ``model_config`` defaults to ``convexlab.models.miniature_config(family)``; ``waveforms``
    (float32 ``(N, S)``) to :func:`pretraining_waveforms`. ``progress=None`` shows the bar in a
    terminal or notebook unless ``TQDM_DISABLE`` is set, ``False`` hides it. Reproducible for a fixed ``seed`` on the same machine.
    """
    family = _family_name(family)
    config = config or PretrainConfig()
    model_config = model_config or _miniature_config(family)
    setup_start = time.perf_counter()
    if waveforms is None:
        waveforms = pretraining_waveforms(config)
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.ndim != 2 or len(waveforms) < 2:
        raise ValueError(f"waveforms must be (N >= 2, samples) float32 clips, got shape {waveforms.shape}.")

    numpy_state = np.random.get_state()  # HF's mask and distractor samplers draw from NumPy's global generator
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        objective = _build_objective(family, model_config, config, seed)
        targets = None
        if isinstance(objective, MaskedPredictionObjective):
            n_frames = int(objective.model._get_feat_extract_output_lengths(torch.tensor(waveforms.shape[1])))
            targets = torch.from_numpy(
                mfcc_cluster_targets(waveforms, n_frames=n_frames, n_clusters=config.n_clusters, seed=seed,
                                     normalisation=config.target_normalisation, silence_db=config.target_silence_db,
                                     silence_class=_silence_class(config))
            )
        setup_seconds = time.perf_counter() - setup_start
        audio = torch.from_numpy(waveforms)
        start, cpu_start = time.perf_counter(), time.process_time()
        log = _optimise(objective, audio, targets, steps=config.steps, config=config, seed=seed,
                        description=f"pretraining mini-{family}", iteration=1, progress=progress)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        np.random.set_state(numpy_state)
    encoder = objective.encoder
    if has_second_iteration(family, config):
        second = _second_iteration(family, encoder, seed=seed, config=config, model_config=model_config,
                                   waveforms=waveforms, first_steps=len(log), progress=progress)
        encoder, log = second.encoder, log + second.log
        seconds, cpu_seconds = seconds + second.seconds, cpu_seconds + second.cpu_seconds
        setup_seconds += second.setup_seconds
    return _finished(family, encoder, model_config, log, seconds, cpu_seconds, setup_seconds, len(waveforms))


def has_second_iteration(family: str, config: PretrainConfig) -> bool:
    """Whether ``config`` trains a second iteration for ``family`` (the contrastive families ignore one)."""
    return _family_name(family) in SECOND_ITERATION_FAMILIES and config.iteration2_steps > 0


def first_iteration_config(config: PretrainConfig) -> PretrainConfig:
    """The config of the model a second iteration starts from: ``config`` with its iteration-2 fields at their defaults.

    :func:`ensure_pretrained` keeps that model under its own key, so a recipe with a second
    iteration reuses the cached first-iteration model of the recipe without one (and vice versa).
    """
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig) if f.name.startswith("iteration2_")}
    return dataclasses.replace(config, **defaults)


def _second_iteration(
    family: str,
    first_encoder: torch.nn.Module,
    *,
    seed: int,
    config: PretrainConfig,
    model_config: PretrainedConfig,
    waveforms: np.ndarray,
    first_steps: int,
    progress: bool | None,
) -> PretrainResult:
    """HuBERT's second iteration: a fresh model (seeded ``seed + 1``) predicts k-means ids of ``first_encoder``'s
    ``config.iteration2_layer`` over the silence rule of the first; ``waveforms`` float32 ``(N, S)``.

    Depends on the first iteration only through ``first_encoder``'s weights (it reseeds every
    generator), so it gives the same model whether that encoder was just trained or loaded from
    the cache. The log's steps continue from ``first_steps``.
    """
    setup_start = time.perf_counter()
    layer = config.iteration2_layer
    layer = model_config.num_hidden_layers // 2 if layer is None else layer
    numpy_state = np.random.get_state()
    np.random.seed(seed + 1)
    torch.manual_seed(seed + 1)
    try:
        targets = torch.from_numpy(hidden_cluster_targets(
            first_encoder, waveforms, layer=layer, n_clusters=config.iteration2_clusters, seed=seed,
            silence_db=config.target_silence_db, silence_class=_silence_class(config),
        ))
        # as in HuBERT, the second iteration starts from a fresh initialisation
        objective = _build_objective(family, model_config, config, seed + 1, n_clusters=config.iteration2_clusters)
        setup_seconds = time.perf_counter() - setup_start
        start, cpu_start = time.perf_counter(), time.process_time()
        log = _optimise(objective, torch.from_numpy(waveforms), targets, steps=config.iteration2_steps, config=config,
                        seed=seed + 1, description=f"pretraining mini-{family} (iteration 2)", iteration=2,
                        progress=progress, first_step=first_steps)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        np.random.set_state(numpy_state)
    return PretrainResult(family, objective.encoder, log, seconds, cpu_seconds, setup_seconds, len(waveforms))


def _finished(family, encoder, model_config, log, seconds, cpu_seconds, setup_seconds, n_clips) -> PretrainResult:
    encoder = encoder.eval()
    # finetuning later should see the architecture's own rates, and the saved config the architecture's own
    # contrastive settings (the objective writes its distractor count into the encoder config)
    for name in (*DROPOUT_FIELDS, "layerdrop", "num_negatives"):
        if hasattr(model_config, name):
            setattr(encoder.config, name, getattr(model_config, name))
    return PretrainResult(family, encoder, log, seconds, cpu_seconds, setup_seconds, n_clips)


def _config_dict(model_config: PretrainedConfig) -> dict[str, Any]:
    data = model_config.to_dict()
    data.pop("transformers_version", None)  # a library upgrade alone should not retrain
    return data


def _key_dict(config: PretrainConfig) -> dict[str, Any]:
    """The config as hashed into the cache key: fields added later only when not at their default,
    so the keys of models pretrained before those fields existed are unchanged."""
    data = dataclasses.asdict(config)
    for name, default in _FIELDS_KEYED_WHEN_SET.items():
        if data[name] == default:
            del data[name]
    if config.iteration2_steps > 0:
        data["iteration2_version"] = ITERATION2_VERSION
    return data


# fields added after models were cached: hashed only when not at their default, so older keys stand
_FIELDS_KEYED_WHEN_SET = {"corpus": "synthetic", "target_normalisation": "corpus", "target_silence_db": None,
                          "silence_target": "ignore", "speaking_rate": (130, 210), "n_other_words": 0}


def pretrained_path(
    family: str, *, seed: int = 0, config: PretrainConfig | None = None, model_config: PretrainedConfig | None = None
) -> Path:
    """Where :func:`ensure_pretrained` keeps this family/config/seed (it may not exist yet)."""
    family = _family_name(family)
    config = config or PretrainConfig()
    model_config = model_config or _miniature_config(family)
    key = stable_hash(family, _config_dict(model_config), _key_dict(config), OBJECTIVE_VERSION,
                      _corpus_generator(config), seed)
    return cache_path("pretrained", f"{family}-{key}-seed{seed}")


def _corpus_generator(config: PretrainConfig) -> dict[str, Any]:
    """The pretraining corpus's generator and version: a regenerated corpus (a new SYNTH_VERSION or
    SPOKEN_VERSION, another espeak-ng) is other audio, so the model trained on it gets another key."""
    if config.corpus == "spoken":
        return {"generator": "spoken", "version": spoken.SPOKEN_VERSION, "espeakng_loader": spoken.espeak_loader_version()}
    return {"generator": "synthetic", "version": synth.SYNTH_VERSION}


def recipe_configs(recipe: str, family: str) -> tuple[PretrainConfig, PretrainedConfig]:
    """The ``(PretrainConfig, model config)`` of one family under a named recipe (:mod:`convexlab.recipes`)."""
    family = _family_name(family)
    spec = recipe_spec(recipe)
    config = PretrainConfig().replace(**{**spec.common, **spec.families.get(family, {})})
    return config, recipe_miniature_config(family, recipe)


# pretrained miniatures shipped with the package (recipes too slow for a cold `make book`); each
# folder is named exactly as its cache folder, so a changed recipe, objective or corpus never matches
COMMITTED_WEIGHTS = Path(__file__).resolve().parent / "weights"


def committed_pretrained(
    family: str, *, seed: int = 0, config: PretrainConfig | None = None, model_config: PretrainedConfig | None = None
) -> Path | None:
    """The committed folder (under :data:`COMMITTED_WEIGHTS`) of exactly this model, or None."""
    folder = COMMITTED_WEIGHTS / pretrained_path(family, seed=seed, config=config, model_config=model_config).name
    return folder if (folder / "training_log.json").is_file() else None


def export_pretrained(path: str | Path, destination: str | Path = COMMITTED_WEIGHTS, *, recipe: str) -> Path:
    """Copy a pretrained folder (from :func:`ensure_pretrained`) into ``destination`` under its own name.

    The copy keeps only what loading needs (``config.json``, the safetensors weights and
    ``training_log.json``, its numbers to 6 significant digits) and adds ``provenance.json``: the ``recipe`` it was made with, its
    family, seed and objective version, and the command that remakes it. Written atomically; an
    earlier export of the same key in ``destination`` (the same model, perhaps under another recipe
    name with the same fields) is replaced, so its provenance always names the last export's recipe.
    Returns the new folder.
    """
    path = Path(path)
    files = ["config.json", "model.safetensors", "training_log.json"]
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} lacks {missing}; export a folder made by ensure_pretrained")
    log = training_log(path)
    config, model_config = recipe_configs(recipe, log["family"])
    if pretrained_path(log["family"], seed=log["seed"], config=config, model_config=model_config).name != path.name:
        raise ValueError(f"{path} was not made by recipe {recipe!r} (its key differs); export it under the recipe that made it")
    target = Path(destination) / path.name
    # path may be the committed folder itself (ensure_pretrained serves it): read everything before the swap
    with atomic_dir(target, marker="training_log.json", replace=True) as tmp:
        for name in files[:2]:
            shutil.copyfile(path / name, tmp / name)
        # the log compacted (6 significant digits, no indentation): a third of the size, same content
        compact = {**log, "steps": [{k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in entry.items()}
                                    for entry in log["steps"]]}
        (tmp / "training_log.json").write_text(json.dumps(compact, sort_keys=True, separators=(",", ":")))
        save_json(tmp / "provenance.json", {
            "recipe": recipe,
            "family": log["family"],
            "seed": log["seed"],
            "objective_version": log["objective_version"],
            "command": (f"python -m convexlab pretrain --recipe {recipe} --family {log['family']} --seed {log['seed']} "
                        f"--threads {log['torch_threads']} --export"),
        })
    return target


def ensure_pretrained(
    family: str,
    *,
    seed: int = 0,
    config: PretrainConfig | None = None,
    model_config: PretrainedConfig | None = None,
    recipe: str | None = None,
    progress: bool | None = True,
) -> Path:
    """The folder of the pretrained miniature of ``family``, pretraining it first if needed.

    ``family``: ``"wav2vec2"``, ``"ccc-wav2vec2"``, ``"hubert"``, ``"wavlm"`` (or the
    ``"mini-..."`` model names). ``recipe`` names a :mod:`convexlab.recipes` entry instead of
    ``config`` and ``model_config``. A committed copy of exactly this model
    (:func:`committed_pretrained`) is used as it is; otherwise the cache folder, trained on first
    use. It is written atomically, so an interrupted run leaves nothing behind and the next call
    starts over; load it with ``AutoModel.from_pretrained``.
    """
    family = _family_name(family)
    if recipe is not None:
        if config is not None or model_config is not None:
            raise TypeError("Pass either recipe= or config=/model_config=, not both")
        config, model_config = recipe_configs(recipe, family)
    config = config or PretrainConfig()
    model_config = model_config or _miniature_config(family)
    path = pretrained_path(family, seed=seed, config=config, model_config=model_config)
    committed = COMMITTED_WEIGHTS / path.name  # as committed_pretrained, without hashing the key twice
    if (committed / "training_log.json").is_file():
        return committed
    if (path / "training_log.json").exists():
        return path
    first_iteration = None
    if has_second_iteration(family, config):
        # the second iteration starts from the first iteration's own cached model (trained now if missing)
        first_iteration = ensure_pretrained(family, seed=seed, config=first_iteration_config(config),
                                            model_config=model_config, progress=progress)
        result = _continue_from_first_iteration(first_iteration, family, seed=seed, config=config,
                                                model_config=model_config, progress=progress)
    else:
        result = pretrain(family, seed=seed, config=config, model_config=model_config, progress=progress)
    with atomic_dir(path, marker="training_log.json") as tmp:
        result.encoder.save_pretrained(tmp)
        save_json(
            tmp / "training_log.json",
            {
                "family": family,
                "objective": FAMILY_OBJECTIVES[family],
                "objective_version": OBJECTIVE_VERSION,
                "seed": seed,
                "recipe": recipe,
                "config": dataclasses.asdict(config),
                "model_config": _config_dict(model_config),
                "n_clips": result.n_clips,
                "seconds": result.seconds,
                "cpu_seconds": result.cpu_seconds,
                "setup_seconds": result.setup_seconds,
                "torch_threads": torch.get_num_threads(),
                "first_iteration": None if first_iteration is None else first_iteration.name,
                "steps": result.log,
            },
        )
    return path


def _continue_from_first_iteration(
    first_iteration: Path, family: str, *, seed: int, config: PretrainConfig, model_config: PretrainedConfig,
    progress: bool | None,
) -> PretrainResult:
    """The second iteration on top of the first-iteration folder ``first_iteration`` (from :func:`ensure_pretrained`)."""
    setup_start = time.perf_counter()
    waveforms = pretraining_waveforms(config)
    first_encoder = AutoModel.from_pretrained(first_iteration)
    first_log = training_log(first_iteration)
    setup_seconds = first_log["setup_seconds"] + time.perf_counter() - setup_start
    second = _second_iteration(family, first_encoder, seed=seed, config=config, model_config=model_config,
                               waveforms=waveforms, first_steps=len(first_log["steps"]), progress=progress)
    return _finished(family, second.encoder, model_config, first_log["steps"] + second.log,
                     first_log["seconds"] + second.seconds, first_log["cpu_seconds"] + second.cpu_seconds,
                     setup_seconds + second.setup_seconds, len(waveforms))


def training_log(path: str | Path) -> dict[str, Any]:
    """The ``training_log.json`` of a pretrained folder (loss per step under ``"steps"``)."""
    log_path = Path(path) / "training_log.json"
    if not log_path.exists():
        raise FileNotFoundError(f"No training log at {log_path}; create the folder with ensure_pretrained(family).")
    return load_json(log_path)


def loss_trend(log: dict[str, Any], *, iteration: int | None = None) -> tuple[float, float, int]:
    """(mean loss over the first tenth of the steps, over the last tenth, number of steps) of a training log.

    ``iteration`` (1 or 2) keeps the steps of that pretraining iteration only; None takes them all.
    """
    steps = [entry for entry in log["steps"] if iteration is None or entry.get("iteration", 1) == iteration]
    if not steps:
        raise ValueError(f"The training log has no steps of iteration {iteration}")
    losses = [entry["loss"] for entry in steps]
    window = max(1, len(losses) // 10)
    return float(np.mean(losses[:window])), float(np.mean(losses[-window:])), len(losses)
