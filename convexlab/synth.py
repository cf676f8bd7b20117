"""A synthetic spoken-word corpus in the Speech Commands layout, generated from a seed.

Why: the book must run with no download, yet its corpus must hold the two concepts the paper
studies, *word* and *speaker*, in a way a speech model can pick up. Each clip is made with a
source-filter model of speech:

* **Words** are sequences of 2-3 consonant-vowel syllables from one small inventory
  (``ka mi so tu ne pa``). Every syllable occurs in many words and words come in reversed pairs
  (``kami`` / ``mika``), so a word's identity lies in the *order* of its segments, not in which
  sounds occur. The lexicon is fixed (it does not depend on ``seed``), so corpora generated with
  different seeds share their words.
* **Syllables**: a consonant (stop: closure + burst + aspiration; fricative: band noise; nasal:
  a low voiced murmur) followed by a vowel whose formants move from the consonant's locus to the
  vowel's targets (the formant transitions that cue place of articulation in real speech).
* **Speakers** (drawn from ``seed``) differ in pitch (f0), vocal-tract length (all formants
  scaled), spectral tilt of the glottal source, breathiness, speaking rate, a small per-vowel
  accent, and background-noise level. Every repetition jitters pitch, rate, formants, timing and
  loudness.

The glottal source is an impulse train shaped by ``scipy.signal.lfilter`` (glottal pulse,
radiation, the speaker's tilt). The time-varying vocal-tract filter (cascaded formant
resonators whose frequencies move every 8 ms) is applied in the short-time Fourier domain, which
vectorises over all clips of a speaker: the default lite corpus (12 words x 24 speakers x 6
repetitions = 1728 clips) generates in a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm.auto import tqdm

from convexlab._progress import tqdm_disable
from convexlab.cache import atomic_dir, cache_path, save_json, stable_hash
from convexlab.families import CLIP_SAMPLES, SAMPLE_RATE

__all__ = [
    "SYLLABLES",
    "SpeakerVoice",
    "lexicon",
    "speaker_voices",
    "synthesize_clips",
    "generate_corpus",
    "synthetic_corpus",
]

SYNTH_VERSION = 2  # bump when the audio a seed produces changes (it is part of the cache key)
SYLLABLES = ("ka", "mi", "so", "tu", "ne", "pa")
_LEXICON_SEED = 20240821  # fixed: the same words for every corpus seed


@dataclass(frozen=True)
class _Consonant:
    kind: str  # "stop", "fricative" or "nasal"
    f2_locus: float  # Hz, where F2 starts its transition into the vowel (place of articulation)
    noise_centre: float  # Hz, centre of the burst/frication noise band (0 for nasals)
    noise_width: float  # Hz, standard deviation of that band
    duration: float  # s, at speaking rate 1


_CONSONANTS = {
    "k": _Consonant("stop", 2100.0, 2200.0, 500.0, 0.085),
    "p": _Consonant("stop", 850.0, 900.0, 500.0, 0.075),
    "t": _Consonant("stop", 1800.0, 4300.0, 1200.0, 0.085),
    "s": _Consonant("fricative", 1700.0, 6200.0, 1100.0, 0.110),
    "m": _Consonant("nasal", 950.0, 0.0, 1.0, 0.070),
    "n": _Consonant("nasal", 1700.0, 0.0, 1.0, 0.070),
}
# F1, F2, F3 targets (Hz) of an adult male voice (Peterson & Barney style values)
_VOWELS = {
    "a": (730.0, 1090.0, 2440.0),
    "i": (270.0, 2290.0, 3010.0),
    "u": (300.0, 870.0, 2240.0),
    "e": (530.0, 1840.0, 2480.0),
    "o": (570.0, 840.0, 2410.0),
}
_VOWEL_NAMES = tuple(_VOWELS)
_FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0, 250.0])  # Hz, F1..F5
_HIGH_FORMANTS = (3500.0, 4500.0)  # F4, F5 (fixed up to the speaker's scaling)
_VOWEL_DURATION = 0.17  # s at rate 1
_TRANSITION = 0.05  # s, consonant locus -> vowel target
_MAX_WORD_DURATION = 0.9  # s: words are squeezed to fit a one-second clip with a margin
_STFT = dict(nperseg=256, noverlap=128)  # 16 ms windows, 8 ms hop: formants move every 8 ms


@dataclass(frozen=True)
class SpeakerVoice:
    speaker_id: str  # id used in file names ("<speaker>_nohash_<n>.wav")
    f0: float  # Hz, mean pitch
    formant_scale: float  # all formants multiplied by this (shorter vocal tract: > 1)
    tilt: float  # 0..1, pole of the one-pole low-pass on the glottal source (higher: darker voice)
    breathiness: float  # aspiration noise mixed into voiced sounds, relative to the pulses
    rate: float  # duration multiplier (> 1: slower speaker)
    snr_db: float  # background noise level (speech RMS over noise RMS, dB)
    vowel_accent: tuple[float, ...]  # per-vowel multiplicative offset of F2 (a small accent)


def lexicon(n_words: int) -> list[tuple[str, ...]]:
    """``n_words`` words, each a tuple of 2-3 syllables from :data:`SYLLABLES`.

    Deterministic (independent of any corpus seed). Words come in reversed pairs where the
    reversal is a new word, so most syllables occur in several words in different positions.
    """
    two = list(permutations(SYLLABLES, 2))
    three = list(permutations(SYLLABLES, 3))
    if not 2 <= n_words <= len(two) + len(three):
        raise ValueError(f"n_words={n_words} must be between 2 and {len(two) + len(three)} for this syllable inventory")
    rng = np.random.default_rng(_LEXICON_SEED)
    pools = {2: [two[i] for i in rng.permutation(len(two))], 3: [three[i] for i in rng.permutation(len(three))]}
    words: list[tuple[str, ...]] = []
    length = 2
    while len(words) < n_words:
        pool = pools[length] or pools[5 - length]
        word = pool.pop()
        if word in words:
            continue
        words.append(word)
        reverse = word[::-1]
        if len(words) < n_words and reverse not in words:
            words.append(reverse)
        length = 5 - length  # alternate two- and three-syllable words
    return words


def word_name(syllables: tuple[str, ...]) -> str:
    return "".join(syllables)


def check_speaker_request(n_speakers: int, speaker_prefix: str, *, example: str) -> None:
    """Refuse a speaker prefix that would break ``<speaker>_nohash_<n>.wav`` names, or no speakers."""
    if not re.fullmatch(r"[A-Za-z0-9]+", speaker_prefix):
        raise ValueError(f"speaker_prefix={speaker_prefix!r} must be letters/digits only (no '_' or '/'), e.g. {example!r}")
    if n_speakers < 1:
        raise ValueError(f"n_speakers={n_speakers} must be at least 1")


def speaker_id(speaker_prefix: str, *, namespace: str, seed: int, index: int) -> str:
    """A generated corpus's speaker id: ``speaker_prefix`` + 8 hex digits of a hash of (seed, index)."""
    return speaker_prefix + hashlib.sha1(f"{namespace}:{seed}:{index}".encode()).hexdigest()[:8]


