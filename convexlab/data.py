"""Speech Commands v0.02 and the two tasks of the paper: word and speaker classification.

A corpus on disk has the Speech Commands layout: ``<root>/<word>/<speaker>_nohash_<n>.wav``
(16 kHz mono), with ``validation_list.txt`` and ``testing_list.txt`` naming the clips of the
official validation and test splits. The synthetic corpus (:mod:`convexlab.synth`) and the
spoken one (:mod:`convexlab.spoken`) are written in exactly this layout, so one loader reads all three.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf

from convexlab.cache import cache_path, file_digest, stable_hash
from convexlab.families import CLIP_SAMPLES, SAMPLE_RATE
from convexlab.profiles import get_profile
from convexlab.spoken import DEFAULT_SPEAKING_RATE, spoken_corpus
from convexlab.synth import synthetic_corpus


__all__ = [
    "SAMPLE_RATE",
    "CLIP_SAMPLES",
    "SPEECH_COMMANDS_URL",
    "AudioDataset",
    "read_clip",
    "scan_corpus",
    "word_task",
    "speaker_task",
    "speech_commands_root",
    "corpus_root",
    "load_task",
]

SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
_NOHASH = "_nohash_"
_BACKGROUND = "_background_noise_"
_SPLIT_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
_DOWNLOAD_TIMEOUT_S = 30  # socket timeout: a dead connection fails instead of hanging
_ARCHIVE = "speech_commands_v0.02.tar.gz"  # torchaudio keeps it beside the extracted folder
_COMPLETE_MARKER = ".convexlab-complete"  # written after torchaudio's extraction returned


@dataclass(frozen=True)
class AudioDataset:
    """A labelled list of one-second clips for one task.

    All per-clip fields are sequences of the same length N; ``clip_ids`` are paths relative to
    ``root`` (``"<word>/<speaker>_nohash_<n>.wav"``) and identify a clip across tasks.
    """

    task: str  # "word" or "speaker"
    root: Path  # corpus folder in the Speech Commands layout
    clip_ids: tuple[str, ...]  # N relative paths
    labels: tuple[str, ...]  # N class labels of this task (the word, or the speaker id)
    splits: tuple[str, ...]  # N split names: "train", "validation" or "test"
    words: tuple[str, ...]  # N words (the other concept is kept for cross-task analysis)
    speakers: tuple[str, ...]  # N speaker ids
    meta: dict = field(default_factory=dict, compare=False)  # how it was built (for cache keys)

    def __post_init__(self) -> None:
        n = len(self.clip_ids)
        lengths = {name: len(getattr(self, name)) for name in ("labels", "splits", "words", "speakers")}
        if any(length != n for length in lengths.values()):
            raise ValueError(f"AudioDataset fields must all have {n} entries (one per clip id), got {lengths}")

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def label_names(self) -> list[str]:
        """The sorted distinct labels; class ``i`` of :attr:`label_ids` is ``label_names[i]``."""
        return sorted(set(self.labels))

    @property
    def label_ids(self) -> np.ndarray:
        """int64 (N,): each clip's index into :attr:`label_names`."""
        index = {name: i for i, name in enumerate(self.label_names)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def audio(self, i: int) -> np.ndarray:
        """float32 (16000,): clip ``i``, padded with zeros or cut to one second."""
        return read_clip(Path(self.root) / self.clip_ids[i])

    def batch(self, indices: Iterable[int]) -> np.ndarray:
        """float32 (B, 16000): the clips at ``indices``."""
        indices = list(indices)
        out = np.zeros((len(indices), CLIP_SAMPLES), dtype=np.float32)
        for row, i in enumerate(indices):
            out[row] = self.audio(i)
        return out

    def select(self, indices: Sequence[int], **meta) -> "AudioDataset":
        """The clips at ``indices`` (in that order), with ``meta`` added to :attr:`meta`."""
        pick = lambda values: tuple(values[i] for i in indices)  # noqa: E731
        return replace(
            self,
            clip_ids=pick(self.clip_ids),
            labels=pick(self.labels),
            splits=pick(self.splits),
            words=pick(self.words),
            speakers=pick(self.speakers),
            meta={**self.meta, **meta},
        )

    def subset(self, split: str) -> "AudioDataset":
        """The clips of one split ("train", "validation" or "test")."""
        indices = [i for i, s in enumerate(self.splits) if s == split]
        if not indices:
            available = sorted(set(self.splits))
            raise ValueError(f"Split {split!r} has no clips in this {self.task} dataset; available splits: {available}")
        return self.select(indices, split=split)

    def subsample(self, n_per_class: int, *, seed: int, split: str | None = None) -> "AudioDataset":
        """At most ``n_per_class`` clips of every label, drawn at random from ``seed``.

        Classes with fewer clips keep all of them; the original clip order is kept. ``split``:
        cap only the clips of that split and keep every other clip (None: cap all clips).
        """
        if n_per_class < 1:
            raise ValueError(f"n_per_class={n_per_class} must be at least 1 (or None for all clips)")
        rng = np.random.default_rng(seed)
        by_label: dict[str, list[int]] = {}
        keep: list[int] = []
        for i, (label, clip_split) in enumerate(zip(self.labels, self.splits)):
            if split is None or clip_split == split:
                by_label.setdefault(label, []).append(i)
            else:
                keep.append(i)
        for label in sorted(by_label):  # sorted: the draw does not depend on dict order
            members = by_label[label]
            if len(members) > n_per_class:
                members = sorted(rng.choice(members, size=n_per_class, replace=False).tolist())
            keep.extend(members)
        return self.select(sorted(keep), n_per_class=n_per_class, subsample_seed=seed, subsample_split=split)

    def class_counts(self) -> dict[str, int]:
        """Number of clips per label, labels sorted."""
        counts = Counter(self.labels)
        return {label: counts[label] for label in self.label_names}

    def require_pairs(self, *, min_per_class: int = 2) -> "AudioDataset":
        """Raise ``ValueError`` if a class has fewer than ``min_per_class`` clips; else return self.

        Graph convexity scores pairs of clips of one class, so a class needs at least two.
        """
        small = {label: n for label, n in self.class_counts().items() if n < min_per_class}
        if small:
            shown = dict(list(small.items())[:10])
            raise ValueError(
                f"{len(small)} {self.task} class(es) have fewer than {min_per_class} clips: {shown}. "
                f"Use more clips per class (a larger n_per_class, or a larger corpus: more repetitions/speakers), "
                f"or for the speaker task raise min_utterances so that only well-covered speakers remain."
            )
        return self

    def content_hash(self) -> str:
        """A digest of what the clips are: task, ids, labels, splits and every audio file's bytes.

        Independent of where the corpus lies on disk, so a moved corpus keeps its caches; a clip
        overwritten with other samples (even of the same length) changes it. File digests are
        memoised by path, size and mtime (:func:`convexlab.cache.file_digest`), so repeated calls
        on an unchanged corpus cost one ``stat`` per clip.
        """
        audio = [_clip_digest(Path(self.root) / clip_id) for clip_id in self.clip_ids]
        return stable_hash(
            "audio-dataset-v2", self.task, self.clip_ids, self.labels, self.splits, self.speakers, self.words, audio
        )


def _clip_digest(path: Path) -> str:
    try:
        return file_digest(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Clip {path} listed in the dataset is missing; the corpus folder changed since the dataset was built. "
            f"Rebuild the dataset with word_task/speaker_task/load_task."
        ) from None


def read_clip(path: str | os.PathLike) -> np.ndarray:
    """float32 (16000,): a 16 kHz mono WAV file, zero-padded or cut to one second."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Audio file {path} does not exist; check the corpus root")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise ValueError(f"Cannot read audio file {path} ({err}); replace it with a 16 kHz mono WAV file") from None
    if rate != SAMPLE_RATE:
        raise ValueError(
            f"{path} has sample rate {rate} Hz, but clips must be {SAMPLE_RATE} Hz; resample it "
            f"(e.g. `sox in.wav -r 16000 out.wav`) or regenerate the corpus"
        )
    if audio.shape[1] != 1:
        raise ValueError(f"{path} has {audio.shape[1]} channels, but clips must be mono; mix it down to one channel")
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    n = min(CLIP_SAMPLES, audio.shape[0])
    clip[:n] = audio[:n, 0]
    return clip


@dataclass(frozen=True)
class _Corpus:
    clip_ids: tuple[str, ...]  # sorted relative paths "<word>/<speaker>_nohash_<n>.wav"
    words: tuple[str, ...]
    speakers: tuple[str, ...]
    splits: tuple[str, ...]  # official split: "train", "validation" or "test"


def scan_corpus(root: str | os.PathLike) -> _Corpus:
    """All clips of a corpus in the Speech Commands layout, with their official split.

    ``_background_noise_`` and any file without ``_nohash_`` in its name are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Corpus folder {root} does not exist; pass a folder in the Speech Commands layout "
            f"(<word>/<speaker>_nohash_<n>.wav + validation_list.txt + testing_list.txt)"
        )
    missing = [name for name in _SPLIT_LISTS.values() if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Corpus folder {root} lacks {missing}; the Speech Commands layout needs validation_list.txt and "
            f"testing_list.txt beside the word folders (they define the official split)"
        )
    clip_ids = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        clip_ids += [f"{word_dir.name}/{f.name}" for f in sorted(word_dir.iterdir())
                     if f.suffix == ".wav" and _NOHASH in f.name]
    if not clip_ids:
        raise FileNotFoundError(f"Corpus folder {root} holds no <word>/<speaker>_nohash_<n>.wav clips")
    split_of: dict[str, str] = {}
    for split, list_name in _SPLIT_LISTS.items():
        for line in (root / list_name).read_text().splitlines():
            if line.strip():
                split_of[os.path.normpath(line.strip()).replace(os.sep, "/")] = split
    return _Corpus(
        clip_ids=tuple(clip_ids),
        words=tuple(c.split("/")[0] for c in clip_ids),
        speakers=tuple(c.split("/")[1].split(_NOHASH)[0] for c in clip_ids),
        splits=tuple(split_of.get(c, "train") for c in clip_ids),
    )


