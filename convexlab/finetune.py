"""Finetune a speech model for the word or speaker task with the Hugging Face ``Trainer``.

The model is ``AutoModelForAudioClassification`` (through :func:`convexlab.models.load_model`):
a linear projection and classifier on the mean over time of the last layer's output, masked
where there is padding (``use_weighted_layer_sum=False``). The CNN feature encoder is frozen, as
is common practice when finetuning these models. A pruned run (``num_layers=L``) loads the same
pretrained model and applies :func:`convexlab.prune.prune` before training, so it starts from
exactly the full model's first L layers and the same classification head (the head is
initialised from ``seed``, independently of the model's depth).

Fair comparison of full and pruned runs: both use the same training clips, the same seed and
``data_seed``, so the Trainer's seedable sampler draws the same batches in the same order; every
run records the clip ids of each batch it trained on (``batch_ids.json`` in the run folder, and
their digest in :attr:`FinetuneResult.batch_ids_digest`), so that can be checked, not assumed.

Where things go: each run has a folder ``cache_path("runs", <name>-<key>)`` (or ``output_dir``)
whose key (:func:`convexlab.cache.stage_key`) chains the starting weights' key
(:func:`convexlab.models.model_key`: weights and config, not the name) and the training set's
content hash with the task, the depth, every hyper-parameter and the seed. It holds ``checkpoints/`` while
training (an interrupted run resumes from the last epoch's checkpoint), then ``model/`` (the
finetuned model, ``from_pretrained``-ready), ``batch_ids.json`` and, written last,
``result.json``. A second call with the same inputs finds ``result.json`` and returns at once.

Several GPUs (or processes): the Trainer's own data-parallel support (DDP through accelerate),
no loop of ours. Launch the same command under ``torchrun`` or ``accelerate launch``::

    torchrun --nproc-per-node 4 -m convexlab prune-compare --model facebook/hubert-base-ls960 \\
        --task speaker --layer 2 --profile paper
    accelerate launch --num_processes 4 -m convexlab prune-compare ...

``batch_size`` (the profile's ``finetune_batch_size``) is the *global* batch: each of W processes
trains on ``batch_size / W`` clips of every step (it must divide evenly), so the run's key, its
batches and their order are those of a single-process run with ``batch_size``. The batch log
gathers every process's shard per step (:class:`_BatchRecordingTrainer`), so ``batch_ids.json``
is what the processes actually trained on. Only rank 0 prepares the run folder and writes the
model, ``batch_ids.json`` and ``result.json``; the other processes wait at a barrier and return
the result it wrote. Timing records carry ``world_size`` and ``per_device_batch_size``. Tested
with two CPU processes (gloo) against one in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from convexlab import distributed
from convexlab._progress import show_bars, transformers_bars
from convexlab.cache import atomic_dir, cache_path, load_json, profile_params, save_json, stable_hash, stage_key
from convexlab.data import load_task
from convexlab.extract import extract_layers
from convexlab.families import SAMPLE_RATE, TASKS
from convexlab.models import feature_extractor_for, load_model, model_key
from convexlab.profiles import Profile, get_profile
from convexlab.prune import count_parameters, num_transformer_layers, prune
from convexlab.timing import TrainingTimer, TrainingTiming, timing_context

__all__ = [
    "FinetuneResult",
    "finetune",
    "finetune_for_profile",
    "finetune_run_key",
    "cached_run",
    "FINETUNE_FIELDS",
    "training_dataset",
    "load_batch_ids",
    "finetuned_layer_embeddings",
]

FINETUNE_VERSION = 1  # bump when training changes meaning, so cached runs are not reused
BATCH_IDS_FILE = "batch_ids.json"
RESULT_FILE = "result.json"
KEY_FILE = "run_key.json"  # the key of the run a folder belongs to, written before training starts


@dataclass
class FinetuneResult:
    """What one finetuning run produced and what it cost."""

    model_name: str  # what was finetuned (miniature name, hub id or folder)
    task: str  # "word" or "speaker"
    num_layers: int  # transformer layers of the finetuned model (after pruning, if any)
    pruned: bool  # True if layers were removed before finetuning
    model_dir: Path  # the finetuned model, loadable with from_pretrained / convexlab.models.load_model
    run_dir: Path  # the run folder: model/, batch_ids.json, result.json (checkpoints/ while training)
    accuracy: float  # accuracy on the evaluation split, in [0, 1]
    macro_f1: float  # macro-averaged F1 over the evaluation split's classes (sklearn)
    eval_loss: float  # cross-entropy on the evaluation split
    chance_accuracy: float  # accuracy of always answering the evaluation split's most frequent class
    n_train: int  # training clips
    n_eval: int  # evaluation clips
    n_classes: int  # classes of the task
    n_parameters: int  # parameters of the finetuned model
    train_seconds: float  # wall time of Trainer.train
    seconds_per_epoch: float  # train_seconds / epochs
    seconds_per_sample: float  # train_seconds / training samples processed
    training: TrainingTiming  # the full training-time record, with its context
    history: list[dict]  # Trainer's log history (loss, learning rate, grad norm per logging step)
    batch_ids_digest: str  # hash of the clip ids of every training batch, in order
    n_batches: int  # training batches recorded
    hyperparameters: dict  # epochs, batch size, learning rate, ... as passed
    key: str  # cache key of this run
    context: dict = field(default_factory=dict)  # device, dtype, versions, dataset hash, splits

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["model_dir"], data["run_dir"] = str(self.model_dir), str(self.run_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneResult":
        data = dict(data)
        data["model_dir"], data["run_dir"] = Path(data["model_dir"]), Path(data["run_dir"])
        data["training"] = TrainingTiming.from_dict(data["training"])
        return cls(**data)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "FinetuneResult":
        """The result stored in a finished run folder."""
        path = Path(run_dir) / RESULT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a finished finetuning run; run finetune()")
        result = cls.from_dict(load_json(path))
        # The folder may have moved with its cache since it was written: trust where it is now.
        result.run_dir, result.model_dir = Path(run_dir), Path(run_dir) / "model"
        return result


# --------------------------------------------------------------------------- data for the Trainer


class _ClipDataset(torch.utils.data.Dataset):
    """Clip positions and label ids of one split; the audio is read by the collator."""

    def __init__(self, label_ids: np.ndarray):
        self.label_ids = label_ids  # (N,) int64

    def __len__(self) -> int:
        return len(self.label_ids)

    def __getitem__(self, index: int) -> dict:
        return {"sample_id": index, "label": int(self.label_ids[index])}


class _AudioCollator:
    """Reads a batch of clips and prepares it the way the model's feature extractor does."""

    def __init__(self, audio_dataset, feature_extractor):
        self.audio_dataset = audio_dataset
        self.feature_extractor = feature_extractor

    def __call__(self, items: list[dict]) -> dict:
        ids = [item["sample_id"] for item in items]
        audio = self.audio_dataset.batch(ids)  # (B, 16000) float32
        features = self.feature_extractor(list(audio), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return {
            "input_values": features["input_values"],
            "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "sample_ids": torch.tensor(ids, dtype=torch.long),
        }


class _BatchRecordingTrainer(Trainer):
    """A Trainer that records which clips each training step saw (and hides them from the model).

    Under a launcher every process sees its shard of the step's global batch; the shards are
    gathered (in rank order, which is the sampler's order: accelerate gives rank r the r-th
    per-device batch of each step) so that every process logs the global batch. When the
    training set is not a multiple of the global batch, accelerate completes the last step of an
    epoch with clips from the epoch's start (``even_batches``); those repeats are left out of the
    log, which is then the log a single process with the global batch writes."""

    def __init__(self, *args, n_train: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_log: list[list[int]] = []
        self.n_train = n_train

    def training_step(self, model, inputs, num_items_in_batch=None):
        local = inputs.pop("sample_ids").tolist()
        batch = [index for shard in distributed.all_gather_objects(local) for index in shard]
        seen = sum(len(logged) for logged in self.batch_log) % self.n_train  # clips of this epoch so far
        self.batch_log.append(batch[: self.n_train - seen])
        distributed.failure_point("training step")
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop("sample_ids", None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)


class _SaveBatchLog(TrainerCallback):
    """Stores the batch log in each checkpoint, so a resumed run still knows its whole batch order."""

    def __init__(self, trainer: _BatchRecordingTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                save_json(folder / BATCH_IDS_FILE, self.trainer.batch_log)


# --------------------------------------------------------------------------- keys and identities


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; use 'word' or 'speaker'")
    return task


# What a profile's finetuning run reads: profile field -> finetune() argument. (training_dataset
# also reads max_train_per_class and seed, and the corpus fields through load_task; they reach the
# run's key through the training set's content hash.)
_PROFILE_ARGUMENTS = {
    "finetune_epochs": "epochs",
    "finetune_batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "finetune_head_learning_rate": "head_learning_rate",
    "finetune_spec_augment": "spec_augment",
    "finetune_dropout": "dropout",
    "seed": "seed",
    "device": "device",
    "pretrain_recipe": "recipe",
}
FINETUNE_FIELDS = tuple(_PROFILE_ARGUMENTS)


def profile_arguments(profile) -> dict[str, Any]:
    """The :func:`finetune` arguments a profile sets (from :data:`FINETUNE_FIELDS`)."""
    return {_PROFILE_ARGUMENTS[name]: value for name, value in profile_params(profile, FINETUNE_FIELDS).items()}


def _hyperparameters(*, epochs, batch_size, learning_rate, head_learning_rate, weight_decay, warmup_ratio, seed,
                     mixed_precision, train_split, eval_split, pretrained, spec_augment, dropout) -> dict[str, Any]:
    # dropout is keyed only when set, so that the keys of runs made before it existed stand
    own_dropout = {} if dropout is None else {"dropout": float(dropout)}
    return own_dropout | {
        "epochs": float(epochs), "batch_size": int(batch_size), "learning_rate": float(learning_rate),
        "head_learning_rate": None if head_learning_rate is None else float(head_learning_rate),
        "weight_decay": float(weight_decay), "warmup_ratio": float(warmup_ratio), "seed": int(seed),
        "mixed_precision": mixed_precision, "train_split": train_split, "eval_split": eval_split,
        "pretrained": bool(pretrained), "spec_augment": bool(spec_augment), "frozen_feature_encoder": True,
    }


def _run_key(*, model: str, dataset: str, task: str, num_layers: int | None, hyperparameters: dict,
             device: str) -> str:
    """A run's key: its starting weights' key and training set's digest, plus everything it was given."""
    return stage_key("finetune", FINETUNE_VERSION, inputs={"model": model, "dataset": dataset},
                     params={"task": task, "num_layers": num_layers, "device": str(device), **hyperparameters})


def _run_name(model_name: str, task: str, num_layers: int | None) -> str:
    stem = Path(str(model_name)).name.replace("/", "_") or "model"
    depth = "full" if num_layers is None else f"L{num_layers}"
    return f"{stem}-{task}-{depth}"


def _cache_run_dir(model_name: str, task: str, num_layers: int | None, key: str) -> Path:
    return cache_path("runs", f"{_run_name(model_name, task, num_layers)}-{key}")


def _split(dataset, split: str):
    present = sorted(set(dataset.splits))
    if split not in present:
        raise ValueError(
            f"The {dataset.task} dataset has no {split!r} split (it has {present}); pass train_split=/eval_split= "
            f"naming one of those"
        )
    return dataset.subset(split)


def _trainer_device_args(device: str) -> dict:
    kind = torch.device(device)
    if kind.type == "cpu":
        return {"use_cpu": True}
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; pass device='cpu'")
        if kind.index not in (None, 0) and "LOCAL_RANK" not in os.environ:
            raise ValueError(
                f"device={device!r}: the Trainer trains on the first visible GPU. To use GPU {kind.index}, run "
                f"with CUDA_VISIBLE_DEVICES={kind.index} and device='cuda'"
            )
        return {}
    raise ValueError(f"Unsupported device {device!r}; use 'cpu' or 'cuda'")


def _mixed_precision_args(mixed_precision: str | None) -> dict:
    if mixed_precision in (None, "no", "float32"):
        return {}
    if mixed_precision in ("bf16", "bfloat16"):
        return {"bf16": True}
    if mixed_precision in ("fp16", "float16"):
        return {"fp16": True}
    raise ValueError(f"mixed_precision={mixed_precision!r}; use None, 'bf16' or 'fp16'")


def _optimizer(model, *, learning_rate: float, head_learning_rate: float | None, weight_decay: float):
    """AdamW with the encoder at ``learning_rate`` and the new head (projector, classifier) at
    ``head_learning_rate``: a fresh head may need larger steps than pretrained layers tolerate.
    Biases and norms get no weight decay, as in the Trainer's default optimizer. The Trainer adds
    its learning-rate schedule (warm-up, linear decay) to both groups."""
    head_names = ("projector.", "classifier.")
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            decays = parameter.ndim >= 2
            groups.setdefault((name.startswith(head_names), decays), []).append(parameter)
    head_lr = learning_rate if head_learning_rate is None else head_learning_rate
    return torch.optim.AdamW(
        [{"params": params, "lr": head_lr if is_head else learning_rate, "weight_decay": weight_decay if decays else 0.0}
         for (is_head, decays), params in sorted(groups.items())],
        lr=learning_rate,
    )


def _reset_head(model, *, seed: int) -> None:
    """Initialise the projector and classifier from ``seed`` alone, as HF initialises Linear layers,
    so full and pruned runs start from the same head whatever the RNG state before loading."""
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in (model.projector, model.classifier):
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            torch.nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------- finetuning


def finetune(
    model_name: str,
    dataset,
    *,
    output_dir: str | os.PathLike | None = None,
    num_layers: int | None = None,
    epochs: float = 3.0,
    batch_size: int = 16,
    learning_rate: float = 5e-4,
    head_learning_rate: float | None = None,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    pretrained: bool = True,
    recipe: str | None = None,
    spec_augment: bool = True,
    dropout: float | None = None,
    mixed_precision: str | None = None,
    train_split: str = "train",
    eval_split: str = "test",
    cache: bool = True,
    keep_checkpoints: bool = False,
    progress: bool | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> FinetuneResult:
    """Finetune ``model_name`` on ``dataset``'s train split; evaluate on its test split.

    ``dataset`` is a :class:`convexlab.data.AudioDataset` holding both splits (the word task's
    "train"/"validation"/"test", the speaker task's "train"/"test"); classes are the sorted labels of
    the whole dataset. ``num_layers=L`` prunes the model at layer L (keeps transformer layers 1..L)
    before finetuning. ``epochs`` may be fractional; ``batch_size`` is the global batch (split over
    the processes of a ``torchrun``/``accelerate launch`` run, see the module's docstring);
    ``warmup_ratio`` is the share of steps with a linear learning-rate warm-up (then linear decay).
    ``mixed_precision``: None, "bf16" or "fp16" (Trainer's autocast). ``progress=None`` shows the
    Trainer's progress bars unless ``TQDM_DISABLE`` is set. With ``cache=True`` a finished run with
    the same key is returned at once and an interrupted one resumes from its last checkpoint;
    ``keep_checkpoints=False`` deletes them once the run has finished (the final model is kept).
    ``head_learning_rate`` (default: ``learning_rate``) is the new head's learning rate;
    ``recipe``: a miniature's pretraining recipe (:func:`convexlab.models.load_model`; part of the
    starting weights' key). ``spec_augment`` keeps the model's SpecAugment time masking on while training (HF's default).
    ``dropout`` sets the model's hidden, attention, activation and head dropout rates while
    training (None: the checkpoint's own; :func:`convexlab.models.load_model`).
    ``callbacks``: extra ``TrainerCallback``s (not part of the cache key: they must not change
    the result).
    """
    task = _check_task(dataset.task)
    if epochs <= 0 or batch_size < 1 or learning_rate <= 0:
        raise ValueError(
            f"Need epochs > 0, batch_size >= 1 and learning_rate > 0; got epochs={epochs}, batch_size={batch_size}, "
            f"learning_rate={learning_rate}"
        )
    trainer_device = _trainer_device_args(device)
    distributed.init(device)  # a launched run: start the process group (the Trainer then shares it)
    n_processes = distributed.world().size
    if batch_size % n_processes:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and must split evenly over the {n_processes} processes of "
            f"this launch (per device: batch_size / processes); use a multiple of {n_processes}"
        )
    precision = _mixed_precision_args(mixed_precision)
    train_set, eval_set = _split(dataset, train_split), _split(dataset, eval_split)
    label_names = dataset.label_names  # classes of the whole dataset, so both splits share ids
    label_index = {name: i for i, name in enumerate(label_names)}
    train_labels = np.array([label_index[label] for label in train_set.labels], dtype=np.int64)
    eval_labels = np.array([label_index[label] for label in eval_set.labels], dtype=np.int64)

    hyperparameters = _hyperparameters(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, head_learning_rate=head_learning_rate,
        weight_decay=weight_decay, warmup_ratio=warmup_ratio, seed=seed, mixed_precision=mixed_precision,
        train_split=train_split, eval_split=eval_split, pretrained=pretrained, spec_augment=spec_augment,
        dropout=dropout)
    weights = model_key(str(model_name), pretrained=pretrained, seed=seed, recipe=recipe)
    key = _run_key(model=weights, dataset=dataset.content_hash(), task=task, num_layers=num_layers,
                   hyperparameters=hyperparameters, device=device)
    run_dir = Path(output_dir) if output_dir is not None else _cache_run_dir(model_name, task, num_layers, key)
    # The main process decides (finished / start or resume) and prepares the folder; the others follow.
    finished = distributed.broadcast_object(_prepare_run_dir(run_dir, key, cache=cache) if distributed.is_main() else None)
    if finished:
        return FinetuneResult.load(run_dir)

    with distributed.main_process_first(device):  # a miniature is pretrained and cached once, by rank 0
        model = load_model(str(model_name), task=task, num_labels=len(label_names), label_names=label_names,
                           pretrained=pretrained, seed=seed, recipe=recipe, dropout=dropout, device="cpu")
    n_layers_full = num_transformer_layers(model)
    if num_layers is not None:
        prune(model, num_layers)
    _reset_head(model, seed=seed)
    model.config.use_weighted_layer_sum = False
    model.config.apply_spec_augment = bool(spec_augment)  # read at every forward: masks time spans while training
    model.freeze_feature_encoder()
    model.train()

    checkpoints = run_dir / "checkpoints"
    args = _training_arguments(checkpoints, epochs=epochs, batch_size=batch_size // n_processes,
                               learning_rate=learning_rate,
                               weight_decay=weight_decay, warmup_ratio=warmup_ratio, seed=seed,
                               steps_per_epoch=max(1, len(train_set) // batch_size), progress=progress,
                               extra={**trainer_device, **precision})
    trainer = _BatchRecordingTrainer(
        model=model,
        args=args,
        train_dataset=_ClipDataset(train_labels),
        data_collator=_AudioCollator(train_set, feature_extractor_for(model)),
        optimizers=(_optimizer(model, learning_rate=learning_rate, head_learning_rate=head_learning_rate,
                               weight_decay=weight_decay), None),
        n_train=len(train_set),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log line when bars are off; history keeps them
    timer = TrainingTimer(device=trainer.args.device)
    trainer.add_callback(timer)
    trainer.add_callback(_SaveBatchLog(trainer))
    for callback in callbacks:
        trainer.add_callback(callback)

    resume_from = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume_from is not None and (Path(resume_from) / BATCH_IDS_FILE).is_file():
        trainer.batch_log = load_json(Path(resume_from) / BATCH_IDS_FILE)
    n_logged_before = len(trainer.batch_log)
    with transformers_bars(progress):
        trainer.train(resume_from_checkpoint=resume_from)
    samples_here = sum(len(batch) for batch in trainer.batch_log[n_logged_before:])
    training = timer.result(n_samples=samples_here, batch_size=batch_size,
                            dtype=mixed_precision if precision else "float32")
    training.context.update(world_size=n_processes, per_device_batch_size=batch_size // n_processes)

    accuracy, macro_f1, eval_loss = _evaluate(trainer, eval_set, eval_labels, progress=progress)

    batch_clips = [[train_set.clip_ids[i] for i in batch] for batch in trainer.batch_log]
    model_dir = run_dir / "model"
    result = FinetuneResult(
        model_name=str(model_name),
        task=task,
        num_layers=num_transformer_layers(model),
        pruned=num_transformer_layers(model) < n_layers_full,
        model_dir=model_dir,
        run_dir=run_dir,
        accuracy=accuracy,
        macro_f1=macro_f1,
        eval_loss=eval_loss,
        chance_accuracy=float(np.bincount(eval_labels).max() / len(eval_labels)),
        n_train=len(train_set),
        n_eval=len(eval_set),
        n_classes=len(label_names),
        n_parameters=count_parameters(model),
        train_seconds=training.train_seconds,
        seconds_per_epoch=training.seconds_per_epoch,
        seconds_per_sample=training.seconds_per_sample,
        training=training,
        history=list(trainer.state.log_history),
        batch_ids_digest=stable_hash(batch_clips),
        n_batches=len(batch_clips),
        hyperparameters=hyperparameters,
        key=key,
        context={
            **timing_context(device=trainer.args.device, dtype="float32", batch_size=batch_size),
            "weights": weights,
            "dataset_hash": dataset.content_hash(),
            "n_layers_full": n_layers_full,
            "world_size": trainer.args.world_size,
            "per_device_batch_size": batch_size // n_processes,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    if trainer.is_world_process_zero():  # the only writer; the other processes read what it wrote
        with atomic_dir(model_dir, marker="config.json") as folder, transformers_bars(progress):
            trainer.save_model(str(folder))
            # the preprocessing it was trained with travels with it (extraction reads it back)
            trainer.data_collator.feature_extractor.save_pretrained(str(folder))
        save_json(run_dir / BATCH_IDS_FILE, batch_clips)
        save_json(run_dir / RESULT_FILE, result.to_dict())  # written last: marks the run finished
        if not keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    model.eval()
    distributed.barrier()
    return result if distributed.is_main() else FinetuneResult.load(run_dir)


def _is_finished(run_dir: Path, key: str) -> bool:
    """Whether ``run_dir`` holds the finished run of ``key``."""
    marker = run_dir / KEY_FILE
    return marker.is_file() and load_json(marker) == key and (run_dir / RESULT_FILE).is_file()


def _prepare_run_dir(run_dir: Path, key: str, *, cache: bool) -> bool:
    """True if ``run_dir`` holds this run finished; else make it this run's folder (keeping its
    checkpoints if it is this run's, interrupted) and return False. Only the main process calls it."""
    if cache and _is_finished(run_dir, key):
        return True
    marker = run_dir / KEY_FILE
    stored_key = load_json(marker) if marker.is_file() else None
    if run_dir.is_dir() and stored_key is None and any(run_dir.iterdir()):
        raise ValueError(f"output_dir {run_dir} exists and is not a finetuning run folder; pass a new or empty folder")
    if run_dir.exists() and (not cache or stored_key != key):
        shutil.rmtree(run_dir)  # another run's folder: its checkpoints must not be resumed
    run_dir.mkdir(parents=True, exist_ok=True)
    save_json(marker, key)
    return False


def _training_arguments(output_dir: Path, *, epochs, batch_size, learning_rate, weight_decay, warmup_ratio, seed,
                        steps_per_epoch: int, progress, extra: dict) -> TrainingArguments:
    """The Trainer's settings: seeded sampler, a checkpoint per epoch (for resuming), no reporting."""
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup_ratio,  # a float below 1 is a fraction of the steps
        lr_scheduler_type="linear",
        seed=seed,
        data_seed=seed,  # the sampler's own generator: batch order independent of the model
        eval_strategy="no",
        save_strategy="epoch",
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 4),
        report_to=[],
        disable_tqdm=not show_bars(progress),
        remove_unused_columns=False,  # keep sample_ids for the batch log
        dataloader_num_workers=0,
        # The classifier's loss is a plain mean over the clips (it ignores num_items_in_batch), so the
        # Trainer must not rescale it by the number of processes: DDP's gradient mean over equal
        # per-device shards is then the gradient of the global batch, as with one process.
        average_tokens_across_devices=False,
        **extra,
    )


def _evaluate(trainer: Trainer, eval_set, eval_labels: np.ndarray, *, progress) -> tuple[float, float, float]:
    """Accuracy, macro-F1 and loss on the evaluation split (through the Trainer, so multi-GPU works)."""
    trainer.data_collator = _AudioCollator(eval_set, trainer.data_collator.feature_extractor)
    with transformers_bars(progress):
        prediction = trainer.predict(_ClipDataset(eval_labels))
    predicted = np.asarray(prediction.predictions).argmax(axis=-1)
    accuracy, macro_f1 = _scores(eval_labels, predicted)
    return accuracy, macro_f1, float(prediction.metrics.get("test_loss", float("nan")))


def _scores(true: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return (
        float(accuracy_score(true, predicted)),
        float(f1_score(true, predicted, average="macro", labels=np.unique(true), zero_division=0)),
    )


def load_batch_ids(result_or_run_dir: FinetuneResult | str | os.PathLike) -> list[list[str]]:
    """The clip ids of every training batch of a finished run, in training order."""
    run_dir = result_or_run_dir.run_dir if isinstance(result_or_run_dir, FinetuneResult) else Path(result_or_run_dir)
    path = Path(run_dir) / BATCH_IDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a finished finetuning run?")
    return load_json(path)


# --------------------------------------------------------------------------- profile-level helpers


def training_dataset(task: str, profile) -> Any:
    """The dataset a profile finetunes on: ``load_task(task, profile)`` with its train split capped
    at ``profile.max_train_per_class`` clips per class (drawn with ``profile.seed``) when that is
    set; the other splits are kept whole, so evaluation does not change with the cap."""
    dataset = load_task(_check_task(task), profile)
    if profile.max_train_per_class is None:
        return dataset
    return dataset.subsample(profile.max_train_per_class, seed=profile.seed, split="train")


def finetune_for_profile(model_name: str, task: str, profile, *, num_layers: int | None = None,
                         **overrides: Any) -> FinetuneResult:
    """:func:`finetune` with the data, sizes and hyper-parameters of a :class:`convexlab.Profile`
    (``finetune_epochs``, ``finetune_batch_size``, ``learning_rate``, ``finetune_head_learning_rate``,
    ``finetune_spec_augment``, ``finetune_dropout``, ``max_train_per_class``, ``seed``, ``device``, ``pretrain_recipe``); ``overrides`` are passed on to :func:`finetune`. Cached like it."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    kwargs = profile_arguments(profile) | overrides
    return finetune(model_name, training_dataset(task, profile), num_layers=num_layers, **kwargs)


def finetune_run_key(model_name: str, task: str, profile, *, num_layers: int | None = None,
                     **overrides: Any) -> str:
    """The key :func:`finetune_for_profile` would give its run (:attr:`FinetuneResult.key`), without training.

    Built by the same code as the run's own key: the starting weights' key
    (:func:`convexlab.models.model_key`), the training set's content hash, and every argument."""
    import inspect

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    defaults = {name: p.default for name, p in inspect.signature(finetune).parameters.items()
                if p.default is not inspect.Parameter.empty}
    kwargs = defaults | profile_arguments(profile) | overrides
    hyperparameters = _hyperparameters(**{name: kwargs[name] for name in inspect.signature(_hyperparameters).parameters})
    weights = model_key(str(model_name), pretrained=kwargs["pretrained"], seed=kwargs["seed"], recipe=kwargs["recipe"])
    dataset = training_dataset(task, profile)
    return _run_key(model=weights, dataset=dataset.content_hash(), task=_check_task(task), num_layers=num_layers,
                    hyperparameters=hyperparameters, device=kwargs["device"])


def cached_run(model_name: str, task: str, profile, *, num_layers: int | None = None,
               **overrides: Any) -> FinetuneResult | None:
    """The finished run :func:`finetune_for_profile` would return from its cache, or None if it would train.

    Only for runs in the cache (``output_dir`` not among ``overrides``); trains and loads nothing.
    """
    if "output_dir" in overrides:
        raise ValueError("cached_run() looks in the cache only; a run with its own output_dir is not there")
    key = finetune_run_key(model_name, task, profile, num_layers=num_layers, **overrides)
    run_dir = _cache_run_dir(model_name, _check_task(task), num_layers, key)
    return FinetuneResult.load(run_dir) if _is_finished(run_dir, key) else None


def finetuned_layer_embeddings(result_or_path: FinetuneResult | str | os.PathLike, dataset, *,
                               batch_size: int = 16, device: str = "cpu", dtype=torch.float32,
                               cache: bool = True, progress: bool | None = None):
    """Layer-wise mean-pooled embeddings of a finetuned model's encoder, for before/after convexity.

    ``result_or_path``: a :class:`FinetuneResult` or its ``model_dir``. Returns
    :class:`convexlab.extract.LayerEmbeddings` with ``embeddings`` of shape (L + 1, N, D), where L is
    the finetuned model's depth; labels of both concepts travel with it (``words``, ``speakers``).
    """
    model_dir = result_or_path.model_dir if isinstance(result_or_path, FinetuneResult) else Path(result_or_path)
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no finetuned model (no config.json); run finetune() first")
    encoder = load_model(str(model_dir), device=device, dtype=dtype)  # AutoModel: the encoder without the head
    return extract_layers(encoder, dataset, batch_size=batch_size, device=device, dtype=dtype, cache=cache,
                          progress=progress)
