"""A spoken-word corpus: the 35 words of Speech Commands v0.02 said by espeak-ng, offline.

Why: the synthetic corpus (:mod:`convexlab.synth`) has words and speakers but not the nuisance
structure of real recordings. Here every clip is an English word pronounced by libespeak-ng (the
copy shipped by the ``espeakng-loader`` package, called through ctypes; GPL-3.0, used only to
generate this corpus) and then passed through a speaker's vocal tract and recording channel:

* **Speaker** (drawn from ``seed``, a frozen :class:`Speaker`): an English accent (8 espeak-ng
  voices), a voice variant (``voices/!v``: 104 of them), base pitch and pitch range (espeak's
  0-99 scale), speaking rate (words per minute; 130-210 unless ``speaking_rate`` says otherwise,
  and below espeak-ng's floor of 80 the word is spoken at 80 and time-stretched by a phase
  WSOLA, which keeps pitch and formants), a vocal-tract-length warp (the waveform
  resampled, so all formants and the pitch scale by it), and a recording channel: a 6-band
  microphone colouring (+-3 dB), a small-room reverberation (an exponentially decaying noise
  impulse response) and white-to-pink background noise at an SNR of 20-40 dB (over the whole clip).
  The ranges are milder than first drawn (+-6 dB, 8-35 dB SNR, warp 0.85-1.18, DRR 3-15 dB): those
  left a time-averaged log-mel word probe at 27 % (speakers 99 %), these give words 44 % and
  speakers 96 % (20 words x 24 speakers x 3; the prototype of the issue: 51 % and 96 %), and
  mini-hubert's word convexity rose from 0.075 to 0.159 at its input.
* **Repetition**: rate (+-10 %), pitch (+-6), loudness and the word's onset in the one-second
  clip are jittered; silence is trimmed and the word placed at a random onset so it fits (a word
  longer than the clip is cut with a fade).

espeak-ng keeps internal state between utterances (pitch phase, flutter, noise), so a clip's
bytes depend on what the engine said before it in the same process. Synthesis therefore runs in
one fresh worker process per corpus, in an order fixed by the corpus's spec: the same spec gives
the same bytes. The worker only speaks; the main process does the signal processing meanwhile.

Layout as Speech Commands (``<root>/<word>/<speaker>_nohash_<n>.wav``, 16 kHz 16-bit mono, one
second; ``validation_list.txt``/``testing_list.txt`` by whole speakers; ``corpus.json``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pickle
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm.auto import tqdm

from convexlab import _espeak_worker
from convexlab._espeak_worker import FIX as _FIX
from convexlab._espeak_worker import EspeakError
from convexlab._progress import tqdm_disable
from convexlab.cache import atomic_dir, cache_path, save_json, stable_hash
from convexlab.families import CLIP_SAMPLES, SAMPLE_RATE
from convexlab.synth import _split_of_speakers, _wav_bytes, check_speaker_request, speaker_id

__all__ = [
    "SPOKEN_VERSION",
    "DEFAULT_SPEAKING_RATE",
    "ESPEAK_MIN_RATE",
    "WORDS",
    "OTHER_WORDS",
    "ACCENTS",
    "VARIANTS",
    "EspeakError",
    "Speaker",
    "spoken_words",
    "draw_speakers",
    "espeak_paths",
    "espeak_loader_version",
    "generate_corpus",
    "spoken_corpus",
]

SPOKEN_VERSION = 3  # bump when the audio a spec produces changes (it is part of the cache key)
DEFAULT_SPEAKING_RATE = (130, 210)  # words per minute, the range speakers' rates are drawn from (corpus v3)
ESPEAK_MIN_RATE = 80  # libespeak-ng speaks no slower: a slower rate is espeak's 80 time-stretched
_MAX_RATE = 450  # libespeak-ng's fastest

# Speech Commands v0.02: the 20 core words (10 commands, 10 digits), then the 15 auxiliary ones,
# so that n_words=20 is the core vocabulary and n_words=10 the commands
WORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
)  # fmt: skip
# Common English words that are none of the 35 (no homophone or inflection of one either), mostly of
# one or two syllables so that they fit a one-second clip at slow rates. A pretraining corpus may add
# the first n_other_words of them: real models are pretrained on a broad vocabulary in which the
# Speech Commands words are a small minority, not on those 35 words alone.
OTHER_WORDS = (
    "water", "paper", "window", "garden", "table", "chair", "apple", "orange", "yellow", "purple",
    "green", "blue", "black", "white", "red", "brown", "money", "music", "letter", "mother",
    "father", "sister", "brother", "people", "friend", "morning", "evening", "night", "summer", "winter",
    "river", "mountain", "island", "city", "village", "street", "doctor", "teacher", "question", "answer",
    "problem", "picture", "story", "kitchen", "market", "corner", "middle", "little", "always", "never",
    "often", "maybe", "very", "under", "again", "open", "close", "begin", "finish", "carry",
    "listen", "travel", "wonder", "bread", "cheese", "milk", "butter", "sugar", "salt", "fish",
    "horse", "mouse", "rabbit", "monkey", "tiger", "lion", "snake", "flower", "grass", "stone",
    "sand", "cloud", "rain", "snow", "wind", "fire", "light", "dark", "warm", "cold",
    "quick", "slow", "small", "large", "long", "short", "heavy", "empty", "clean", "dirty",
    "quiet", "loud", "simple", "careful", "strong",
)  # fmt: skip
# espeak-ng's English voices (espeak-ng 1.52 names; "en" is British English)
ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# the voice variants of espeak-ng 1.52 (files in espeak-ng-data/voices/!v), fixed here so the
# corpus does not depend on a folder listing
VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene",
    "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Mr serious",
    "Nguyen", "Reed", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot",
    "adam", "anika", "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "croak", "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "fast",
    "grandma", "grandpa", "gustave", "ian", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5",
    "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "mike2", "norbert", "pablo", "paul",
    "pedro", "quincy", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4",
    "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2",
    "steph3", "travis", "victor", "whisper", "whisperf", "zac",
)  # fmt: skip
# libespeak-ng 1.52 crashes (SIGSEGV) on some words with these variants: "Demonic" on "backward" at pitch
# 24 / range 84, "rob" at rate 130 / pitch 15 / range 85 (found by speaking all 35 words with every
# variant at three settings), so they are not drawn.
CRASHING_VARIANTS = ("Demonic", "rob")
MIC_BANDS = (125.0, 300.0, 700.0, 1500.0, 3200.0, 6500.0)  # Hz, centres of the microphone's 6 bands
_MARGIN = 160  # samples (10 ms) kept free at either end of a clip
_FADE = 480  # samples (30 ms) of fade-out where a too-long word is cut
_IR_SAMPLES = 4_800  # 0.3 s room impulse response
_FRAME = 160  # 10 ms frames for silence trimming
_TRIM_DB = 40.0  # frames more than this below the loudest are silence


@dataclass(frozen=True)
class Speaker:
    speaker_id: str  # id used in file names ("<speaker>_nohash_<n>.wav")
    accent: str  # espeak-ng English voice, one of ACCENTS
    variant: str  # espeak-ng voice variant (voices/!v), one of VARIANTS
    pitch: int  # espeak base pitch, 15-85 (0-99 scale)
    pitch_range: int  # espeak pitch range, 15-85 (0: monotone)
    rate: int  # speaking rate in words per minute, drawn from the corpus's speaking_rate (default 130-210)
    warp: float  # vocal-tract-length warp, 0.92-1.09: all frequencies times this (> 1: shorter tract)
    mic_gains_db: tuple[float, ...]  # microphone colouring, one gain (+-3 dB) per MIC_BANDS centre
    rt60: float  # s, 0.1-0.3: reverberation time of the small room
    reverb_db: float  # dB, 10-20: direct sound over reverberant energy (lower: more reverberant)
    snr_db: float  # dB, 20-40: speech RMS over background-noise RMS, both over the whole clip
    noise_slope: float  # 0-1: background noise power falls as frequency**-noise_slope (0 white, 1 pink)

    @property
    def voice(self) -> str:
        """The name espeak_SetVoiceByName takes: ``"<accent>+<variant>"``."""
        return f"{self.accent}+{self.variant}"


def spoken_words(n_words: int | None = None, n_other_words: int = 0) -> tuple[str, ...]:
    """The first ``n_words`` of :data:`WORDS` (all 35 for ``None``; core words first), then the first
    ``n_other_words`` of :data:`OTHER_WORDS`."""
    if not 0 <= n_other_words <= len(OTHER_WORDS):
        raise ValueError(f"n_other_words={n_other_words} must be between 0 and {len(OTHER_WORDS)} (the words of OTHER_WORDS)")
    if n_words is None:
        return WORDS + OTHER_WORDS[:n_other_words]
    if not 2 <= n_words <= len(WORDS):
        raise ValueError(f"n_words={n_words} must be between 2 and {len(WORDS)} (the Speech Commands v0.02 words)")
    return WORDS[:n_words] + OTHER_WORDS[:n_other_words]


def check_speaking_rate(speaking_rate) -> tuple[int, int]:
    """``speaking_rate`` as ``(lowest, highest)`` words per minute; ValueError naming the fix when it is not one."""
    try:
        low, high = (int(v) for v in speaking_rate)
    except (TypeError, ValueError):
        raise ValueError(f"speaking_rate={speaking_rate!r} must be two integers (lowest, highest) in words "
                         f"per minute, e.g. {DEFAULT_SPEAKING_RATE}") from None
    if not 20 <= low <= high <= _MAX_RATE or (low, high) != tuple(speaking_rate):
        raise ValueError(f"speaking_rate={speaking_rate!r} must be whole words per minute with 20 <= lowest <= "
                         f"highest <= {_MAX_RATE} (espeak-ng speaks 80-{_MAX_RATE}; slower is stretched from 80)")
    return low, high


def draw_speakers(n_speakers: int, *, seed: int, speaker_prefix: str = "e",
                  speaking_rate: tuple[int, int] = DEFAULT_SPEAKING_RATE) -> list[Speaker]:
    """``n_speakers`` speakers drawn from ``seed``; ids are ``speaker_prefix`` + 8 hex digits of a hash.

    Each speaker's rate is drawn uniformly from ``speaking_rate`` (words per minute, both ends
    included). The first ``k`` speakers of a seed are the same for every ``n_speakers >= k``.
    """
    check_speaker_request(n_speakers, speaker_prefix, example="e")
    low_rate, high_rate = check_speaking_rate(speaking_rate)
    rng = np.random.default_rng([seed, 2])
    speakers = []
    for index in range(n_speakers):
        speakers.append(
            Speaker(
                speaker_id=speaker_id(speaker_prefix, namespace="convexlab-spoken-speaker", seed=seed, index=index),
                accent=ACCENTS[int(rng.integers(len(ACCENTS)))],
                variant=VARIANTS[int(rng.integers(len(VARIANTS)))],
                pitch=int(rng.integers(15, 86)),
                pitch_range=int(rng.integers(15, 86)),
                rate=int(rng.integers(low_rate, high_rate + 1)),
                warp=float(np.exp(rng.uniform(np.log(0.92), np.log(1.09)))),
                mic_gains_db=tuple(float(g) for g in rng.uniform(-3.0, 3.0, size=len(MIC_BANDS))),
                rt60=float(rng.uniform(0.1, 0.3)),
                reverb_db=float(rng.uniform(10.0, 20.0)),
                snr_db=float(rng.uniform(20.0, 40.0)),
                noise_slope=float(rng.uniform(0.0, 1.0)),
            )
        )
    return speakers


# ---------------------------------------------------------------- espeak-ng

def espeak_paths() -> tuple[str, str]:
    """``(library, data folder)`` of the libespeak-ng that ``espeakng_loader`` ships.

    Raises :class:`EspeakError` saying how to install it when the package is missing or broken.
    """
    try:
        loader = importlib.import_module("espeakng_loader")
    except ImportError as error:
        raise EspeakError(
            f"The spoken corpus needs libespeak-ng from the espeakng-loader package, which is not importable "
            f"({error}). Install it: {_FIX}. (No fallback: use corpus='synthetic' for the synthetic corpus.)"
        ) from error
    try:
        library, data = str(loader.get_library_path()), str(loader.get_data_path())
    except Exception as error:  # the loader raises RuntimeError for a missing data folder
        raise EspeakError(f"espeakng_loader is installed but broken ({error}); reinstall it: {_FIX}") from error
    if not Path(library).is_file():
        raise EspeakError(f"libespeak-ng not found at {library} (from espeakng_loader); reinstall it: {_FIX}")
    if not (Path(data) / "voices" / "!v").is_dir():
        raise EspeakError(f"espeak-ng's data folder {data} lacks voices/!v; reinstall espeakng-loader: {_FIX}")
    return library, data


# ---------------------------------------------------------------- voice and channel (numpy)

def _channel(speaker: Speaker, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The speaker's room impulse response (_IR_SAMPLES,) and microphone gain (CLIP_SAMPLES // 2 + 1,)."""
    rng = np.random.default_rng([seed, 3, index])
    t = np.arange(_IR_SAMPLES) / SAMPLE_RATE
    tail = rng.standard_normal(_IR_SAMPLES) * np.exp(-6.91 * t / speaker.rt60)
    tail[: int(rng.integers(32, 128))] = 0.0  # 2-8 ms before the first reflections
    impulse = tail * (10 ** (-speaker.reverb_db / 20) / np.sqrt((tail**2).sum()))
    impulse[0] = 1.0
    freqs = np.fft.rfftfreq(CLIP_SAMPLES, 1 / SAMPLE_RATE)
    gain_db = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(MIC_BANDS), speaker.mic_gains_db)
    return impulse, 10 ** (gain_db / 20)


