"""A stand-in for a user's warm caches, so that the ``paper`` profile can run with no network.

The paper profile loads four hub checkpoints and reads Speech Commands v0.02. This module writes
both, made by convexlab itself:

* :func:`build_hf_cache` — a Hugging Face cache (the ``HF_HOME`` layout:
  ``hub/models--<org>--<name>/{blobs,snapshots/<rev>,refs/main}``) holding the four real hub ids
  in the formats those repositories really use: ``config.json`` + ``model.safetensors`` +
  ``preprocessor_config.json`` for ``facebook/wav2vec2-base``, ``microsoft/wavlm-base`` and
  ``facebook/hubert-base-ls960``; ``config.json`` + a pickled ``pytorch_model.bin`` and *no*
  preprocessor config for ``vasista22/ccc-wav2vec2-base``. The architectures are the real ones
  (:func:`convexlab.models.base_config`: 12 post-layer-norm transformer layers, group-norm CNN),
  the weights random. ``width="base"`` keeps the true size (768 wide, ~95 M parameters: what a
  real run costs); ``width="small"`` keeps the 12 layers, the conv strides (20 ms frames) and
  every structural choice, but narrows every width, for CI.
* :func:`build_speech_commands` — a corpus in the real v0.02 layout: the 35 word folders,
  ``_background_noise_/`` (a few long recordings and a README), ``validation_list.txt``,
  ``testing_list.txt``, ``LICENSE`` and ``README.md``, clips named
  ``<8 hex digits>_nohash_<n>.wav`` (16-bit, 16 kHz, mono), whole speakers in the list files, and
  a long-tailed speaker distribution: a few speakers with 50 or more clips (most of them in the
  training split, one in each list file) and many with a handful.

:func:`build_fixture` writes both under one folder; ``make rehearse`` runs every chapter with
``--profile paper`` against it (``HF_HUB_OFFLINE=1``, CPU, sizes shrunk only through profile
fields: :data:`REHEARSAL_OVERRIDES`). It sets the profile's ``rehearsal`` field, so the chapters
label every figure as a random-weight rehearsal and report their checks of results instead of
asserting them (:func:`convexlab.profiles.expect_result`), and puts a banner saying so after each
executed notebook's title (:func:`label_notebook`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from convexlab.book import book_root, chapter_names, chapter_parameters, run_book
from convexlab.cache import atomic_dir, cache_path, save_json
from convexlab.families import SAMPLE_RATE
from convexlab.models import FAMILY_CONFIG_KEY, base_config, family_of
from convexlab.profiles import PROFILES, get_profile
from convexlab.synth import _wav_bytes, lexicon, speaker_voices, synthesize_clips

__all__ = [
    "SPEECH_COMMANDS_WORDS",
    "REHEARSAL_OVERRIDES",
    "PREPROCESSOR_CONFIGS",
    "rehearsal_config",
    "build_hf_cache",
    "build_speech_commands",
    "build_fixture",
    "rehearsal_root",
    "rehearsal_env",
    "rehearsal_parameters",
    "rehearsal_banner",
    "label_notebook",
    "run_rehearsal",
]

FIXTURE_VERSION = 1  # bump when what the fixture holds changes

# The 35 words of Speech Commands v0.02 (its folder names).
SPEECH_COMMANDS_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
    "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)

# What each repository's preprocessor_config.json holds (the ccc-wav2vec2 repository has none).
_EXTRACTOR_COMMON = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                     "padding_side": "right", "padding_value": 0.0, "sampling_rate": SAMPLE_RATE}
PREPROCESSOR_CONFIGS: dict[str, dict | None] = {
    "facebook/wav2vec2-base": {**_EXTRACTOR_COMMON, "do_normalize": True, "return_attention_mask": False},
    "microsoft/wavlm-base": {**_EXTRACTOR_COMMON, "do_normalize": False, "return_attention_mask": True},
    "facebook/hubert-base-ls960": {**_EXTRACTOR_COMMON, "do_normalize": True, "return_attention_mask": False},
    "vasista22/ccc-wav2vec2-base": None,
}
# The class each repository's weights were saved from (its config's "architectures").
_ARCHITECTURES = {
    "facebook/wav2vec2-base": "Wav2Vec2ForPreTraining",
    "microsoft/wavlm-base": "WavLMModel",
    "facebook/hubert-base-ls960": "HubertModel",
    "vasista22/ccc-wav2vec2-base": "Wav2Vec2ForPreTraining",
}
_SAFETENSORS = {"facebook/wav2vec2-base": True, "microsoft/wavlm-base": True,
                "facebook/hubert-base-ls960": True, "vasista22/ccc-wav2vec2-base": False}

# The small width: every width shrunk, 12 layers and the 20 ms frames kept (so layer indices,
# pruning depths and sequence lengths are those of a real run).
_SMALL = dict(
    hidden_size=32, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    classifier_proj_size=32,
)
_SMALL_QUANTISER = dict(num_codevectors_per_group=32, codevector_dim=32, proj_codevector_dim=32)

# The profile fields `make rehearse` shrinks (and nothing else): a few clips per class, a
# fraction of an epoch, few timed passes. Every code path of the paper profile still runs.
REHEARSAL_OVERRIDES: dict = {
    "n_per_class": 6,
    "n_bootstrap": 3,
    "max_pairs": 200,
    "batch_size": 16,
    "finetune_epochs": 1.0,
    "finetune_batch_size": 8,
    "max_train_per_class": 4,
    "timing_batch_size": 4,
    "timing_repeats": 2,
}


def rehearsal_root() -> Path:
    """Where ``make rehearse`` keeps its fixture: ``<cache>/rehearsal/v<FIXTURE_VERSION>``."""
    return cache_path("rehearsal", f"v{FIXTURE_VERSION}")


def rehearsal_config(hub_id: str, *, width: str = "small"):
    """The architecture config written for ``hub_id``: the real one at ``width="base"``."""
    if width not in ("small", "base"):
        raise ValueError(f"width={width!r}; use 'small' (CI) or 'base' (the real size)")
    if hub_id not in _ARCHITECTURES:
        raise ValueError(f"No rehearsal checkpoint for {hub_id!r}; known: {sorted(_ARCHITECTURES)}")
    family = family_of(hub_id)
    config = base_config(family)
    if hasattr(config, FAMILY_CONFIG_KEY):  # a real checkpoint's config does not carry it
        delattr(config, FAMILY_CONFIG_KEY)
    if width == "small":
        for key, value in _SMALL.items():
            setattr(config, key, value)
        if config.model_type == "wav2vec2":
            for key, value in _SMALL_QUANTISER.items():
                setattr(config, key, value)
    config.architectures = [_ARCHITECTURES[hub_id]]
    return config


def _revision(files: dict[str, bytes]) -> str:
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()  # 40 hex digits, like a git commit


def _write_repo(hub: Path, hub_id: str, files: dict[str, bytes]) -> Path:
    """One repository in huggingface_hub's cache layout: content-addressed blobs, a snapshot of
    relative symlinks to them, and ``refs/main`` naming the snapshot's revision."""
    repo = hub / ("models--" + hub_id.replace("/", "--"))
    revision = _revision(files)
    snapshot = repo / "snapshots" / revision
    if repo.exists():
        shutil.rmtree(repo)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        blob = hashlib.sha256(content).hexdigest()
        (repo / "blobs" / blob).write_bytes(content)
        try:
            (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
        except OSError:  # a file system without symlinks: huggingface_hub then copies, too
            (snapshot / name).write_bytes(content)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def _checkpoint_files(hub_id: str, *, width: str, seed: int) -> dict[str, bytes]:
    import tempfile

    import torch
    import transformers

    config = rehearsal_config(hub_id, width=width)
    model_class = getattr(transformers, _ARCHITECTURES[hub_id])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        if not _SAFETENSORS[hub_id]:
            # transformers 5 writes safetensors only; the repository holds the pickled state dict
            # that torch.save writes (what save_pretrained(safe_serialization=False) wrote)
            (Path(tmp) / "model.safetensors").unlink()
            torch.save(model.state_dict(), Path(tmp) / "pytorch_model.bin")
        preprocessor = PREPROCESSOR_CONFIGS[hub_id]
        if preprocessor is not None:
            (Path(tmp) / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    # save_pretrained writes generation_config.json for none of these classes; keep only what the repos hold
    expected = {"config.json", "model.safetensors" if _SAFETENSORS[hub_id] else "pytorch_model.bin"}
    if preprocessor is not None:
        expected.add("preprocessor_config.json")
    missing = expected - set(files)
    if missing:
        raise RuntimeError(f"save_pretrained did not write {sorted(missing)} for {hub_id}")
    return {name: files[name] for name in sorted(expected)}


def build_hf_cache(hf_home: str | os.PathLike, *, width: str = "small",
                   models: Sequence[str] | None = None, seed: int = 0) -> Path:
    """Write the paper's checkpoints (random weights) into a Hugging Face cache; returns ``hf_home``.

    With ``HF_HOME=hf_home`` and ``HF_HUB_OFFLINE=1``, ``from_pretrained(hub_id)`` finds them.
    ``models``: the hub ids to write (default: the paper profile's four).
    """
    hf_home = Path(hf_home)
    hub = hf_home / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    for index, hub_id in enumerate(models or PROFILES["paper"].models):
        _write_repo(hub, hub_id, _checkpoint_files(hub_id, width=width, seed=seed + index))
    save_json(hf_home / "convexlab-rehearsal.json",
              {"version": FIXTURE_VERSION, "width": width, "models": list(models or PROFILES["paper"].models),
               "seed": seed, "note": "random weights with the real architectures; not the real checkpoints"})
    return hf_home


# ----------------------------------------------------------------------------- Speech Commands


def _speaker_id(seed: int, index: int) -> str:
    return hashlib.sha1(f"convexlab-rehearsal-speaker:{seed}:{index}".encode()).hexdigest()[:8]


def _speaker_plan(*, n_heavy: int, n_light: int, heavy_clips: int, seed: int):
    """(speaker id, split, {word: clips}) for every speaker: ``n_heavy`` speakers with
    ``heavy_clips`` clips (one of them in validation and one in test, each saying every word, so
    that every word has held-out clips), the rest with 1-12 clips of random words, split like
    Speech Commands: whole speakers, by a hash of their id (about 10 % validation, 10 % test)."""
    rng = np.random.default_rng([seed, 7])
    words = SPEECH_COMMANDS_WORDS
    plan = []
    for index in range(n_heavy + n_light):
        speaker = _speaker_id(seed, index)
        if index < n_heavy:
            split = "validation" if index == n_heavy - 2 else "test" if index == n_heavy - 1 else "train"
            counts = {w: 1 for w in words} if split != "train" else {}
            for word in rng.choice(len(words), size=heavy_clips - sum(counts.values()), replace=True):
                counts[words[word]] = counts.get(words[word], 0) + 1
        else:
            bucket = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 10
            split = "validation" if bucket == 0 else "test" if bucket == 1 else "train"
            chosen = rng.choice(len(words), size=int(rng.integers(1, 13)), replace=True)
            counts = {}
            for word in chosen:
                counts[words[word]] = counts.get(words[word], 0) + 1
        plan.append((speaker, split, dict(sorted(counts.items()))))
    return plan


def build_speech_commands(root: str | os.PathLike, *, n_heavy: int = 8, n_light: int = 40,
                          heavy_clips: int = 60, seed: int = 0) -> Path:
    """Write a corpus in the real Speech Commands v0.02 layout into ``root``; returns ``root``.

    Audio comes from :mod:`convexlab.synth` (word ``i`` of the 35 is synthetic word ``i``, each
    speaker one synthetic voice); ``n_heavy`` speakers have ``heavy_clips`` clips (>= 50), the
    other ``n_light`` 1 to 12. About 1 000 clips with the defaults.
    """
    root = Path(root)
    syllables = dict(zip(SPEECH_COMMANDS_WORDS, lexicon(len(SPEECH_COMMANDS_WORDS))))
    plan = _speaker_plan(n_heavy=n_heavy, n_light=n_light, heavy_clips=heavy_clips, seed=seed)
    voices = speaker_voices(len(plan), seed=seed)
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    with atomic_dir(root) as folder:
        for word in SPEECH_COMMANDS_WORDS:
            (folder / word).mkdir(parents=True)
        for index, ((speaker, split, counts), voice) in enumerate(zip(plan, voices)):
            voice = dataclasses.replace(voice, speaker_id=speaker)
            items = [(word, n) for word, count in counts.items() for n in range(count)]
            clips = synthesize_clips([syllables[w] for w, _ in items], voice,
                                     [(seed, index, SPEECH_COMMANDS_WORDS.index(w), n) for w, n in items])
            for (word, n), clip in zip(items, clips):
                clip_id = f"{word}/{speaker}_nohash_{n}.wav"
                (folder / clip_id).write_bytes(_wav_bytes(clip))
                if split in lists:
                    lists[split].append(clip_id)
        noise = folder / "_background_noise_"
        noise.mkdir()
        rng = np.random.default_rng([seed, 11])
        for name, seconds, colour in (("white_noise.wav", 8, 0.0), ("pink_noise.wav", 8, 0.9),
                                      ("running_tap.wav", 6, 0.5)):
            samples = rng.standard_normal(SAMPLE_RATE * seconds).astype(np.float32)
            if colour:
                from scipy.signal import lfilter

                samples = lfilter([1.0 - colour], [1.0, -colour], samples).astype(np.float32)
            samples *= 0.3 / (np.abs(samples).max() + 1e-9)
            (noise / name).write_bytes(_wav_bytes(samples))
        (noise / "README.md").write_text("Long recordings of background noise (a rehearsal stand-in).\n")
        (folder / "validation_list.txt").write_text("".join(f"{c}\n" for c in sorted(lists["validation"])))
        (folder / "testing_list.txt").write_text("".join(f"{c}\n" for c in sorted(lists["test"])))
        (folder / "LICENSE").write_text(
            "Rehearsal stand-in for Speech Commands v0.02 (CC BY 4.0), generated by convexlab.rehearsal.\n")
        (folder / "README.md").write_text(
            "Synthetic clips in the Speech Commands v0.02 layout, for rehearsing the paper profile offline.\n")
    return root


def build_fixture(folder: str | os.PathLike | None = None, *, width: str = "small", seed: int = 0) -> dict[str, Path]:
    """The whole rehearsal fixture under ``folder`` (default :func:`rehearsal_root`):
    ``hf/`` (an ``HF_HOME``) and ``speech_commands_v0.02/``. Kept when already complete."""
    folder = Path(folder) if folder is not None else rehearsal_root()
    hf_home, corpus = folder / f"hf-{width}", folder / "speech_commands_v0.02"
    if not (corpus / "testing_list.txt").is_file():
        if corpus.exists():
            shutil.rmtree(corpus)
        build_speech_commands(corpus, seed=seed)
    if not (hf_home / "convexlab-rehearsal.json").is_file():
        build_hf_cache(hf_home, width=width, seed=seed)
    return {"hf_home": hf_home, "data_root": corpus}


# what the rehearsal's chapter kernels run with: the fixture's HF cache, no network, no GPU
def rehearsal_env(hf_home: str | os.PathLike) -> dict[str, str]:
    return {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def rehearsal_parameters(data_root: str | os.PathLike, **overrides) -> dict:
    """The chapter parameters of a rehearsal: the paper profile on the CPU (``device``) with
    :data:`REHEARSAL_OVERRIDES`, the fixture's corpus as ``data_root`` and ``rehearsal=True`` (the
    mark that the chapters label the run with and that turns their result checks into reports,
    :func:`convexlab.profiles.expect_result`); no other field changed."""
    return {"device": "cpu",
            "overrides": {**REHEARSAL_OVERRIDES, "data_root": str(data_root), **overrides, "rehearsal": True}}


BANNER_TAG = "rehearsal-banner"  # the tag of the cell label_notebook adds


def rehearsal_banner(profile) -> str:
    """The warning at the top of every rehearsal notebook: what ran, and that it is not a result."""
    return (
        "```{warning}\n"
        f"**Random-weight rehearsal, not results.** This notebook ran with `profile: {profile.name}` "
        f"and its models ({', '.join(profile.models)}) under their real hub ids and architectures, "
        "but with **random weights** written by `convexlab.rehearsal`, on a generated stand-in for "
        "Speech Commands v0.02, offline, on the CPU, with sizes shrunk through profile fields "
        f"({', '.join(f'{k}={v}' for k, v in REHEARSAL_OVERRIDES.items())}). It shows that every "
        "step of the paper profile runs; its numbers and figures mean nothing, and its checks of "
        "results are reported, not enforced.\n```"
    )


def label_notebook(notebook: str | os.PathLike, profile) -> None:
    """Insert :func:`rehearsal_banner` after the executed notebook's title cell (once)."""
    import nbformat

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    if any(BANNER_TAG in cell.get("metadata", {}).get("tags", []) for cell in nb.cells):
        return
    title = next((i for i, cell in enumerate(nb.cells)
                  if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# ")), -1)
    banner = nbformat.v4.new_markdown_cell(rehearsal_banner(profile), metadata={"tags": [BANNER_TAG]})
    nb.cells.insert(title + 1, banner)
    nbformat.write(nb, notebook)


def run_rehearsal(*, chapters: Sequence[str] | None = None, folder: str | os.PathLike | None = None,
                  output_dir: str | os.PathLike | None = None, width: str = "small", **overrides) -> dict:
    """Execute ``chapters`` (default: all) with ``--profile paper`` against the fixture.

    Notebooks go to ``output_dir`` (default ``_build/executed/paper-rehearsal/``, never the
    folder of a real paper run); returns (and writes there as ``rehearsal.json``) the wall time.
    """
    import time

    start = time.perf_counter()
    paths = build_fixture(folder, width=width)
    fixture_seconds = time.perf_counter() - start
    out = Path(output_dir) if output_dir else book_root() / "_build" / "executed" / "paper-rehearsal"
    parameters = rehearsal_parameters(paths["data_root"], **overrides)
    profile_overrides = parameters["overrides"]
    profile = get_profile("paper", **profile_overrides)
    names = list(chapters) if chapters else chapter_names()
    declared = {name for chapter in names for name in chapter_parameters(chapter)}
    parameters = {key: value for key, value in parameters.items() if key in declared}  # intro takes no `device`
    saved = dict(os.environ)
    os.environ.update(rehearsal_env(paths["hf_home"]))
    try:
        runs = run_book(profile="paper", chapters=names, parameters=parameters, output_dir=out)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for name in names:  # a failed chapter's partial notebook, too
            if (out / f"{name}.ipynb").is_file():
                label_notebook(out / f"{name}.ipynb", profile)
    summary = {"profile": "paper", "width": width, "fixture_seconds": round(fixture_seconds, 1),
               "wall_seconds": round(time.perf_counter() - start, 1),
               "chapters": {run.chapter: round(run.seconds, 1) for run in runs},
               "overrides": profile_overrides,
               "hf_home": str(paths["hf_home"]), "output_dir": str(out)}
    save_json(out / "rehearsal.json", summary)
    print(f"[rehearse] {len(runs)} chapter(s) with --profile paper in {summary['wall_seconds']:.0f} s "
          f"(fixture {fixture_seconds:.0f} s) -> {out}", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m convexlab.rehearsal",
                                     description="Rehearse the paper profile offline against a generated fixture.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("fixture", "run"):
        cmd = sub.add_parser(name, help="write the fixture" if name == "fixture" else "write it and run the chapters")
        cmd.add_argument("--folder", default=None, help="fixture folder (default: <cache>/rehearsal/v1)")
        cmd.add_argument("--width", default="small", choices=("small", "base"))
        if name == "run":
            cmd.add_argument("--chapter", action="append", dest="chapters", help="chapter (repeatable); default: all")
            cmd.add_argument("--output-dir", default=None, help="default: _build/executed/paper-rehearsal")
    args = parser.parse_args(argv)
    if args.command == "fixture":
        paths = build_fixture(args.folder, width=args.width)
        print(f"HF_HOME={paths['hf_home']}")
        print(f"DATA_ROOT={paths['data_root']}")
    else:
        run_rehearsal(chapters=args.chapters, folder=args.folder, output_dir=args.output_dir, width=args.width)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
