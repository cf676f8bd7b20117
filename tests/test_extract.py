"""Layer-wise extraction: shapes for all four families, masked pooling, and the on-disk cache."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from convexlab import synth
from convexlab.__main__ import main as cli_main
from convexlab.data import AudioDataset, word_task
from convexlab.extract import extract_layers, layer_embeddings, pooled_hidden_states
from convexlab.models import FAMILIES, load_model, miniature_config

MINIATURES = [family.miniature_name for family in FAMILIES.values()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract") / "corpus"
    return synth.generate_corpus(root, n_words=3, n_speakers=3, n_repetitions=2, seed=11, progress=False)


@pytest.fixture()
def dataset(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / "cache"))  # every test starts with an empty cache
    return word_task(corpus)  # 18 clips


class ForwardCounter:
    """Counts forward passes of a model through a standard PyTorch forward hook."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.calls += 1


def _manual(model, audio: np.ndarray) -> np.ndarray:
    """(L+1, B, D) by hand: one forward pass, plain mean over all frames."""
    with torch.inference_mode():
        hidden = model(torch.from_numpy(audio), output_hidden_states=True).hidden_states
    return np.stack([h.mean(dim=1).numpy() for h in hidden])


@pytest.mark.parametrize("name", MINIATURES)
def test_shapes_and_values_for_every_family(name, dataset):
    model = load_model(name, pretrained=False, seed=0)
    result = extract_layers(model, dataset, batch_size=8, progress=False, cache=False)
    config = miniature_config(FAMILIES[model.config.convexlab_family].name)
    assert result.embeddings.shape == (config.num_hidden_layers + 1, len(dataset), config.hidden_size)
    assert result.embeddings.dtype == np.float32 and np.isfinite(result.embeddings).all()
    assert list(result.clip_ids) == list(dataset.clip_ids) and list(result.labels) == list(dataset.labels)
    assert list(result.concept("speaker")) == list(dataset.speakers)
    np.testing.assert_allclose(result.embeddings, _manual(model, dataset.batch(range(len(dataset)))),
                               rtol=1e-4, atol=1e-5)
    # the layers differ from each other: every hidden state is returned, not one repeated
    assert all(not np.allclose(result.layer(i), result.layer(i + 1)) for i in range(result.n_layers - 1))


