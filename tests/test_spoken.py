"""The spoken corpus: speakers, audio, layout, determinism, caching and espeak-ng's failures."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from convexlab import spoken
from convexlab.data import scan_corpus, speaker_task, word_task
from convexlab.pretrain import PretrainConfig, pretrained_path, pretraining_waveforms
from convexlab.spoken import EspeakError

SMALL = dict(n_words=3, n_speakers=3, n_repetitions=2, progress=False)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return spoken.generate_corpus(tmp_path_factory.mktemp("spoken") / "corpus", seed=0, **SMALL)


def test_speakers_are_drawn_within_their_ranges():
    speakers = spoken.draw_speakers(300, seed=5)
    assert speakers == spoken.draw_speakers(300, seed=5)
    assert spoken.draw_speakers(10, seed=5) == speakers[:10]  # more speakers: the same first ones
    assert len({s.speaker_id for s in speakers}) == 300
    for s in speakers:
        assert s.speaker_id.startswith("e") and s.accent in spoken.ACCENTS and s.variant in spoken.VARIANTS
        assert 15 <= s.pitch <= 85 and 15 <= s.pitch_range <= 85 and 130 <= s.rate <= 210
        assert 0.92 <= s.warp <= 1.09 and 0.1 <= s.rt60 <= 0.3 and 10 <= s.reverb_db <= 20
        assert 20 <= s.snr_db <= 40 and 0 <= s.noise_slope <= 1
        assert len(s.mic_gains_db) == len(spoken.MIC_BANDS) and all(abs(g) <= 3 for g in s.mic_gains_db)
    assert len({s.accent for s in speakers}) == len(spoken.ACCENTS)  # every accent is drawn
    assert len({s.variant for s in speakers}) > 60
    assert speakers[0].voice == f"{speakers[0].accent}+{speakers[0].variant}"
    other = spoken.draw_speakers(10, seed=6, speaker_prefix="pre")
    assert all(s.speaker_id.startswith("pre") for s in other)
    assert not {s.speaker_id for s in other} & {s.speaker_id for s in speakers}
    with pytest.raises(ValueError, match="speaker_prefix"):
        spoken.draw_speakers(2, seed=0, speaker_prefix="a_b")


def test_words_are_the_speech_commands_vocabulary():
    assert len(spoken.WORDS) == len(set(spoken.WORDS)) == 35
    assert spoken.spoken_words(10) == ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    assert spoken.spoken_words() == spoken.WORDS
    with pytest.raises(ValueError, match="n_words"):
        spoken.spoken_words(36)


def test_other_words_broaden_the_vocabulary_without_touching_the_35():
    other = spoken.OTHER_WORDS
    assert len(other) == len(set(other)) == 105 and not set(other) & set(spoken.WORDS)
    # no inflection of one of the 35 and no homophone that espeak-ng would say the same way
    homophones = {"know", "for", "four", "fore", "to", "too", "won", "ate", "write", "rite", "tree", "three"}
    assert not set(other) & (homophones - set(spoken.WORDS))
    assert not [w for w in other for c in spoken.WORDS if len(c) > 2 and w.startswith(c)]
    assert spoken.spoken_words(3, 2) == ("yes", "no", "up", "water", "paper")
    assert spoken.spoken_words(None, 105) == spoken.WORDS + other
    assert spoken.spoken_words(3, 0) == spoken.spoken_words(3)
    for bad in (-1, 106):
        with pytest.raises(ValueError, match="n_other_words"):
            spoken.spoken_words(3, bad)


def test_other_words_are_keyed_only_when_added_and_written_in_the_same_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    small = dict(n_words=2, n_speakers=2, n_repetitions=1, progress=False)
    path = spoken.spoken_corpus(seed=0, **small)
    assert spoken.spoken_corpus(seed=0, n_other_words=0, **small) == path
    broad = spoken.spoken_corpus(seed=0, n_other_words=2, **small)
    assert broad != path and broad.name.startswith("spoken-4w-")
    assert sorted(set(word_task(broad).words)) == sorted(spoken.spoken_words(2, 2))
    # the analysis words are the same clips, byte for byte: the other words only add folders
    assert {k: v for k, v in _digest(broad).items() if k.endswith(".wav") and k.split("/")[0] in ("yes", "no")} == \
        {k: v for k, v in _digest(path).items() if k.endswith(".wav")}
    params = json.loads((broad / "corpus.json").read_text())["params"]
    assert (params["n_words"], params["n_other_words"]) == (2, 2)
    assert "n_other_words" not in json.loads((path / "corpus.json").read_text())["params"]
    plain = PretrainConfig(corpus="spoken", n_words=2, n_speakers=2, n_repetitions=1)
    assert pretrained_path("hubert", config=plain) == pretrained_path("hubert", config=plain.replace(n_other_words=0))
    assert pretrained_path("hubert", config=plain) != pretrained_path("hubert", config=plain.replace(n_other_words=2))
    assert pretraining_waveforms(plain.replace(n_other_words=2)).shape == (8, 16_000)
    with pytest.raises(ValueError, match="corpus='spoken'"):
        PretrainConfig(n_other_words=5)  # the synthetic corpus has no other words
    with pytest.raises(ValueError, match="n_other_words"):
        PretrainConfig(corpus="spoken", n_other_words=200)


def test_every_variant_and_accent_exists_in_the_installed_data():
    _, data = spoken.espeak_paths()
    variants = Path(data) / "voices" / "!v"
    assert all((variants / v).is_file() for v in spoken.VARIANTS)


def test_layout_and_lists_read_back_with_the_loader(small_corpus):
    wavs = sorted(small_corpus.glob("*/*.wav"))
    assert len(wavs) == 3 * 3 * 2
    for wav in wavs:
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16_000, 1, 16_000, "PCM_16")
    corpus = scan_corpus(small_corpus)
    assert len(corpus.clip_ids) == 18
    words = word_task(small_corpus)
    assert words.label_names == sorted(spoken.spoken_words(3))
    assert words.meta["corpus"] == "spoken"
    splits: dict[str, set[str]] = {}
    for speaker, split in zip(words.speakers, words.splits):
        splits.setdefault(speaker, set()).add(split)
    assert all(len(s) == 1 for s in splits.values())  # whole speakers per split
    assert Counter(next(iter(s)) for s in splits.values()) == {"train": 1, "validation": 1, "test": 1}
    speakers = speaker_task(small_corpus, min_utterances=6, test_fraction=0.34)
    assert len(speakers.label_names) == 3


def test_clips_hold_a_word_in_noise(small_corpus):
    dataset = word_task(small_corpus)
    clips = dataset.batch(np.arange(len(dataset)))
    assert clips.shape == (18, 16_000) and clips.dtype == np.float32 and np.isfinite(clips).all()
    peaks = np.abs(clips).max(1)
    assert (peaks > 0.2).all() and (peaks <= 1.0).all()
    frames = clips.reshape(18, 100, 160)
    energy_db = 10 * np.log10((frames**2).mean(-1) + 1e-12)
    # a word louder than the background somewhere, and background noise everywhere
    assert (energy_db.max(1) - np.median(energy_db, 1) > 6).all()
    assert (energy_db.min(1) > -90).all()
    # the word's onset moves between repetitions
    onsets = [int(np.argmax(e > e.max() - 20)) for e in energy_db]
    assert len(set(onsets)) > 3


def test_same_spec_same_bytes_other_seed_other_audio(small_corpus, tmp_path):
    again = spoken.generate_corpus(tmp_path / "again", seed=0, **SMALL)
    assert _digest(again) == _digest(small_corpus)
    other = spoken.generate_corpus(tmp_path / "other", seed=1, **SMALL)
    assert {p.split("/")[0] for p in _digest(other) if p.endswith(".wav")} == set(spoken.spoken_words(3))
    assert not set(_digest(other).values()) & set(_digest(small_corpus).values())


def test_cached_corpus_is_atomic_and_keyed_by_the_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    real_record = spoken._record
    calls = []

    def failing_record(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted after the first speaker's clips were written
        return real_record(*args, **kwargs)

    monkeypatch.setattr(spoken, "_record", failing_record)
    with pytest.raises(KeyboardInterrupt):
        spoken.spoken_corpus(seed=0, **SMALL)
    assert list((tmp_path / "corpora").iterdir()) == []  # no half corpus, no temporary folder
    monkeypatch.setattr(spoken, "_record", real_record)
    path = spoken.spoken_corpus(seed=0, **SMALL)
    assert (path / "corpus.json").is_file() and len(list(path.glob("*/*.wav"))) == 18
    assert spoken.spoken_corpus(seed=0, **SMALL) == path  # cached
    assert spoken.spoken_corpus(seed=0, **{**SMALL, "n_repetitions": 1}) != path
    monkeypatch.setattr(spoken, "SPOKEN_VERSION", spoken.SPOKEN_VERSION + 1)
    assert spoken.spoken_corpus(seed=0, **SMALL) != path  # the version is part of the key


def test_pretraining_corpus_has_its_own_speakers(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    config = PretrainConfig(corpus="spoken", n_words=3, n_speakers=2, n_repetitions=1)
    waves = pretraining_waveforms(config)
    assert waves.shape == (6, 16_000) and waves.dtype == np.float32
    pretrain_root = spoken.spoken_corpus(n_words=3, n_speakers=2, n_repetitions=1, seed=config.corpus_seed,
                                         speaker_prefix=config.speaker_prefix)
    analysis = spoken.draw_speakers(24, seed=0)
    pretrain_speakers = set(word_task(pretrain_root).speakers)
    assert all(s.startswith("pretrain") for s in pretrain_speakers)
    assert not pretrain_speakers & {s.speaker_id for s in analysis}
    # the synthetic default keeps its cache key; another corpus gets another one
    assert pretrained_path("hubert", config=PretrainConfig()) != pretrained_path(
        "hubert", config=PretrainConfig(corpus="spoken"))
    with pytest.raises(ValueError, match="pretraining corpus"):
        pretraining_waveforms(PretrainConfig(corpus="nope"))


def test_missing_espeakng_loader_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import raises ImportError
    with pytest.raises(EspeakError, match="pip install espeakng-loader"):
        spoken.generate_corpus(tmp_path / "c", seed=0, **SMALL)


def test_missing_or_broken_library_says_what_failed(tmp_path, monkeypatch):
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "nowhere.so"))
    with pytest.raises(EspeakError, match="libespeak-ng not found.*pip install espeakng-loader"):
        spoken.generate_corpus(tmp_path / "c", seed=0, **SMALL)
    broken = tmp_path / "libespeak-ng.so"
    broken.write_text("not a library")
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(broken))
    with pytest.raises(EspeakError, match="could not load libespeak-ng"):  # raised in the worker
        spoken.generate_corpus(tmp_path / "d", seed=0, **SMALL)


def test_unknown_voice_fails_with_the_voice_named(tmp_path, monkeypatch):
    monkeypatch.setattr(spoken, "ACCENTS", ("xx-nowhere",))
    with pytest.raises(EspeakError, match="SetVoiceByName.*xx-nowhere"):
        spoken.generate_corpus(tmp_path / "c", seed=0, **SMALL)
    monkeypatch.setattr(spoken, "ACCENTS", ("en-us",))
    monkeypatch.setattr(spoken, "VARIANTS", ("no-such-variant",))  # espeak-ng itself would ignore it
    with pytest.raises(EspeakError, match="no voice variant 'no-such-variant'"):
        spoken.generate_corpus(tmp_path / "d", seed=0, **SMALL)


def test_crashing_variants_are_never_drawn_and_a_crash_is_named(tmp_path, monkeypatch):
    """libespeak-ng segfaults on some inputs with some variants: they are excluded, and a crash
    reports the signal instead of advising a reinstall."""
    assert not set(spoken.CRASHING_VARIANTS) & set(spoken.VARIANTS)
    drawn = {s.variant for s in spoken.draw_speakers(400, seed=1_000_003, speaker_prefix="pretrain")}
    assert not drawn & set(spoken.CRASHING_VARIANTS)
    # the one known crash, spoken directly: the worker dies by a signal and the error says so
    library, data = spoken.espeak_paths()
    with pytest.raises(EspeakError, match=r"crashed \(signal 11\).*CRASHING_VARIANTS"):
        with spoken._Worker(library, data, [("en-us+Demonic", [("backward", 154, 24, 84, 1768873188)])]) as worker:
            worker.next_result()


def test_stretch_keeps_the_pitch_and_lengthens_the_sound():
    t = np.arange(8_000) / 16_000
    tone = np.sin(2 * np.pi * 200.0 * t)
    for factor in (1.25, 1.6, 2.0):
        long = spoken._stretch(tone, factor)
        assert len(long) == round(len(tone) * factor)
        middle = long[len(long) // 4 : 3 * len(long) // 4]
        spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
        peak_hz = np.fft.rfftfreq(len(middle), 1 / 16_000)[np.argmax(spectrum)]
        assert abs(peak_hz - 200.0) < 5.0  # a resampled tone would sit at 200 / factor
        assert 0.95 < np.sqrt((middle**2).mean()) / np.sqrt((tone**2).mean()) < 1.05  # periods laid whole


def _speech_share(root: Path) -> float:
    """Fraction of 20 ms frames within 30 dB of their clip's loudest."""
    clips = word_task(root).batch(np.arange(len(word_task(root))))
    energy_db = 10 * np.log10((clips.reshape(len(clips), 50, 320) ** 2).mean(-1) + 1e-12)
    return float((energy_db > energy_db.max(1, keepdims=True) - 30).mean())