def speaker_voices(n_speakers: int, *, seed: int, speaker_prefix: str = "s") -> list[SpeakerVoice]:
    """``n_speakers`` voices drawn from ``seed``; ids are ``speaker_prefix`` + 8 hex digits of a hash."""
    check_speaker_request(n_speakers, speaker_prefix, example="s")
    rng = np.random.default_rng([seed, 1])
    voices = []
    for index in range(n_speakers):
        voices.append(
            SpeakerVoice(
                speaker_id=speaker_id(speaker_prefix, namespace="convexlab-speaker", seed=seed, index=index),
                f0=float(np.exp(rng.uniform(np.log(85.0), np.log(260.0)))),
                formant_scale=float(rng.uniform(0.85, 1.25)),
                tilt=float(rng.uniform(0.0, 0.8)),
                breathiness=float(rng.uniform(0.0, 0.15)),
                rate=float(rng.uniform(0.8, 1.2)),
                snr_db=float(rng.uniform(12.0, 35.0)),
                vowel_accent=tuple(float(v) for v in rng.uniform(0.93, 1.07, size=len(_VOWELS))),
            )
        )
    return voices


def _trapezoid(t: np.ndarray, start: float, stop: float, level: float, ramp: float = 0.005) -> np.ndarray:
    """``level`` on [start, stop] with linear ramps of ``ramp`` seconds, 0 elsewhere; shape of ``t``."""
    return level * np.clip(np.minimum(t - start + ramp, stop - t + ramp) / ramp, 0.0, 1.0)


