"""Speech Commands v0.02 and the two tasks of the paper: word and speaker classification.

A corpus on disk has the Speech Commands layout: ``<root>/<word>/<speaker>_nohash_<n>.wav``
(16 kHz mono), with ``validation_list.txt`` and ``testing_list.txt`` naming the clips of the
official validation and test splits. The synthetic corpus (:mod:`convexlab.synth`) is written
in exactly this layout, so one loader reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # Speech Commands clips are 16 kHz mono
CLIP_SAMPLES = 16_000  # clips are padded or cut to one second

__all__ = ["SAMPLE_RATE", "CLIP_SAMPLES", "AudioDataset"]


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
