"""The spoken corpus: generation speed, and how much word and speaker a log-mel probe finds in it.

    python benchmarks/spoken_corpus.py            # 35 words x 24 speakers x 3 repetitions; probe on 20 words
    python benchmarks/spoken_corpus.py --quick    # 10 words x 8 speakers x 3 repetitions
    python benchmarks/spoken_corpus.py --speaking-rate 45 75   # slower words (recipe spoken-v4)

Generation is timed into a fresh temporary folder (not the cache): wall time, and CPU time of
this process plus the espeak-ng worker. The probe: each clip's 40-band log-mel spectrogram
(25 ms windows, 10 ms hop) averaged over time, standardised, and a logistic regression;
3-fold stratified cross-validated accuracy for the speaker and for the word, on the first
``--probe-words`` words. A time-averaged spectrum keeps the voice and channel (speaker) and
little of the order of sounds (word), so speakers should be far easier than words here.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexlab.data import word_task  # noqa: E402
from convexlab.frontier import probe_scores  # noqa: E402
from convexlab.spoken import DEFAULT_SPEAKING_RATE, generate_corpus, spoken_words  # noqa: E402


def logmel_features(clips: np.ndarray, n_mels: int = 40) -> np.ndarray:
    """float32 (N, 16000) clips at 16 kHz -> (N, n_mels): log-mel energies averaged over time."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16_000, n_fft=512, win_length=400, hop_length=160,
                                               n_mels=n_mels)
    with torch.no_grad():
        spec = mel(torch.from_numpy(clips))  # (N, n_mels, frames)
    return torch.log(spec + 1e-6).mean(-1).numpy()


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=35, help="words in the generated corpus")
    parser.add_argument("--speakers", type=int, default=24)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--probe-words", type=int, default=20, help="the probe uses the first this many words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speaking-rate", type=int, nargs=2, metavar=("LOWEST", "HIGHEST"),
                        default=list(DEFAULT_SPEAKING_RATE), help="words per minute speakers' rates are drawn from")
    parser.add_argument("--quick", action="store_true", help="10 words x 8 speakers x 3 repetitions")
    args = parser.parse_args(argv)
    if args.quick:
        args.words, args.speakers, args.probe_words = 10, 8, 10
    probe_words = set(spoken_words(min(args.probe_words, args.words)))

    with tempfile.TemporaryDirectory() as folder:
        n_clips = args.words * args.speakers * args.repetitions
        cpu, wall = _cpu_seconds(), time.perf_counter()
        root = generate_corpus(Path(folder) / "corpus", n_words=args.words, n_speakers=args.speakers,
                               n_repetitions=args.repetitions, seed=args.seed,
                               speaking_rate=tuple(args.speaking_rate), progress=False)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        print(f"generated {n_clips} clips ({args.words} words x {args.speakers} speakers x {args.repetitions} "
              f"repetitions) in {wall:.1f} s: {1000 * wall / n_clips:.1f} ms wall, {1000 * cpu / n_clips:.1f} ms CPU "
              f"per clip (this process + the espeak-ng worker)")
        dataset = word_task(root)
        keep = np.array([w in probe_words for w in dataset.words])
        clips = dataset.batch(np.nonzero(keep)[0])
        words = [w for w, k in zip(dataset.words, keep) if k]
        speakers = [s for s, k in zip(dataset.speakers, keep) if k]

    features = logmel_features(clips)
    print(f"log-mel probe on {len(clips)} clips ({len(probe_words)} words x {args.speakers} speakers x "
          f"{args.repetitions} repetitions), 3-fold cross-validated logistic regression:")
    for concept, labels in (("speaker", speakers), ("word", words)):
        scores = probe_scores(features, labels, max_iter=2000)
        mean, std = scores.mean(), scores.std()
        print(f"  {concept:8s} accuracy {mean:.3f} +- {std:.3f}  (chance {1 / len(set(labels)):.3f})")


if __name__ == "__main__":
    main()
