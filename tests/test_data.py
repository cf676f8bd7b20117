"""The Speech Commands loader and the two tasks, on a fixture in the real layout."""

from __future__ import annotations

import shutil
import time
from collections import Counter

import numpy as np
import pytest

from convexlab import data
from convexlab.data import AudioDataset, read_clip, speaker_task, speech_commands_root, word_task
from fixtures_audio import speech_commands_fixture, write_wav

WORDS = ("yes", "no", "up")
# speaker -> clips per word; totals 12, 9, 6, 3 clips
SPEAKERS = {
    "0a7c2a8d": {"yes": 4, "no": 4, "up": 4},
    "1b2c3d4e": {"yes": 3, "no": 3, "up": 3},
    "2c3d4e5f": {"yes": 2, "no": 2, "up": 2},
    "3d4e5f60": {"yes": 1, "no": 1, "up": 1},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_commands")
    return speech_commands_fixture(
        root, clips_per_speaker=SPEAKERS, validation_speakers=("2c3d4e5f",), test_speakers=("3d4e5f60",)
    )


def test_word_task_reads_the_layout_and_the_official_split(corpus):
    dataset = word_task(corpus)
    assert len(dataset) == sum(sum(w.values()) for w in SPEAKERS.values()) == 30
    assert dataset.label_names == sorted(WORDS)
    assert all("_background_noise_" not in c for c in dataset.clip_ids)
    assert dataset.labels == dataset.words
    for clip_id, split, speaker in zip(dataset.clip_ids, dataset.splits, dataset.speakers):
        assert clip_id.split("/")[1].startswith(speaker + "_nohash_")
        expected = {"2c3d4e5f": "validation", "3d4e5f60": "test"}.get(speaker, "train")
        assert split == expected, clip_id
    assert dataset.subset("test").speakers == ("3d4e5f60",) * 3
    names = dataset.label_names
    assert [names[i] for i in dataset.label_ids] == list(dataset.labels)
    assert dataset.label_ids.dtype == np.int64


def test_audio_is_float32_one_second_padded_or_cut(corpus):
    dataset = word_task(corpus)
    for i in range(len(dataset)):
        raw, rate = data.sf.read(corpus / dataset.clip_ids[i], dtype="float32")
        clip = dataset.audio(i)
        assert clip.dtype == np.float32 and clip.shape == (16_000,)
        n = min(len(raw), 16_000)
        np.testing.assert_array_equal(clip[:n], raw[:n])
        assert not clip[n:].any()  # zero padding
    batch = dataset.batch([3, 0, 7])
    assert batch.shape == (3, 16_000) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], dataset.audio(0))


def test_wrong_rate_or_channels_is_a_clear_error(tmp_path):
    write_wav(tmp_path / "eight_khz.wav", np.zeros(8_000), rate=8_000)
    with pytest.raises(ValueError, match=r"eight_khz\.wav.*8000 Hz.*16000 Hz.*resample"):
        read_clip(tmp_path / "eight_khz.wav")
    write_wav(tmp_path / "stereo.wav", np.zeros((16_000, 2)))
    with pytest.raises(ValueError, match=r"stereo\.wav has 2 channels.*mono"):
        read_clip(tmp_path / "stereo.wav")
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        read_clip(tmp_path / "missing.wav")


def test_speaker_selection_keeps_exactly_the_speakers_with_enough_utterances(corpus):
    for min_utterances, expected in [(9, {"0a7c2a8d", "1b2c3d4e"}), (6, {"0a7c2a8d", "1b2c3d4e", "2c3d4e5f"})]:
        dataset = speaker_task(corpus, min_utterances=min_utterances, test_fraction=0.34)
        assert set(dataset.label_names) == expected
        assert Counter(dataset.labels) == {s: sum(SPEAKERS[s].values()) for s in expected}
        assert dataset.labels == dataset.speakers
    with pytest.raises(ValueError, match="min_utterances=13"):
        speaker_task(corpus, min_utterances=13)


def test_speaker_split_is_stratified_and_seeded(corpus):
    dataset = speaker_task(corpus, min_utterances=6, test_fraction=1 / 3)
    for speaker in dataset.label_names:
        splits = [sp for sp, s in zip(dataset.splits, dataset.speakers) if s == speaker]
        # every speaker is in both splits, about a third of its clips in test
        assert 0 < splits.count("test") < len(splits)
        assert abs(splits.count("test") - len(splits) / 3) <= 1
    assert set(dataset.splits) == {"train", "test"}
    again = speaker_task(corpus, min_utterances=6, test_fraction=1 / 3)
    assert again.splits == dataset.splits
    other = [speaker_task(corpus, min_utterances=6, test_fraction=1 / 3, seed=s).splits for s in range(5)]
    assert any(o != dataset.splits for o in other)


def test_subsample_per_class(corpus):
    dataset = word_task(corpus)
    small = dataset.subsample(4, seed=1)
    assert small.class_counts() == {w: 4 for w in sorted(WORDS)}
    assert set(small.clip_ids) <= set(dataset.clip_ids)
    positions = [dataset.clip_ids.index(c) for c in small.clip_ids]
    assert positions == sorted(positions)  # original order kept
    assert dataset.subsample(4, seed=1) == small
    assert any(dataset.subsample(4, seed=s).clip_ids != small.clip_ids for s in range(2, 7))
    assert dataset.subsample(100, seed=0).clip_ids == dataset.clip_ids  # small classes keep all
    assert word_task(corpus, n_per_class=5, seed=3).class_counts() == {w: 5 for w in sorted(WORDS)}


