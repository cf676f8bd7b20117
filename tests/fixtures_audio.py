"""Small audio corpora written by the tests themselves (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path: Path, audio: np.ndarray, rate: int = 16_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="PCM_16")


def speech_commands_fixture(
    root: Path,
    *,
    clips_per_speaker: dict[str, dict[str, int]],
    validation_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """A corpus in the real Speech Commands v0.02 layout.

    ``clips_per_speaker[speaker][word]`` clips of each word by each speaker, as
    ``<word>/<speaker>_nohash_<n>.wav``; clip lengths vary (0.6 s to 1.2 s) so that padding and
    cutting are exercised. Whole speakers go to ``validation_list.txt``/``testing_list.txt``.
    Also writes ``_background_noise_/`` (long noise files the loader must ignore), a LICENSE
    and a stray non-clip wav, as the real archive has.
    """
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    for speaker, words in clips_per_speaker.items():
        for word, count in words.items():
            for n in range(count):
                clip_id = f"{word}/{speaker}_nohash_{n}.wav"
                length = int(rng.integers(9_600, 19_200))
                write_wav(root / clip_id, (0.1 * rng.standard_normal(length)).clip(-1, 1))
                if speaker in validation_speakers:
                    lists["validation"].append(clip_id)
                elif speaker in test_speakers:
                    lists["test"].append(clip_id)
    write_wav(root / "_background_noise_" / "white_noise.wav", 0.05 * rng.standard_normal(16_000 * 3))
    write_wav(root / "_background_noise_" / "running_tap_nohash_0.wav", 0.05 * rng.standard_normal(16_000))
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    (root / "validation_list.txt").write_text("".join(f"{c}\n" for c in lists["validation"]))
    (root / "testing_list.txt").write_text("".join(f"{c}\n" for c in lists["test"]))
    return root