def _corpus_meta(root: Path) -> dict:
    info = root / "corpus.json"
    if info.is_file():
        import json

        info = json.loads(info.read_text())
        corpus = "spoken" if info.get("generator") == "convexlab.spoken" else "synthetic"
        return {"corpus": corpus, "corpus_params": info.get("params", {})}
    return {"corpus": "speech_commands"}


def _finish_task(dataset: AudioDataset, n_per_class: int | None, seed: int) -> AudioDataset:
    if n_per_class is not None:
        dataset = dataset.subsample(n_per_class, seed=seed)
    return dataset.require_pairs()


def word_task(root: str | os.PathLike, *, n_per_class: int | None = None, seed: int = 0) -> AudioDataset:
    """Word classification: every word folder is a class; the official split from the list files.

    ``n_per_class``: keep at most that many clips per word (drawn with ``seed``), across splits.
    """
    root = Path(root)
    corpus = scan_corpus(root)
    dataset = AudioDataset(
        task="word",
        root=root,
        clip_ids=corpus.clip_ids,
        labels=corpus.words,
        splits=corpus.splits,
        words=corpus.words,
        speakers=corpus.speakers,
        meta={**_corpus_meta(root), "task": "word"},
    )
    return _finish_task(dataset, n_per_class, seed)


def speaker_task(
    root: str | os.PathLike,
    *,
    min_utterances: int = 50,
    test_fraction: float = 0.1,
    n_per_class: int | None = None,
    seed: int = 42,
    split: str = "stratified",
) -> AudioDataset:
    """Speaker identification over the speakers with at least ``min_utterances`` clips (all words).

    ``split="stratified"``: clips of all official splits; ``test_fraction`` of every speaker's
    clips go to "test", the rest to "train" (sklearn's stratified ``train_test_split`` with
    ``random_state=seed``). ``split="authors"``, as the authors' follow-up code
    (``transformer_redundancy/data/speech_commands.py``): only the official *training* split
    (clips in neither list file); speakers with at least ``min_utterances`` clips there; then a
    plain random split, not stratified, the way the ``datasets`` library's
    ``train_test_split(test_size=test_fraction, seed=seed)`` draws it (``ceil(test_fraction * N)``
    test clips: the first of ``np.random.default_rng(seed).permutation(N)``), over the clips in
    sorted path order. A speaker may then have few (or no) test clips.
    ``n_per_class``: then keep at most that many clips per speaker, drawn with ``seed``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be strictly between 0 and 1")
    if split not in ("stratified", "authors"):
        raise ValueError(f"split={split!r}; use 'stratified' or 'authors'")
    root = Path(root)
    corpus = scan_corpus(root)
    if split == "authors":
        return _authors_speaker_task(root, corpus, min_utterances=min_utterances, test_fraction=test_fraction,
                                     n_per_class=n_per_class, seed=seed)
    from sklearn.model_selection import train_test_split

    counts = Counter(corpus.speakers)
    kept = sorted(s for s, n in counts.items() if n >= min_utterances)
    if not kept:
        raise ValueError(
            f"No speaker in {root} has at least min_utterances={min_utterances} clips (the most is "
            f"{max(counts.values())}); lower min_utterances or use a larger corpus"
        )
    if len(kept) < 2:
        raise ValueError(f"Only one speaker has >= {min_utterances} clips; lower min_utterances to get at least two classes")
    kept_set = set(kept)
    indices = [i for i, s in enumerate(corpus.speakers) if s in kept_set]
    speakers = [corpus.speakers[i] for i in indices]
    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(indices)), test_size=test_fraction, stratify=speakers, random_state=seed
        )
    except ValueError as err:  # e.g. fewer test clips than speakers
        raise ValueError(
            f"Cannot split {len(indices)} clips of {len(kept)} speakers with test_fraction={test_fraction} ({err}); "
            f"raise test_fraction or min_utterances (min_utterances must be at least 2)"
        ) from None
    splits = np.empty(len(indices), dtype=object)
    splits[train_idx] = "train"
    splits[test_idx] = "test"
    dataset = AudioDataset(
        task="speaker",
        root=root,
        clip_ids=tuple(corpus.clip_ids[i] for i in indices),
        labels=tuple(speakers),
        splits=tuple(splits.tolist()),
        words=tuple(corpus.words[i] for i in indices),
        speakers=tuple(speakers),
        meta={**_corpus_meta(root), "task": "speaker", "min_utterances": min_utterances,
              "test_fraction": test_fraction, "split_seed": seed},
    )
    return _finish_task(dataset, n_per_class, seed)


def _authors_speaker_task(root: Path, corpus: _Corpus, *, min_utterances: int, test_fraction: float,
                          n_per_class: int | None, seed: int) -> AudioDataset:
    import math

    train = [i for i, s in enumerate(corpus.splits) if s == "train"]
    counts = Counter(corpus.speakers[i] for i in train)
    kept = {s for s, n in counts.items() if n >= min_utterances}
    if len(kept) < 2:
        raise ValueError(
            f"{len(kept)} speaker(s) of the training split of {root} have at least min_utterances={min_utterances} "
            f"clips (the most is {max(counts.values(), default=0)}); lower min_utterances or use a larger corpus"
        )
    indices = [i for i in train if corpus.speakers[i] in kept]
    n_test = math.ceil(test_fraction * len(indices))
    permutation = np.random.default_rng(seed).permutation(len(indices))
    splits = np.full(len(indices), "train", dtype=object)
    splits[permutation[:n_test]] = "test"
    speakers = tuple(corpus.speakers[i] for i in indices)
    dataset = AudioDataset(
        task="speaker",
        root=root,
        clip_ids=tuple(corpus.clip_ids[i] for i in indices),
        labels=speakers,
        splits=tuple(splits.tolist()),
        words=tuple(corpus.words[i] for i in indices),
        speakers=speakers,
        meta={**_corpus_meta(root), "task": "speaker", "min_utterances": min_utterances,
              "test_fraction": test_fraction, "split_seed": seed, "speaker_split": "authors"},
    )
    return _finish_task(dataset, n_per_class, seed)


def _is_corpus(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _SPLIT_LISTS.values())


def speech_commands_root(root: str | os.PathLike | None = None, *, download: bool = False) -> Path:
    """The Speech Commands v0.02 folder (the one holding the word folders and list files).

    ``root``: a folder in the standard layout, or a parent where torchaudio put it
    (``<root>/SpeechCommands/speech_commands_v0.02``); ``None``: ``cache_path("speech_commands")``.
    ``download=True`` fetches the 2.3 GB archive with torchaudio (checksum-verified) when it is not
    there; without network that fails within seconds, naming the URL and the alternative.
    """
    base = Path(root).expanduser() if root is not None else cache_path("speech_commands")
    torchaudio_folder = base / "SpeechCommands" / "speech_commands_v0.02"
    if _is_corpus(base):
        return base
    # an archive without our marker means an extraction that did not finish
    extraction_finished = (torchaudio_folder / _COMPLETE_MARKER).exists() or not (base / _ARCHIVE).exists()
    if _is_corpus(torchaudio_folder) and extraction_finished:
        return torchaudio_folder
    if not download:
        raise FileNotFoundError(
            f"Speech Commands v0.02 is not in {base}. Either pass data_root= a folder in the standard layout "
            f"(<word>/<speaker>_nohash_<n>.wav, validation_list.txt, testing_list.txt), or allow the "
            f"download (download=True; about 2.3 GB from {SPEECH_COMMANDS_URL})."
        )
    _download_speech_commands(base, torchaudio_folder)
    return torchaudio_folder


def _download_speech_commands(base: Path, folder: Path) -> None:
    how_else = (
        f"Download {SPEECH_COMMANDS_URL} on a machine with network access, extract it, and pass that folder "
        f"as data_root= (the folder holding the word folders and validation_list.txt)."
    )
    try:  # a quick reachability check, so that a machine without network fails in seconds
        request = urllib.request.Request(SPEECH_COMMANDS_URL, method="HEAD")
        urllib.request.urlopen(request, timeout=10).close()
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"Cannot reach {SPEECH_COMMANDS_URL} ({err}). {how_else}") from None
    if folder.exists():
        import shutil

        shutil.rmtree(folder)  # an interrupted extraction: torchaudio would take the folder as complete
    from torchaudio.datasets import SPEECHCOMMANDS

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        base.mkdir(parents=True, exist_ok=True)
        SPEECHCOMMANDS(base, url="speech_commands_v0.02", download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise ConnectionError(f"Downloading {SPEECH_COMMANDS_URL} failed ({err}). {how_else}") from err
    finally:
        socket.setdefaulttimeout(previous)
    if not _is_corpus(folder):
        raise FileNotFoundError(f"The download finished but {folder} lacks the list files. {how_else}")
    (folder / _COMPLETE_MARKER).write_text("extracted by convexlab\n")


def corpus_root(profile) -> Path:
    """The corpus folder a profile uses: the synthetic or the spoken corpus (generated into the
    cache on first use) or Speech Commands (``profile.data_root``, downloaded if ``profile.download``).

    The spoken corpus (:mod:`convexlab.spoken`) takes the first ``profile.n_words`` of its 35
    words, ``profile.n_speakers`` speakers and ``profile.n_repetitions`` repetitions.
    """
    generated = {"spoken": spoken_corpus, "synthetic": synthetic_corpus}
    if profile.corpus in generated:
        if profile.data_root is not None:
            return Path(profile.data_root).expanduser()
        spoken_only = {}
        if tuple(profile.speaking_rate) != DEFAULT_SPEAKING_RATE:
            if profile.corpus != "spoken":
                raise ValueError(f"Profile {profile.name!r} sets speaking_rate={profile.speaking_rate}, which only the "
                                 "spoken corpus has; use corpus='spoken' or leave speaking_rate at its default")
            spoken_only["speaking_rate"] = tuple(profile.speaking_rate)
        return generated[profile.corpus](
            n_words=profile.n_words, n_speakers=profile.n_speakers, n_repetitions=profile.n_repetitions,
            seed=profile.seed, **spoken_only,
        )
    if profile.corpus == "speech_commands":
        return speech_commands_root(profile.data_root, download=profile.download)
    raise ValueError(f"Unknown corpus {profile.corpus!r} in profile {profile.name!r}; "
                     "use 'synthetic', 'spoken' or 'speech_commands'")


def load_task(task: str, profile) -> AudioDataset:
    """The full dataset (all splits) of ``task`` ("word" or "speaker") for a profile.

    Speaker task: ``profile.min_utterances`` and a split drawn with ``profile.seed``, the way
    ``profile.speaker_split`` says (:func:`speaker_task`). Subsample
    for the convexity analysis with ``.subsample(profile.n_per_class, seed=profile.seed)``.
    """
    profile = get_profile(profile)
    root = corpus_root(profile)
    if task == "word":
        return word_task(root, seed=profile.seed)
    if task == "speaker":
        return speaker_task(root, min_utterances=profile.min_utterances, seed=profile.seed,
                            split=profile.speaker_split)
    raise ValueError(f"Unknown task {task!r}; use 'word' or 'speaker'")