def _clip_plan(word: tuple[str, ...], voice: SpeakerVoice, rng: np.random.Generator, t: np.ndarray, frames: np.ndarray):
    """Per-sample excitation envelopes and per-frame filter tracks of one clip.

    Returns f0 (T,), voicing (T,), aspiration (T,), frication (T,) and formants (frames, 5),
    noise centre (frames,), noise width (frames,).
    """
    rate = voice.rate * rng.uniform(0.94, 1.06)
    scale = voice.formant_scale * rng.uniform(0.98, 1.02)
    durations = []
    for syllable in word:
        consonant = _CONSONANTS[syllable[0]]
        durations.append((consonant.duration * rate, _VOWEL_DURATION * rate * rng.uniform(0.92, 1.08)))
    total = sum(c + v for c, v in durations)
    squeeze = min(1.0, _MAX_WORD_DURATION / total)
    durations = [(c * squeeze, v * squeeze) for c, v in durations]
    total *= squeeze
    start = rng.uniform(0.03, max(0.031, 1.0 - total - 0.03))

    voicing = np.zeros_like(t)
    aspiration = np.zeros_like(t)
    frication = np.zeros_like(t)
    formant_knots: list[tuple[float, tuple[float, float, float]]] = []
    noise_knots: list[tuple[float, float, float]] = []
    cursor = start
    for position, (syllable, (c_dur, v_dur)) in enumerate(zip(word, durations)):
        consonant = _CONSONANTS[syllable[0]]
        vowel = syllable[1]
        if consonant.kind == "stop":
            closure, burst = 0.55 * c_dur, 0.15 * c_dur
            frication += _trapezoid(t, cursor + closure, cursor + closure + burst, 0.5, ramp=0.002)
            aspiration += _trapezoid(t, cursor + closure + burst, cursor + c_dur, 0.35)
            locus_time = cursor + closure
        elif consonant.kind == "fricative":
            frication += _trapezoid(t, cursor, cursor + c_dur, 0.3, ramp=0.015)
            locus_time = cursor + c_dur
        else:  # nasal murmur: weak voicing through low formants
            voicing += _trapezoid(t, cursor, cursor + c_dur, 0.3)
            formant_knots.append((cursor + 0.01, (260.0, consonant.f2_locus, 2300.0)))
            locus_time = cursor + c_dur
        noise_knots += [(cursor, consonant.noise_centre, consonant.noise_width),
                        (cursor + c_dur, consonant.noise_centre, consonant.noise_width)]
        release = cursor + c_dur
        target = np.array(_VOWELS[vowel]) * rng.uniform(0.96, 1.04, size=3)
        target[1] *= voice.vowel_accent[_VOWEL_NAMES.index(vowel)]
        formant_knots.append((locus_time, (300.0, consonant.f2_locus, 2500.0)))
        formant_knots.append((release + _TRANSITION * squeeze, tuple(target)))
        formant_knots.append((release + v_dur - 0.02, tuple(target)))
        # the first syllable carries the stress: louder and a little higher
        stress = 1.0 if position == 0 else 0.75
        voicing += _trapezoid(t, release, release + v_dur, stress, ramp=0.012)
        cursor = release + v_dur

    breath = voice.breathiness * voicing
    aspiration = aspiration + breath
    knot_times = np.array([k[0] for k in formant_knots])
    knot_values = np.array([k[1] for k in formant_knots])
    order = np.argsort(knot_times, kind="stable")
    formants = np.stack([np.interp(frames, knot_times[order], knot_values[order, i]) for i in range(3)], axis=-1)
    high = np.broadcast_to(np.array(_HIGH_FORMANTS), (len(frames), 2))
    formants = np.concatenate([formants, high], axis=-1) * scale
    noise_times = np.array([k[0] for k in noise_knots])
    noise_centre = np.interp(frames, noise_times, [k[1] for k in noise_knots]) * scale
    noise_width = np.interp(frames, noise_times, [k[2] for k in noise_knots])

    # pitch: declines over the word, raised on the stressed syllable, jittered per repetition
    progress = np.clip((t - start) / total, 0.0, 1.0)
    f0 = voice.f0 * rng.uniform(0.96, 1.04) * (1.08 - 0.16 * progress)
    f0 *= 1.0 + 0.05 * _trapezoid(t, start, start + sum(durations[0]), 1.0, ramp=0.05)
    return f0, voicing, aspiration, frication, formants, noise_centre, noise_width