def test_slower_speaking_rate_gives_longer_words(small_corpus, tmp_path):
    slow = spoken.draw_speakers(50, seed=5, speaking_rate=(45, 60))
    assert all(45 <= s.rate <= 60 for s in slow) and len({s.rate for s in slow}) > 5
    assert [s.accent for s in slow] == [s.accent for s in spoken.draw_speakers(50, seed=5)]  # the rest as before
    # the default range given explicitly is the default corpus, byte for byte
    explicit = spoken.generate_corpus(tmp_path / "explicit", seed=0, speaking_rate=spoken.DEFAULT_SPEAKING_RATE, **SMALL)
    assert {k: v for k, v in _digest(explicit).items() if k.endswith(".wav")} == \
        {k: v for k, v in _digest(small_corpus).items() if k.endswith(".wav")}
    slower = spoken.generate_corpus(tmp_path / "slow", seed=0, speaking_rate=(45, 60), **SMALL)  # stretched from 80
    assert _speech_share(slower) > 1.5 * _speech_share(small_corpus)
    assert scan_corpus(slower) == scan_corpus(small_corpus)  # same layout, clips and lists
    assert json.loads((slower / "corpus.json").read_text())["params"]["speaking_rate"] == [45, 60]


@pytest.mark.parametrize("bad", [(90, 80), (10, 50), (45, 500), ("a", 60), (45.5, 60), (45,)])
def test_bad_speaking_rate_is_named(bad):
    with pytest.raises(ValueError, match="speaking_rate"):
        spoken.draw_speakers(2, seed=0, speaking_rate=bad)
    with pytest.raises(ValueError, match="speaking_rate"):
        PretrainConfig(corpus="spoken", speaking_rate=bad)


def test_speaking_rate_is_keyed_only_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    path = spoken.spoken_corpus(seed=0, **SMALL)
    assert spoken.spoken_corpus(seed=0, speaking_rate=spoken.DEFAULT_SPEAKING_RATE, **SMALL) == path
    assert spoken.spoken_corpus(seed=0, speaking_rate=(45, 60), **SMALL) != path
    plain = PretrainConfig(corpus="spoken")
    assert pretrained_path("hubert", config=plain) == pretrained_path(
        "hubert", config=plain.replace(speaking_rate=spoken.DEFAULT_SPEAKING_RATE))
    slow = plain.replace(speaking_rate=[45, 75])  # a list, as read back from JSON
    assert slow.speaking_rate == (45, 75) and pretrained_path("hubert", config=slow) != pretrained_path(
        "hubert", config=plain)
    with pytest.raises(ValueError, match="corpus='spoken'"):
        PretrainConfig(speaking_rate=(45, 75))  # the synthetic corpus has no speaking rate