_STRETCH_WINDOW = 512  # samples (32 ms at 16 kHz): WSOLA's frames, half-overlapped
_STRETCH_TOLERANCE = 128  # samples (8 ms): how far WSOLA may shift a frame to continue the waveform


def _stretch(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` (T,) at 16 kHz made ``factor`` times longer, pitch and formants kept: (round(T * factor),).

    WSOLA (waveform-similarity overlap-add): Hann frames are laid down every half window and read
    from the input every half window / ``factor``, each shifted by up to the tolerance to the
    place where the input best continues the frame laid before it, so voiced periods stay
    whole. Written out because no dependency stretches in the time domain; torchaudio's phase
    vocoder keeps each bin's phase but not the bins' phases relative to each other, which here
    lost 30 % of a word's energy and 3.5 dB of its long-term spectrum (phasiness).
    """
    n, tol = _STRETCH_WINDOW, _STRETCH_TOLERANCE
    hop_out = n // 2
    hop_in = hop_out / factor
    n_out = round(len(x) * factor)
    n_frames = n_out // hop_out + 2
    padded = np.pad(x, (tol, n + tol + int(np.ceil(n_frames * hop_in))))
    window = signal.get_window("hann", n)  # periodic: half-overlapped frames sum to one
    out = np.zeros(n_frames * hop_out + n)
    shift = 0
    for m in range(n_frames):
        start = round(m * hop_in) + tol + shift
        out[m * hop_out : m * hop_out + n] += padded[start : start + n] * window
        natural = padded[start + hop_out : start + hop_out + n]  # how the laid frame goes on in the input
        target = round((m + 1) * hop_in) + tol
        candidates = padded[target - tol : target + tol + n]
        similarity = signal.correlate(candidates, natural, mode="valid", method="fft")  # (2 * tol + 1,)
        shift = int(np.argmax(similarity)) - tol
    return out[n // 2 : n // 2 + n_out]  # the first frame's rising half is not a full sum of windows


def _voice_clip(raw: np.ndarray, warp: float, stretch: float = 1.0) -> np.ndarray:
    """espeak's int16 (T,) at 22,050 Hz -> float (T',) at 16 kHz, stretched ``stretch`` times (1: not at
    all), warped, silence trimmed, unit RMS."""
    x = signal.resample_poly(raw.astype(np.float64) / 32768.0, 160, 441)
    if stretch != 1.0:
        x = _stretch(x, stretch)
    x = signal.resample(x, max(1, round(len(x) / warp)))  # frequencies times warp, duration over warp
    n_frames = len(x) // _FRAME
    rms = np.sqrt((x[: n_frames * _FRAME].reshape(n_frames, _FRAME) ** 2).mean(1))
    active = np.nonzero(rms > rms.max() * 10 ** (-_TRIM_DB / 20))[0]
    x = x[max(0, (active[0] - 1) * _FRAME) : (active[-1] + 2) * _FRAME]
    return x / (np.sqrt((x**2).mean()) + 1e-12)


def _place(word: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The word at a random onset in a one-second clip: (16000,)."""
    room = CLIP_SAMPLES - 2 * _MARGIN
    if len(word) > room:  # cut with a fade rather than squeeze (which would change pitch and formants)
        word = word[:room].copy()
        word[-_FADE:] *= np.linspace(1.0, 0.0, _FADE)
    onset = int(rng.integers(_MARGIN, CLIP_SAMPLES - _MARGIN - len(word) + 1))
    clip = np.zeros(CLIP_SAMPLES)
    clip[onset : onset + len(word)] = word
    return clip


def _record(words: list[np.ndarray], speaker: Speaker, channel, rngs: list[np.random.Generator]) -> np.ndarray:
    """Place, reverberate, add noise, colour by the microphone, set loudness: float32 (len(words), 16000)."""
    impulse, mic = channel
    clips = np.stack([_place(w, rng) for w, rng in zip(words, rngs)])
    n_fft = CLIP_SAMPLES + _IR_SAMPLES
    wet = np.fft.irfft(np.fft.rfft(clips, n_fft) * np.fft.rfft(impulse, n_fft), n_fft)[:, :CLIP_SAMPLES]
    speech_rms = np.sqrt((wet**2).mean(1))  # over the whole clip
    freqs = np.fft.rfftfreq(CLIP_SAMPLES, 1 / SAMPLE_RATE)
    tilt = np.maximum(freqs, 50.0) ** (-speaker.noise_slope / 2)
    white = np.stack([rng.standard_normal(CLIP_SAMPLES) for rng in rngs])
    noise = np.fft.irfft(np.fft.rfft(white) * tilt, CLIP_SAMPLES)
    noise /= np.sqrt((noise**2).mean(1, keepdims=True))
    snr_db = speaker.snr_db + np.array([rng.uniform(-1.5, 1.5) for rng in rngs])
    mixed = wet + noise * (speech_rms / 10 ** (snr_db / 20))[:, None]
    out = np.fft.irfft(np.fft.rfft(mixed) * mic, CLIP_SAMPLES)
    loudness = np.array([rng.uniform(0.25, 0.9) for rng in rngs])  # peak level per repetition
    out *= (loudness / (np.abs(out).max(1) + 1e-12))[:, None]
    return out.astype(np.float32)


# ---------------------------------------------------------------- the corpus

def _clip_plan(speaker: Speaker, rng: np.random.Generator) -> tuple[int, int, int, float]:
    """A repetition's espeak parameters and stretch: (espeak rate, pitch, espeak's random seed,
    time-stretch factor); a rate below espeak-ng's floor is spoken at the floor and stretched."""
    rate = int(round(speaker.rate * rng.uniform(0.9, 1.1)))
    pitch = int(np.clip(round(speaker.pitch + rng.uniform(-6.0, 6.0)), 0, 99))
    stretch = ESPEAK_MIN_RATE / rate if rate < ESPEAK_MIN_RATE else 1.0
    return max(rate, ESPEAK_MIN_RATE), pitch, int(rng.integers(1, 2**31 - 1)), stretch


class _Worker:
    """A fresh espeak-ng worker process (:mod:`convexlab._espeak_worker`) given all ``jobs`` at once.

    It speaks them in order while the caller processes the results already returned.
    """

    def __init__(self, library: str, data: str, jobs: list[tuple[str, list[tuple]]]):
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker cannot block on it
        self.process = subprocess.Popen([sys.executable, _espeak_worker.__file__, library, data],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        try:  # the worker reads every job before it writes anything, so this cannot deadlock
            pickle.dump(jobs, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it died at start; next_result reports why

    def next_result(self) -> list[np.ndarray]:
        """The next job's clips: int16 arrays (T,) at 22,050 Hz; EspeakError if the worker failed."""
        try:
            status, payload = pickle.load(self.process.stdout)
        except (EOFError, pickle.UnpicklingError) as error:
            self.process.wait()
            self.stderr.seek(0)
            stderr = self.stderr.read().decode(errors="replace").strip()
            code = self.process.returncode
            if code is not None and code < 0:  # killed by a signal: libespeak-ng crashed on some input
                raise EspeakError(f"libespeak-ng crashed (signal {-code}) while speaking a corpus job; "
                                  f"{stderr[-2000:]}. A voice variant that crashes belongs in CRASHING_VARIANTS "
                                  "(convexlab/spoken.py)") from None
            raise EspeakError(f"the espeak-ng worker process ended (exit code {code}) without "
                              f"an answer: {stderr[-2000:] or error}. Reinstall espeakng-loader: {_FIX}") from None
        if status != "ok":
            raise EspeakError(payload)
        return payload

    def __enter__(self) -> "_Worker":
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


def generate_corpus(
    root: str | Path,
    *,
    n_words: int | None = None,
    n_speakers: int = 24,
    n_repetitions: int = 3,
    seed: int = 0,
    speaker_prefix: str = "e",
    speaking_rate: tuple[int, int] = DEFAULT_SPEAKING_RATE,
    n_other_words: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool | None = None,
) -> Path:
    """Write a spoken corpus into ``root`` in the Speech Commands layout; returns ``root``.

    ``n_words`` words of :data:`WORDS` (``None``: all 35; plus the first ``n_other_words`` of
    :data:`OTHER_WORDS`, a pretraining corpus's broader vocabulary) x ``n_speakers`` x ``n_repetitions``
    clips ``<root>/<word>/<speaker>_nohash_<n>.wav`` (16-bit, 16 kHz, mono, one second),
    ``validation_list.txt``/``testing_list.txt`` (whole speakers) and ``corpus.json`` (the
    parameters and the speakers), written last. Speakers' rates are drawn from ``speaking_rate``
    (words per minute; see :func:`draw_speakers`). Raises :class:`EspeakError` when espeak-ng is
    missing or fails; there is no fallback to another corpus.
    """
    if n_repetitions < 1:
        raise ValueError(f"n_repetitions={n_repetitions} must be at least 1")
    root = Path(root)
    words = spoken_words(n_words, n_other_words)
    speakers = draw_speakers(n_speakers, seed=seed, speaker_prefix=speaker_prefix, speaking_rate=speaking_rate)
    library, data = espeak_paths()
    split = _split_of_speakers([s.speaker_id for s in speakers], validation_fraction=validation_fraction,
                               test_fraction=test_fraction)
    for word in words:
        (root / word).mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    n_cut = 0
    keys = [(w_index, rep) for w_index in range(len(words)) for rep in range(n_repetitions)]
    rngs = {s_index: [np.random.default_rng([seed, 4, s_index, w, rep]) for w, rep in keys]
            for s_index in range(len(speakers))}
    jobs, stretches = [], []
    for s_index, speaker in enumerate(speakers):
        params = [_clip_plan(speaker, rng) for rng in rngs[s_index]]
        jobs.append((speaker.voice, [(words[w], rate, pitch, speaker.pitch_range, rand_seed)
                                     for (w, _), (rate, pitch, rand_seed, _) in zip(keys, params)]))
        stretches.append([stretch for *_, stretch in params])
    with _Worker(library, data, jobs) as worker, \
            tqdm(total=len(speakers) * len(keys), desc="speaking clips", unit="clip",
                 disable=tqdm_disable(progress)) as bar:
        for s_index, speaker in enumerate(speakers):
            voiced = [_voice_clip(r, speaker.warp, stretch)
                      for r, stretch in zip(worker.next_result(), stretches[s_index])]
            n_cut += sum(len(v) > CLIP_SAMPLES - 2 * _MARGIN for v in voiced)
            clips = _record(voiced, speaker, _channel(speaker, seed, s_index), rngs[s_index])
            for (w_index, rep), clip in zip(keys, clips):
                clip_id = f"{words[w_index]}/{speaker.speaker_id}_nohash_{rep}.wav"
                (root / clip_id).write_bytes(_wav_bytes(clip))
                if split[speaker.speaker_id] in lists:
                    lists[split[speaker.speaker_id]].append(clip_id)
                bar.update(1)
    (root / "validation_list.txt").write_text("".join(f"{c}\n" for c in sorted(lists["validation"])))
    (root / "testing_list.txt").write_text("".join(f"{c}\n" for c in sorted(lists["test"])))
    save_json(
        root / "corpus.json",
        {
            "generator": "convexlab.spoken",
            "version": SPOKEN_VERSION,
            "espeakng_loader": espeak_loader_version(),
            "params": dict(n_words=len(words) - n_other_words, n_speakers=n_speakers, n_repetitions=n_repetitions, seed=seed,
                           speaker_prefix=speaker_prefix, speaking_rate=list(speaking_rate),
                           **({"n_other_words": n_other_words} if n_other_words else {}),
                           validation_fraction=validation_fraction, test_fraction=test_fraction),
            "words": list(words),
            "clips_cut": n_cut,  # words longer than the clip, cut with a fade
            "speakers": [asdict(s) for s in speakers],
        },
    )
    return root


def espeak_loader_version() -> str:
    """The installed espeakng-loader's version (its libespeak-ng and data make the audio): part of every key."""
    try:
        return importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def spoken_corpus(
    *,
    n_words: int | None = None,
    n_speakers: int = 24,
    n_repetitions: int = 3,
    seed: int = 0,
    speaker_prefix: str = "e",
    speaking_rate: tuple[int, int] = DEFAULT_SPEAKING_RATE,
    n_other_words: int = 0,
    progress: bool | None = None,
) -> Path:
    """The spoken corpus for these parameters, generated into the cache on first use.

    Lives in ``cache_path("corpora", ...)`` under a key of the whole spec, :data:`SPOKEN_VERSION`
    and the espeakng-loader version (``speaking_rate`` and ``n_other_words`` only when they are not
    their defaults, so the corpora cached before they existed keep their keys); written to a temporary folder and moved into place when
    complete, so an interrupted generation leaves nothing and is simply redone.
    """
    words = spoken_words(n_words, n_other_words)
    params = dict(n_words=len(words) - n_other_words, n_speakers=n_speakers, n_repetitions=n_repetitions, seed=seed,
                  speaker_prefix=speaker_prefix)
    speaking_rate = check_speaking_rate(speaking_rate)
    if speaking_rate != DEFAULT_SPEAKING_RATE:
        params["speaking_rate"] = speaking_rate
    if n_other_words:
        params["n_other_words"] = n_other_words
    key = stable_hash("spoken-corpus", SPOKEN_VERSION, espeak_loader_version(), params)
    path = cache_path("corpora", f"spoken-{len(words)}w-{n_speakers}s-{n_repetitions}r-seed{seed}-{key}")
    if (path / "corpus.json").is_file():
        return path
    with atomic_dir(path, marker="corpus.json") as tmp:
        generate_corpus(tmp, **params, progress=progress)
    return path
