"""Layer-wise representations: every hidden state of a model, mean-pooled over time, cached.

``extract_layers(model, dataset)`` runs the model once over the clips with
``output_hidden_states=True`` and returns an array (L+1, N, D): ``embeddings[l]`` is
``hidden_states[l]`` averaged over the clip's frames (layer 0 is the input to the first
transformer layer, layer l the output of transformer layer l), with padding frames left out of
the mean. No other normalisation, as in the paper.

The result is cached on disk under a key made of everything that determines it: the model's
config and a digest of its weights, the dataset's content hash, the pooling, the preprocessing
and the dtype. Every finished batch is written as its own chunk, so an interrupted run resumes
where it stopped; the chunks are then consolidated into one file. A cache file that cannot be
read, or whose key, clip ids or shape do not match, is reported with a warning and rebuilt.

Under ``torchrun``/``accelerate launch`` (``python -m convexlab extract`` or any caller of
:func:`extract_layers`) the batches are dealt out to the processes in turn (batch i to rank
i mod W; no clip twice, no padding), each process writes only its own batches' chunks, and rank 0
assembles them in clip order into the one cache entry, which the others then read. The batch
boundaries are those of a single-process run, so the array is the same. With ``cache=False``
the batches are gathered through the process group instead. A process that fails leaves the
chunks finished so far and no ``embeddings.npz``; the rerun computes only the missing chunks.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from convexlab import distributed
from convexlab._progress import tqdm_disable
from convexlab.cache import atomic_write, cache_path, stable_hash, stage_key
from convexlab.data import SAMPLE_RATE, AudioDataset
from convexlab.models import VOLATILE_CONFIG_KEYS, dtype_name, feature_extractor_for, load_model, torch_dtype
from convexlab.profiles import get_profile

__all__ = ["LayerEmbeddings", "pooled_hidden_states", "extract_layers", "layer_embeddings", "model_fingerprint"]

EXTRACT_VERSION = 1  # bump when the extraction's output changes for the same inputs (invalidates caches)
POOLING = "mean-over-unpadded-frames"


@dataclass
class LayerEmbeddings:
    embeddings: np.ndarray  # float32 (L+1, N, D): mean-pooled hidden_states[l] of every clip
    labels: np.ndarray  # (N,) str: each clip's label for the dataset's task
    clip_ids: np.ndarray  # (N,) str: "<word>/<speaker>_nohash_<n>.wav"
    words: np.ndarray  # (N,) str: each clip's word (for the cross-task analysis)
    speakers: np.ndarray  # (N,) str: each clip's speaker id
    model_id: str  # what the model was loaded as: miniature name, hub id or folder
    meta: dict = field(default_factory=dict)  # task, cache key and file, dtype, pooling, batch size

    @property
    def n_layers(self) -> int:
        """Number of hidden states L+1 (the input to the transformer plus each layer's output)."""
        return self.embeddings.shape[0]

    def layer(self, index: int) -> np.ndarray:
        """float32 (N, D): the pooled hidden state ``index`` of every clip."""
        return self.embeddings[index]

    def concept(self, name: str) -> np.ndarray:
        """(N,) str labels of a concept: "word" or "speaker" (whatever the dataset's task was)."""
        if name == "word":
            return self.words
        if name == "speaker":
            return self.speakers
        raise ValueError(f"Unknown concept {name!r}; use 'word' or 'speaker'")


def pooled_hidden_states(
    model: PreTrainedModel, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over time of every hidden state, counting only frames that hold audio.

    ``input_values`` (B, S) samples; ``attention_mask`` (B, S) 1 for samples, 0 for padding (or
    None: every frame counts). Returns float32 (L+1, B, D). The frame mask comes from the model's
    own ``_get_feature_vector_attention_mask`` (the conv stack's output lengths).
    """
    outputs = model(input_values, attention_mask=attention_mask, output_hidden_states=True)
    hidden = torch.stack(outputs.hidden_states).float()  # (L+1, B, T, D)
    if attention_mask is None:
        return hidden.mean(dim=2)
    frames = model._get_feature_vector_attention_mask(hidden.shape[2], attention_mask).to(hidden.dtype)  # (B, T)
    summed = (hidden * frames[None, :, :, None]).sum(dim=2)
    return summed / frames.sum(dim=1)[None, :, None]


def model_fingerprint(model: PreTrainedModel) -> str:
    """A digest of what the model computes: its config (minus load-time details) and its weights."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return stable_hash(config, digest.hexdigest())


def _cache_folder(model_id: str, key: str) -> Path:
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", model_id).strip("_")[-48:] or "model"
    return cache_path("embeddings", f"{readable}-{key}")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def _load_checked(path: Path, *, key: str, clip_ids: tuple[str, ...], shape: tuple[int, int, int]) -> np.ndarray | None:
    """The pooled array stored at ``path`` if it is readable and matches; else warn and return None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            problem = None
            if str(stored["key"]) != key:
                problem = "its key does not match (stale: made by another model, dataset or setting)"
            elif tuple(stored["clip_ids"].tolist()) != tuple(clip_ids):
                problem = "its clip ids do not match"
            elif stored["pooled"].shape != shape or stored["pooled"].dtype != np.float32:
                problem = f"its array has shape {stored['pooled'].shape} {stored['pooled'].dtype}, expected {shape} float32"
            else:
                pooled = stored["pooled"]
                if not np.isfinite(pooled).all():
                    problem = "it holds non-finite values"
                else:
                    return pooled
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        problem = f"it cannot be read ({type(err).__name__}: {err})"
    warnings.warn(f"Embedding cache file {path} is not usable: {problem}. Rebuilding it.", stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def extract_layers(
    model: PreTrainedModel,
    dataset: AudioDataset,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    cache: bool = True,
    progress: bool | None = None,
    model_id: str | None = None,
) -> LayerEmbeddings:
    """Mean-pooled hidden states of every layer for every clip of ``dataset``.

    Returns :class:`LayerEmbeddings` with ``embeddings`` float32 (L+1, N, D) in dataset order.
    The model is moved to ``device``/``dtype`` and put in eval mode; inputs are prepared by the
    checkpoint's feature extractor (:func:`convexlab.models.feature_extractor_for`). ``cache``:
    reuse or write the on-disk cache (resumes an interrupted run). ``progress``: a progress bar
    (None: in a terminal or notebook unless ``TQDM_DISABLE`` is set).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if len(dataset) == 0:
        raise ValueError("The dataset has no clips; check the task, split and subsampling that produced it")
    dtype = torch_dtype(dtype)
    distributed.init(str(device))
    device = distributed.local_device(device)  # "cuda" under a launcher: this process's GPU
    model = model.to(device=device, dtype=dtype).eval()
    model_id = model_id or getattr(model.config, "_name_or_path", "") or type(model).__name__
    preprocess = feature_extractor_for(model)
    use_mask = bool(preprocess.return_attention_mask)
    n_states, n_clips, width = model.config.num_hidden_layers + 1, len(dataset), model.config.hidden_size
    settings = dict(version=EXTRACT_VERSION, pooling=POOLING, dtype=dtype_name(dtype),
                    do_normalize=bool(preprocess.do_normalize), attention_mask=use_mask)
    key = stage_key("layer-embeddings", EXTRACT_VERSION, inputs={"model": model_fingerprint(model),
                                                                 "dataset": dataset.content_hash()}, params=settings)
    meta = dict(settings, task=dataset.task, key=key, batch_size=batch_size, n_layers=n_states - 1,
                dataset=dataset.meta)

    folder = _cache_folder(model_id, key) if cache else None
    if folder is not None:
        meta["cache_file"] = str(folder / "embeddings.npz")
        pooled = _load_checked(folder / "embeddings.npz", key=key, clip_ids=dataset.clip_ids,
                               shape=(n_states, n_clips, width)) if distributed.is_main() else None
        if distributed.broadcast_object(pooled is not None):  # rank 0 decides for all: a hit or a run
            if pooled is None:
                pooled = _load_checked(folder / "embeddings.npz", key=key, clip_ids=dataset.clip_ids,
                                       shape=(n_states, n_clips, width))
            return _result(pooled, dataset, model_id, dict(meta, cache_hit=True))

    # Under a launcher each process takes every world-size-th batch (no clip twice, none padded in),
    # writes those batches' chunks only, and the main process assembles them in clip order. The
    # batch boundaries are those of a single-process run, so the result is the same array.
    me = distributed.world()
    starts = list(range(0, n_clips, batch_size))
    mine: dict[int, np.ndarray] = {}
    for start in tqdm(starts[me.rank::me.size], desc=f"hidden states of {model_id}", unit="batch",
                      disable=tqdm_disable(progress) or not distributed.is_main()):
        stop = min(start + batch_size, n_clips)
        ids = dataset.clip_ids[start:stop]
        chunk = _chunk_path(folder, start, stop) if folder is not None else None
        stored = _load_checked(chunk, key=key, clip_ids=ids, shape=(n_states, stop - start, width)) if chunk else None
        if stored is None:
            distributed.failure_point("extraction batch")
            stored = _pool_batch(model, preprocess, dataset.batch(range(start, stop)), use_mask, device, dtype)
            if chunk is not None:
                _save_npz(chunk, pooled=stored, clip_ids=np.array(ids), key=np.array(key))
        mine[start] = stored

    if folder is None:  # nothing on disk: every process gets every batch through the process group
        parts = {start: part for shard in distributed.all_gather_objects(mine) for start, part in shard.items()}
        pooled = _assemble(parts, starts, (n_states, n_clips, width))
        return _result(pooled, dataset, model_id, dict(meta, cache_hit=False, world_size=me.size))

    distributed.barrier()  # every chunk is on disk
    if distributed.is_main():
        parts = dict(mine)
        for start in starts:
            if start not in parts:
                stop = min(start + batch_size, n_clips)
                parts[start] = _load_checked(_chunk_path(folder, start, stop), key=key,
                                             clip_ids=dataset.clip_ids[start:stop], shape=(n_states, stop - start, width))
                if parts[start] is None:
                    raise RuntimeError(f"The chunk of clips {start}..{stop} written by another process is missing")
        pooled = _assemble(parts, starts, (n_states, n_clips, width))
        _save_npz(folder / "embeddings.npz", pooled=pooled, clip_ids=np.array(dataset.clip_ids), key=np.array(key),
                  meta=np.array(json.dumps(meta, default=str)))
        shutil.rmtree(folder / "chunks", ignore_errors=True)
    distributed.barrier()  # the entry is published
    if not distributed.is_main():
        pooled = _load_checked(folder / "embeddings.npz", key=key, clip_ids=dataset.clip_ids,
                               shape=(n_states, n_clips, width))
        if pooled is None:
            raise RuntimeError(f"The main process did not publish {folder / 'embeddings.npz'}")
    return _result(pooled, dataset, model_id, dict(meta, cache_hit=False, world_size=me.size))


def _chunk_path(folder: Path, start: int, stop: int) -> Path:
    return folder / "chunks" / f"{start:07d}-{stop:07d}.npz"


def _assemble(parts: dict[int, np.ndarray], starts: list[int], shape: tuple[int, int, int]) -> np.ndarray:
    pooled = np.empty(shape, dtype=np.float32)
    for start in starts:
        pooled[:, start:start + parts[start].shape[1]] = parts[start]
    return pooled


def _pool_batch(model, preprocess, audio: np.ndarray, use_mask: bool, device, dtype) -> np.ndarray:
    """float32 (L+1, B, D) for one batch of clips (B, S)."""
    inputs = preprocess(list(audio), sampling_rate=SAMPLE_RATE, return_tensors="pt",
                        return_attention_mask=use_mask)
    input_values = inputs["input_values"].to(device=device, dtype=dtype)
    attention_mask = inputs["attention_mask"].to(device) if use_mask else None
    with torch.inference_mode():
        return pooled_hidden_states(model, input_values, attention_mask).cpu().numpy()


def _result(pooled: np.ndarray, dataset: AudioDataset, model_id: str, meta: dict) -> LayerEmbeddings:
    return LayerEmbeddings(
        embeddings=pooled,
        labels=np.array(dataset.labels),
        clip_ids=np.array(dataset.clip_ids),
        words=np.array(dataset.words),
        speakers=np.array(dataset.speakers),
        model_id=model_id,
        meta=meta,
    )


def layer_embeddings(
    model_name: str,
    dataset: AudioDataset,
    *,
    profile=None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int | None = None,
    pretrained: bool = True,
    seed: int | None = None,
    progress: bool | None = None,
) -> LayerEmbeddings:
    """Load ``model_name`` (see :func:`convexlab.models.load_model`) and extract its layers, cached.

    ``device``, ``dtype``, ``batch_size`` and ``seed`` default to the profile's (``"lite"`` when
    no profile is given).
    """
    profile = get_profile(profile if profile is not None else "lite")
    device = device or profile.device
    dtype = torch_dtype(dtype or profile.dtype)
    batch_size = batch_size or profile.batch_size
    seed = profile.seed if seed is None else seed
    with distributed.main_process_first(device):  # a miniature is pretrained and cached once, by rank 0
        model = load_model(model_name, pretrained=pretrained, device="cpu", dtype=dtype, seed=seed,
                           recipe=profile.pretrain_recipe)
    result = extract_layers(model, dataset, batch_size=batch_size, device=device, dtype=dtype, cache=True,
                            progress=progress, model_id=model_name)
    result.meta.update(pretrained=pretrained, seed=seed, profile=profile.name)
    return result