def _frames(n_samples: int, config) -> int:
    """Number of conv-stack output frames for ``n_samples`` (Conv1d length formula, written out)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        n_samples = (n_samples - kernel) // stride + 1
    return n_samples


@pytest.mark.parametrize("name", MINIATURES)
def test_masked_pooling_equals_a_manual_mean_over_real_frames(name):
    model = load_model(name, pretrained=False, seed=1)
    lengths = [16_000, 11_000, 6_400]
    audio = torch.randn(3, 16_000, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(3, 16_000, dtype=torch.long)
    for row, n in enumerate(lengths):
        audio[row, n:] = 0.0
        mask[row, :n] = 1
    with torch.inference_mode():
        pooled = pooled_hidden_states(model, audio, mask)
        hidden = model(audio, attention_mask=mask, output_hidden_states=True).hidden_states
    assert pooled.shape == (model.config.num_hidden_layers + 1, 3, model.config.hidden_size)
    for row, n in enumerate(lengths):
        frames = _frames(n, model.config)
        assert frames < hidden[0].shape[1] or n == 16_000
        manual = torch.stack([h[row, :frames].mean(dim=0) for h in hidden])
        torch.testing.assert_close(pooled[:, row], manual)
    # the padded clips really differ from a plain mean over all frames
    plain = torch.stack([h.mean(dim=1) for h in hidden])
    assert not torch.allclose(plain[:, 2], pooled[:, 2])


def test_masked_pooling_of_padded_clips_equals_the_clips_alone_for_layer_norm_models():
    # With a layer-norm feature extractor (the large checkpoints), padding plus mask must give what
    # each clip alone gives: evidence that padding frames are excluded everywhere.
    config = miniature_config("wavlm")
    config.feat_extract_norm, config.do_stable_layer_norm = "layer", True
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    lengths = [16_000, 9_600]
    audio = torch.randn(2, 16_000, generator=torch.Generator().manual_seed(3))
    audio[1, lengths[1]:] = 0.0
    mask = torch.ones(2, 16_000, dtype=torch.long)
    mask[1, lengths[1]:] = 0
    with torch.inference_mode():
        batched = pooled_hidden_states(model, audio, mask)
        alone = pooled_hidden_states(model, audio[1:, : lengths[1]])
    torch.testing.assert_close(batched[:, 1], alone[:, 0], rtol=1e-4, atol=1e-4)


def test_cache_hit_and_miss(dataset):
    model = load_model("mini-wav2vec2", pretrained=False, seed=0)
    counter = ForwardCounter(model)
    first = extract_layers(model, dataset, batch_size=8, progress=False)
    assert counter.calls == 3 and first.meta["cache_hit"] is False
    second = extract_layers(model, dataset, batch_size=8, progress=False)
    assert counter.calls == 3 and second.meta["cache_hit"] is True  # nothing recomputed
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    # another dataset, other weights, another dtype: each is a miss with its own key
    extract_layers(model, dataset.subsample(1, seed=0), batch_size=8, progress=False)
    assert counter.calls == 4
    other_weights = load_model("mini-wav2vec2", pretrained=False, seed=1)
    third = extract_layers(other_weights, dataset, batch_size=8, progress=False)
    assert third.meta["cache_hit"] is False and third.meta["key"] != first.meta["key"]
    assert not np.allclose(third.embeddings, first.embeddings)
    half = extract_layers(load_model("mini-wav2vec2", pretrained=False, seed=0), dataset, batch_size=8,
                          dtype="bfloat16", progress=False)
    assert half.meta["key"] != first.meta["key"] and half.embeddings.dtype == np.float32
    np.testing.assert_allclose(half.embeddings, first.embeddings, atol=0.1 * np.abs(first.embeddings).max())


def _interrupt_extraction(model, dataset, monkeypatch, *, after_batches: int, batch_size: int) -> None:
    """Run a cached extraction that the user stops while batch ``after_batches + 1`` is being read."""
    real_batch = AudioDataset.batch
    served = []

    def failing_batch(self, indices):
        if len(served) == after_batches:
            raise KeyboardInterrupt
        served.append(1)
        return real_batch(self, indices)

    monkeypatch.setattr(AudioDataset, "batch", failing_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_layers(model, dataset, batch_size=batch_size, progress=False)
    monkeypatch.setattr(AudioDataset, "batch", real_batch)


def test_interrupted_run_resumes_from_finished_batches(dataset, monkeypatch):
    model = load_model("mini-hubert", pretrained=False, seed=0)
    reference = extract_layers(model, dataset, batch_size=4, progress=False, cache=False)
    _interrupt_extraction(model, dataset, monkeypatch, after_batches=3, batch_size=4)  # stopped in the fourth batch
    counter = ForwardCounter(model)
    resumed = extract_layers(model, dataset, batch_size=4, progress=False)
    assert counter.calls == 5 - 3  # 18 clips = 5 batches, 3 of them finished before the interruption
    np.testing.assert_array_equal(resumed.embeddings, reference.embeddings)
    cache_folder = Path(resumed.meta["cache_file"]).parent
    assert not (cache_folder / "chunks").exists()  # consolidated into one file


def test_corrupted_or_stale_cache_files_are_rebuilt_with_a_warning(dataset):
    model = load_model("mini-wavlm", pretrained=False, seed=0)
    good = extract_layers(model, dataset, batch_size=8, progress=False)
    path = Path(good.meta["cache_file"])
    assert path.is_file() and not (path.parent / "chunks").exists()  # chunks consolidated

    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="cannot be read"):
        rebuilt = extract_layers(model, dataset, batch_size=8, progress=False)
    np.testing.assert_array_equal(rebuilt.embeddings, good.embeddings)
    assert rebuilt.meta["cache_hit"] is False

    with np.load(path) as stored:
        arrays = dict(stored)
    np.savez(path, **{**arrays, "key": np.array("someone-else")})
    with pytest.warns(UserWarning, match="key does not match"):
        extract_layers(model, dataset, batch_size=8, progress=False)

    np.savez(path, **{**arrays, "pooled": arrays["pooled"][:, :5]})
    with pytest.warns(UserWarning, match="shape"):
        again = extract_layers(model, dataset, batch_size=8, progress=False)
    np.testing.assert_array_equal(again.embeddings, good.embeddings)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy file is reused silently
        assert extract_layers(model, dataset, batch_size=8, progress=False).meta["cache_hit"] is True


def test_a_bad_chunk_is_recomputed(dataset, monkeypatch):
    model = load_model("mini-ccc-wav2vec2", pretrained=False, seed=0)
    reference = extract_layers(model, dataset, batch_size=8, progress=False, cache=False)
    _interrupt_extraction(model, dataset, monkeypatch, after_batches=2, batch_size=8)
    cache_root = Path(os.environ["CONVEXLAB_CACHE"]) / "embeddings"
    chunks = sorted(cache_root.glob("*/chunks/*.npz"))
    assert len(chunks) == 2
    chunks[0].write_bytes(b"\x00" * 10)
    counter = ForwardCounter(model)
    with pytest.warns(UserWarning, match="not usable"):
        resumed = extract_layers(model, dataset, batch_size=8, progress=False)
    assert counter.calls == 2  # the corrupted chunk and the missing one
    np.testing.assert_array_equal(resumed.embeddings, reference.embeddings)


def test_layer_embeddings_and_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    overrides = ["--set", "n_words=3", "--set", "n_speakers=3", "--set", "n_repetitions=2"]
    status = cli_main(["extract", "--model", "mini-hubert", "--task", "word", "--profile", "lite-synthetic", "--untrained",
                       "--n-per-class", "4", "--no-progress", *overrides])
    assert status == 0
    out = capsys.readouterr().out
    assert "mini-hubert: extracted word embeddings (7, 12, 64)" in out
    cli_main(["extract", "--model", "mini-hubert", "--task", "word", "--profile", "lite-synthetic", "--untrained",
              "--n-per-class", "4", "--no-progress", *overrides])
    assert "mini-hubert: cached" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["extract", "--model", "mini-hubert", "--task", "emotion"])

    from convexlab.data import load_task
    from convexlab.profiles import get_profile

    profile = get_profile("lite-synthetic", n_words=3, n_speakers=3, n_repetitions=4, min_utterances=12)
    dataset = load_task("speaker", profile)
    result = layer_embeddings("mini-wavlm", dataset, profile=profile, pretrained=False, progress=False)
    assert result.embeddings.shape == (7, 36, 64) and result.model_id == "mini-wavlm"
    assert result.meta["task"] == "speaker" and result.meta["profile"] == "lite-synthetic"


@pytest.mark.parametrize("argv, expected", [
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--batch-size", "x"], "--batch-size: invalid int value: 'x'"),
    (["--n-per-class", "-1"], "--n-per-class: must be at least 0, got -1"),
    (["--set", "sead=1"], "Unknown profile field(s) ['sead']"),
    (["--set", "seed"], "--set expects FIELD=VALUE"),
    (["--profile", "huge"], "Unknown profile 'huge'"),
])
def test_cli_bad_values_are_one_line_and_exit_2(argv, expected, capsys):
    """A bad value is argparse's usage error: one message line, exit status 2, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["extract", "--model", "mini-hubert", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m convexlab") and "error:" in err[-1] and expected in err[-1]
    assert not any("Traceback" in line for line in err)
