"""The synthetic corpus: lexicon, voices, audio structure, layout, determinism and caching."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from convexlab import synth
from convexlab.data import speaker_task, word_task


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "corpus"
    return synth.generate_corpus(root, n_words=4, n_speakers=5, n_repetitions=2, seed=3, progress=False)


def test_lexicon_is_fixed_and_words_share_syllables_in_different_orders():
    words = synth.lexicon(12)
    assert words == synth.lexicon(12)
    assert synth.lexicon(6) == words[:6]  # a smaller lexicon is a prefix: same words across sizes
    assert len(set(words)) == 12 and all(2 <= len(w) <= 3 for w in words)
    assert all(s in synth.SYLLABLES for w in words for s in w)
    syllable_use = Counter(s for w in words for s in w)
    assert all(count >= 2 for count in syllable_use.values())
    assert sum(w[::-1] in words for w in words) >= 10  # mostly reversed pairs: order carries identity
    assert len({synth.word_name(w) for w in words}) == 12
    with pytest.raises(ValueError, match="n_words"):
        synth.lexicon(1000)


def test_voices_depend_on_seed_and_carry_the_prefix():
    a = synth.speaker_voices(8, seed=0)
    assert a == synth.speaker_voices(8, seed=0)
    b = synth.speaker_voices(8, seed=1)
    assert not {v.speaker_id for v in a} & {v.speaker_id for v in b}
    assert [v.f0 for v in a] != [v.f0 for v in b]
    c = synth.speaker_voices(8, seed=0, speaker_prefix="pre")
    assert all(v.speaker_id.startswith("pre") for v in c)
    assert len({v.speaker_id for v in a}) == 8
    # the voices really differ in every dimension the docstring promises
    for name in ("f0", "formant_scale", "tilt", "rate", "snr_db", "breathiness"):
        assert np.std([getattr(v, name) for v in a]) > 0, name
    with pytest.raises(ValueError, match="speaker_prefix"):
        synth.speaker_voices(2, seed=0, speaker_prefix="a_b")


def _estimated_f0(clip: np.ndarray) -> float:
    """Autocorrelation pitch of the loudest 100 ms of a clip."""
    frame = 1600
    energy = np.convolve(clip**2, np.ones(frame), mode="valid")
    start = int(np.argmax(energy))
    x = clip[start : start + frame] - clip[start : start + frame].mean()
    corr = np.correlate(x, x, mode="full")[frame - 1 :]
    lo, hi = 16_000 // 400, 16_000 // 60
    return 16_000 / (lo + int(np.argmax(corr[lo:hi])))


def test_pitch_follows_the_speaker():
    voices = synth.speaker_voices(6, seed=7)
    word = synth.lexicon(2)[0]
    for voice in voices:
        clips = synth.synthesize_clips([word] * 3, voice, [(7, 0, 0, r) for r in range(3)])
        estimates = [_estimated_f0(c) for c in clips]
        # per-repetition jitter (+-4 %) and declination (+-8 %) around the speaker's f0
        assert all(abs(np.log(e / voice.f0)) < np.log(1.25) for e in estimates), (voice.f0, estimates)


def _high_band_peak_time(clip: np.ndarray) -> float:
    """Time (s) where the 4-8 kHz band (the /s/ frication) is strongest, relative to speech onset."""
    freqs, times, spec = signal.stft(clip, fs=16_000, nperseg=256)
    power = np.abs(spec) ** 2
    high = power[freqs >= 4_000].sum(0)
    speech = power[(freqs > 100) & (freqs < 3_000)].sum(0)
    active = times[speech > 0.05 * speech.max()]
    return (times[np.argmax(high)] - active.min()) / (active.max() - active.min())


def test_segment_order_is_audible_in_the_signal():
    voice = synth.speaker_voices(1, seed=0)[0]
    so_first = synth.synthesize_clips([("so", "ka")] * 4, voice, [(0, 0, 0, r) for r in range(4)])
    so_last = synth.synthesize_clips([("ka", "so")] * 4, voice, [(0, 0, 1, r) for r in range(4)])
    assert all(_high_band_peak_time(c) < 0.4 for c in so_first)
    assert all(_high_band_peak_time(c) > 0.4 for c in so_last)


def test_clips_are_valid_audio():
    voice = synth.speaker_voices(1, seed=0)[0]
    clips = synth.synthesize_clips(synth.lexicon(6), voice, [(0, 0, i, 0) for i in range(6)])
    assert clips.shape == (6, 16_000) and clips.dtype == np.float32
    assert np.isfinite(clips).all() and np.abs(clips).max() <= 1.0
    assert (np.abs(clips).max(axis=1) > 0.3).all()


def test_corpus_layout_reads_back_with_the_loader(small_corpus):
    wavs = sorted(small_corpus.glob("*/*.wav"))
    assert len(wavs) == 4 * 5 * 2
    info = sf.info(wavs[0])
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16_000, 1, 16_000, "PCM_16")
    words = word_task(small_corpus)
    assert words.label_names == sorted(synth.word_name(w) for w in synth.lexicon(4))
    splits = {}
    for speaker, split in zip(words.speakers, words.splits):
        splits.setdefault(speaker, set()).add(split)
    assert all(len(s) == 1 for s in splits.values())  # whole speakers per split, like the real corpus
    assert Counter(next(iter(s)) for s in splits.values()) == {"train": 3, "validation": 1, "test": 1}
    speakers = speaker_task(small_corpus, min_utterances=8, test_fraction=0.25)
    assert len(speakers.label_names) == 5


def test_generation_is_deterministic_and_seed_dependent(small_corpus, tmp_path):
    again = synth.generate_corpus(tmp_path / "again", n_words=4, n_speakers=5, n_repetitions=2, seed=3,
                                  progress=False)
    assert _digest(again) == _digest(small_corpus)
    other = synth.generate_corpus(tmp_path / "other", n_words=4, n_speakers=5, n_repetitions=2, seed=4,
                                  progress=False)
    assert not set(word_task(other).speakers) & set(word_task(small_corpus).speakers)
    assert word_task(other).label_names == word_task(small_corpus).label_names  # same words


def test_synthetic_corpus_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    params = dict(n_words=2, n_speakers=3, n_repetitions=1, seed=0)
    calls = []
    real = synth.generate_corpus

    def failing(root, **kwargs):
        real(root, **kwargs)
        raise KeyboardInterrupt  # interrupted after writing everything but before the move

    monkeypatch.setattr(synth, "generate_corpus", failing)
    with pytest.raises(KeyboardInterrupt):
        synth.synthetic_corpus(**params)
    assert not list((tmp_path / "corpora").iterdir())  # nothing half-written is left behind

    def counting(root, **kwargs):
        calls.append(root)
        return real(root, **kwargs)

    monkeypatch.setattr(synth, "generate_corpus", counting)
    first = synth.synthetic_corpus(**params)
    second = synth.synthetic_corpus(**params)
    assert first == second and len(calls) == 1
    assert synth.synthetic_corpus(**{**params, "seed": 1}) != first and len(calls) == 2