def _resonance_gain(freqs: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Magnitude response of cascaded formant resonators (unit gain at 0 Hz).

    ``freqs`` (F,) in Hz; ``formants`` (clips, frames, 5) in Hz; returns float32 (clips, F, frames).
    """
    f_squared = (freqs.astype(np.float32) ** 2)[None, :, None]
    gain = np.ones((formants.shape[0], len(freqs), formants.shape[1]), dtype=np.float32)
    for k, bandwidth in enumerate(_FORMANT_BANDWIDTHS):
        centre_squared = (formants[:, None, :, k].astype(np.float32)) ** 2
        gain *= centre_squared / np.sqrt((centre_squared - f_squared) ** 2 + f_squared * np.float32(bandwidth**2))
    return gain


def synthesize_clips(
    words: list[tuple[str, ...]], voice: SpeakerVoice, seeds: list[tuple[int, ...]]
) -> np.ndarray:
    """One-second clips of ``voice`` saying ``words[i]`` with per-clip jitter from ``seeds[i]``.

    Returns float32 (len(words), 16000) in [-1, 1].
    """
    n_clips = len(words)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    freqs, frames, _ = signal.stft(np.zeros(CLIP_SAMPLES), fs=SAMPLE_RATE, **_STFT)
    rngs = [np.random.default_rng(list(s)) for s in seeds]
    plans = [_clip_plan(word, voice, rng, t, frames) for word, rng in zip(words, rngs)]
    f0, voicing, aspiration, frication, formants, noise_centre, noise_width = (
        np.stack([plan[i] for plan in plans]) for i in range(7)
    )

    # glottal source: one impulse per pitch period, shaped by a glottal low-pass, lip radiation
    # (a differentiator) and the speaker's extra spectral tilt
    phase = np.cumsum(f0 / SAMPLE_RATE, axis=-1)
    pulses = np.diff(np.floor(phase), axis=-1, prepend=0.0)
    glottal = signal.lfilter([1.0], np.poly([0.95, 0.6]), pulses, axis=-1)
    glottal = signal.lfilter([1.0, -1.0], [1.0], glottal, axis=-1)
    glottal = signal.lfilter([1.0 - voice.tilt], [1.0, -voice.tilt], glottal, axis=-1)
    glottal /= np.abs(glottal).max(axis=-1, keepdims=True) + 1e-9
    noise = np.stack([rng.standard_normal((2, CLIP_SAMPLES), dtype=np.float32) for rng in rngs])
    # float32 from here on: the STFTs dominate the cost and run twice as fast in single precision
    voiced_source = (glottal * voicing + 0.2 * noise[:, 0] * aspiration).astype(np.float32)
    noise_source = (noise[:, 1] * frication).astype(np.float32)

    _, _, voiced_spec = signal.stft(voiced_source, fs=SAMPLE_RATE, **_STFT)  # (clips, F, frames)
    _, _, noise_spec = signal.stft(noise_source, fs=SAMPLE_RATE, **_STFT)
    tract = _resonance_gain(freqs, formants)
    band = np.exp(-0.5 * ((freqs[None, :, None] - noise_centre[:, None, :]) / noise_width[:, None, :]) ** 2)
    _, speech = signal.istft(voiced_spec * tract + 2.0 * noise_spec * band, fs=SAMPLE_RATE, **_STFT)
    speech = speech[:, :CLIP_SAMPLES]

    # background noise at the speaker's SNR (measured on the speaking part), then loudness
    active = (voicing + frication) > 0.05
    speech_rms = np.sqrt((speech**2 * active).sum(-1) / np.maximum(active.sum(-1), 1))
    snr_db = voice.snr_db + np.array([rng.uniform(-2.0, 2.0) for rng in rngs])
    background = np.stack([rng.standard_normal(CLIP_SAMPLES, dtype=np.float32) for rng in rngs])
    clips = speech + background * (speech_rms / 10 ** (snr_db / 20))[:, None]
    gain = np.array([rng.uniform(0.4, 0.9) for rng in rngs])
    clips *= (gain / (np.abs(clips).max(axis=-1) + 1e-9))[:, None]
    assert clips.shape == (n_clips, CLIP_SAMPLES)
    return clips.astype(np.float32)


def _wav_bytes(clip: np.ndarray) -> bytes:
    """A 16-bit PCM WAV file's bytes. Writing through memory skips libsndfile's fsync per file,
    which dominated generation time; a corpus counts as complete only once corpus.json (written
    last) exists, and the cached one appears only when whole (atomic_dir)."""
    buffer = io.BytesIO()
    sf.write(buffer, clip, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def _split_of_speakers(speaker_ids: list[str], *, validation_fraction: float, test_fraction: float) -> dict[str, str]:
    """Assign whole speakers to validation/test by a hash of their id, as Speech Commands does.

    Speakers are ranked by the SHA-1 of their id and the first ones go to validation, the next
    ones to test (at least one each when there are three or more speakers).
    """
    ranked = sorted(speaker_ids, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    n = len(ranked)
    n_val = max(1, round(n * validation_fraction)) if n >= 3 else 0
    n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
    split = {s: "train" for s in ranked}
    split.update({s: "validation" for s in ranked[:n_val]})
    split.update({s: "test" for s in ranked[n_val : n_val + n_test]})
    return split


def generate_corpus(
    root: str | Path,
    *,
    n_words: int = 12,
    n_speakers: int = 24,
    n_repetitions: int = 6,
    seed: int = 0,
    speaker_prefix: str = "s",
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool | None = None,
) -> Path:
    """Write a synthetic corpus into ``root`` in the Speech Commands layout; returns ``root``.

    ``<root>/<word>/<speaker>_nohash_<n>.wav`` (16-bit, 16 kHz, mono, one second),
    ``validation_list.txt`` and ``testing_list.txt`` (whole speakers, assigned by a hash of the
    speaker id) and ``corpus.json`` (the parameters and the speakers' voices).
    """
    if n_repetitions < 1:
        raise ValueError(f"n_repetitions={n_repetitions} must be at least 1")
    root = Path(root)
    words = lexicon(n_words)
    voices = speaker_voices(n_speakers, seed=seed, speaker_prefix=speaker_prefix)
    split = _split_of_speakers([v.speaker_id for v in voices], validation_fraction=validation_fraction,
                               test_fraction=test_fraction)
    for word in words:
        (root / word_name(word)).mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    for s_index, voice in enumerate(tqdm(voices, desc="synthesising speakers", disable=tqdm_disable(progress))):
        plan = [(w_index, word, rep) for w_index, word in enumerate(words) for rep in range(n_repetitions)]
        clips = synthesize_clips(
            [word for _, word, _ in plan], voice, [(seed, s_index, w_index, rep) for w_index, _, rep in plan]
        )
        for (_, word, rep), clip in zip(plan, clips):
            clip_id = f"{word_name(word)}/{voice.speaker_id}_nohash_{rep}.wav"
            (root / clip_id).write_bytes(_wav_bytes(clip))
            if split[voice.speaker_id] in lists:
                lists[split[voice.speaker_id]].append(clip_id)
    (root / "validation_list.txt").write_text("".join(f"{c}\n" for c in sorted(lists["validation"])))
    (root / "testing_list.txt").write_text("".join(f"{c}\n" for c in sorted(lists["test"])))
    save_json(
        root / "corpus.json",
        {
            "generator": "convexlab.synth",
            "version": SYNTH_VERSION,
            "params": dict(n_words=n_words, n_speakers=n_speakers, n_repetitions=n_repetitions, seed=seed,
                           speaker_prefix=speaker_prefix, validation_fraction=validation_fraction,
                           test_fraction=test_fraction),
            "words": {word_name(w): list(w) for w in words},
            "speakers": [v.__dict__ for v in voices],
        },
    )
    return root


def synthetic_corpus(
    *,
    n_words: int = 12,
    n_speakers: int = 24,
    n_repetitions: int = 6,
    seed: int = 0,
    speaker_prefix: str = "s",
    progress: bool | None = None,
) -> Path:
    """The synthetic corpus for these parameters, generated into the cache on first use.

    Lives in ``cache_path("corpora", ...)``; written to a temporary folder and moved into place
    when complete, so an interrupted generation is simply redone.
    """
    params = dict(n_words=n_words, n_speakers=n_speakers, n_repetitions=n_repetitions, seed=seed,
                  speaker_prefix=speaker_prefix)
    key = stable_hash("synthetic-corpus", SYNTH_VERSION, params)
    path = cache_path("corpora", f"synth-{n_words}w-{n_speakers}s-{n_repetitions}r-seed{seed}-{key}")
    if (path / "corpus.json").is_file():
        return path
    with atomic_dir(path, marker="corpus.json") as tmp:
        generate_corpus(tmp, **params, progress=progress)
    return path