def test_subsample_of_one_split_keeps_the_others_whole(corpus):
    dataset = word_task(corpus)
    capped = dataset.subsample(1, seed=0, split="train")
    train, others = dataset.subset("train"), [c for c, s in zip(dataset.clip_ids, dataset.splits) if s != "train"]
    assert capped.subset("train").class_counts() == {w: 1 for w in train.label_names}
    assert [c for c, s in zip(capped.clip_ids, capped.splits) if s != "train"] == others
    # The train clips drawn are those a subsample of the train split alone draws.
    assert capped.subset("train").clip_ids == train.subsample(1, seed=0).clip_ids


def test_a_class_without_pairs_is_an_error_naming_it(corpus):
    with pytest.raises(ValueError, match=r"fewer than 2 clips.*'no': 1.*n_per_class"):
        word_task(corpus, n_per_class=1)
    with pytest.raises(ValueError, match="n_per_class=0"):
        word_task(corpus).subsample(0, seed=0)


def test_subset_of_an_unknown_split_names_the_available_ones(corpus):
    with pytest.raises(ValueError, match=r"'dev'.*\['test', 'train', 'validation'\]"):
        word_task(corpus).subset("dev")


def test_content_hash_follows_content_not_location(corpus, tmp_path):
    dataset = word_task(corpus)
    moved = shutil.copytree(corpus, tmp_path / "moved")
    assert word_task(moved).content_hash() == dataset.content_hash()
    assert dataset.subsample(3, seed=0).content_hash() != dataset.content_hash()
    relabelled = AudioDataset(**{**dataset.__dict__, "labels": dataset.speakers})
    assert relabelled.content_hash() != dataset.content_hash()
    # a clip replaced by a different one (another length) changes the hash
    write_wav(moved / dataset.clip_ids[0], np.zeros(4_000))
    assert word_task(moved).content_hash() != dataset.content_hash()


def test_content_hash_sees_the_samples_not_only_the_sizes(corpus, tmp_path):
    """Regression: the hash was of file sizes, and every one-second 16-bit clip has the same size,
    so a clip overwritten with other samples of the same length kept the old hash (stale caches)."""
    import soundfile as sf

    copy = shutil.copytree(corpus, tmp_path / "copy")
    dataset = word_task(copy)
    before = dataset.content_hash()
    assert dataset.content_hash() == before  # memoised, and stable
    clip = copy / dataset.clip_ids[0]
    size = clip.stat().st_size
    audio, _ = sf.read(clip, dtype="float32")
    write_wav(clip, 0.5 * audio[::-1])  # same length, same size, other samples
    assert clip.stat().st_size == size
    assert word_task(copy).content_hash() != before


def test_fields_must_agree_in_length(corpus):
    dataset = word_task(corpus)
    with pytest.raises(ValueError, match="same|entries"):
        AudioDataset(**{**dataset.__dict__, "labels": dataset.labels[:-1]})


def test_speech_commands_root_local_and_torchaudio_layouts(corpus, tmp_path):
    assert speech_commands_root(corpus) == corpus
    parent = tmp_path / "downloads"
    nested = parent / "SpeechCommands" / "speech_commands_v0.02"
    shutil.copytree(corpus, nested)
    assert speech_commands_root(parent) == nested
    # an archive beside a folder without the completion marker: an interrupted extraction
    (parent / "speech_commands_v0.02.tar.gz").write_bytes(b"partial")
    with pytest.raises(FileNotFoundError, match="data_root="):
        speech_commands_root(parent)


def test_missing_corpus_without_download_says_how_to_provide_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_root=.*download=True"):
        speech_commands_root(tmp_path / "nothing")


def test_download_without_network_fails_fast_naming_the_url(tmp_path, monkeypatch):
    unreachable = "http://127.0.0.1:9/speech_commands_v0.02.tar.gz"  # discard port: refused at once
    monkeypatch.setattr(data, "SPEECH_COMMANDS_URL", unreachable)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9.*data_root="):
        speech_commands_root(tmp_path / "target", download=True)
    assert time.perf_counter() - start < 15
    assert not (tmp_path / "target" / "SpeechCommands").exists()


def test_scan_rejects_a_folder_without_list_files(tmp_path):
    write_wav(tmp_path / "yes" / "abc_nohash_0.wav", np.zeros(16_000))
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        word_task(tmp_path)


def test_load_task_on_a_small_synthetic_profile(tmp_path, monkeypatch):
    from convexlab.profiles import get_profile

    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    profile = get_profile("lite-synthetic", n_words=3, n_speakers=4, n_repetitions=3, min_utterances=9, seed=5)
    words = data.load_task("word", profile)
    speakers = data.load_task("speaker", profile)
    assert len(words) == len(speakers) == 3 * 4 * 3
    assert len(words.label_names) == 3 and len(speakers.label_names) == 4
    assert set(words.splits) == {"train", "validation", "test"}
    assert set(speakers.splits) == {"train", "test"}
    assert words.meta["corpus"] == "synthetic"
    assert str(tmp_path) in str(words.root)
    with pytest.raises(ValueError, match="Unknown task"):
        data.load_task("emotion", profile)
    with pytest.raises(ValueError, match="min_utterances=10"):
        data.load_task("speaker", profile.replace(min_utterances=10))
