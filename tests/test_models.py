"""Model registry, miniature configs and loading (miniatures, local folders, offline hub ids)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, HubertConfig, Wav2Vec2Config, WavLMConfig

from convexlab import models
from convexlab.models import FAMILIES, CheckpointUnavailableError, family_of, load_model, miniature_config

MINIATURES = [family.miniature_name for family in FAMILIES.values()]


@pytest.fixture(scope="module")
def audio():
    return torch.randn(3, 16_000, generator=torch.Generator().manual_seed(0))


def _hidden(model, audio):
    with torch.inference_mode():
        return model(audio, output_hidden_states=True).hidden_states


def test_registry_holds_the_four_families_with_their_checkpoints():
    assert set(FAMILIES) == {"wav2vec2", "wavlm", "hubert", "ccc-wav2vec2"}
    assert FAMILIES["wav2vec2"].base_id == "facebook/wav2vec2-base"
    assert FAMILIES["wavlm"].large_id == "microsoft/wavlm-large"
    assert FAMILIES["hubert"].base_id == "facebook/hubert-base-ls960"
    assert FAMILIES["ccc-wav2vec2"].base_id == "vasista22/ccc-wav2vec2-base"
    assert FAMILIES["ccc-wav2vec2"].large_id is None
    assert sorted(MINIATURES) == sorted(["mini-wav2vec2", "mini-wavlm", "mini-hubert", "mini-ccc-wav2vec2"])


@pytest.mark.parametrize(
    "family, config_class",
    [("wav2vec2", Wav2Vec2Config), ("wavlm", WavLMConfig), ("hubert", HubertConfig), ("ccc-wav2vec2", Wav2Vec2Config)],
)
def test_miniature_has_the_base_architecture_at_a_small_size(family, config_class):
    mini, base = miniature_config(family), models.base_config(family)
    assert type(mini) is type(base) is config_class
    assert mini.conv_stride == base.conv_stride and mini.conv_kernel == base.conv_kernel  # 20 ms frames
    assert mini.do_stable_layer_norm is base.do_stable_layer_norm is False
    assert mini.feat_extract_norm == base.feat_extract_norm == "group"
    assert 4 <= mini.num_hidden_layers <= 6 and mini.hidden_size < base.hidden_size
    assert (base.num_hidden_layers, base.hidden_size) == (12, 768)
    assert mini.layerdrop == 0.0


@pytest.mark.parametrize("name", MINIATURES)
def test_random_miniature_loads_in_eval_mode_and_is_seeded(name, audio):
    model = load_model(name, pretrained=False, seed=1)
    assert not model.training and model.config.layerdrop == 0.0
    assert all(not m.training for m in model.modules())
    hidden = _hidden(model, audio)
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert hidden[0].shape == (3, 49, model.config.hidden_size)  # 49 frames of 20 ms in one second
    same = _hidden(load_model(name, pretrained=False, seed=1), audio)
    assert all(torch.equal(a, b) for a, b in zip(hidden, same))
    other = _hidden(load_model(name, pretrained=False, seed=2), audio)
    assert not torch.allclose(hidden[-1], other[-1])
    assert family_of(name) == family_of(model) == models.MINIATURE_NAMES[name]


@pytest.mark.parametrize("name", MINIATURES)
def test_num_layers_gives_the_first_layers_of_the_full_model(name, audio):
    full = _hidden(load_model(name, pretrained=False, seed=3), audio)
    pruned_model = load_model(name, pretrained=False, seed=3, num_layers=2)
    assert pruned_model.config.num_hidden_layers == 2
    pruned = _hidden(pruned_model, audio)
    assert len(pruned) == 3
    for a, b in zip(pruned, full[:3]):
        torch.testing.assert_close(a, b)


def test_classification_head(audio):
    model = load_model("mini-hubert", task="speaker", num_labels=4, label_names=["a", "b", "c", "d"],
                       pretrained=False)
    assert type(model).__name__ == "HubertForSequenceClassification"
    with torch.inference_mode():
        logits = model(audio).logits
    assert logits.shape == (3, 4)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d"}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="num_labels"):
        load_model("mini-wavlm", task="word", pretrained=False)
    with pytest.raises(ValueError, match="Unknown task"):
        load_model("mini-wavlm", task="emotion", num_labels=3, pretrained=False)
    with pytest.raises(ValueError, match=r"num_layers=9 is outside 1\.\.6"):
        load_model("mini-wavlm", num_layers=9, pretrained=False)
    with pytest.raises(ValueError, match="Unknown model family"):
        miniature_config("whisper")
    with pytest.raises(ValueError, match="dtype"):
        load_model("mini-wavlm", dtype="int8", pretrained=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./no/such/folder")


@pytest.mark.parametrize("name", ["mini-ccc-wav2vec2", "mini-wavlm"])
def test_local_folder_round_trip(name, tmp_path, audio):
    model = load_model(name, pretrained=False, seed=4)
    model.save_pretrained(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    assert not loaded.training and loaded.config.layerdrop == 0.0
    for a, b in zip(_hidden(model, audio), _hidden(loaded, audio)):
        torch.testing.assert_close(a, b)
    assert family_of(tmp_path / "saved") == models.MINIATURE_NAMES[name]
    shallow = load_model(tmp_path / "saved", num_layers=3)
    torch.testing.assert_close(_hidden(shallow, audio)[3], _hidden(model, audio)[3])
    with_head = load_model(tmp_path / "saved", task="word", num_labels=5)
    assert with_head.config.num_labels == 5 and with_head.config.num_hidden_layers == 6


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_family_of_hub_ids_and_configs():
    assert family_of("facebook/hubert-large-ll60k") == "hubert"
    assert family_of("vasista22/ccc-wav2vec2-base") == "ccc-wav2vec2"
    assert family_of(models.base_config("wavlm")) == "wavlm"
    with pytest.raises(ValueError, match="Cannot tell the model family"):
        family_of("openai/whisper-tiny")


def test_miniature_preprocessing_is_raw_audio_without_mask():
    extractor = models.feature_extractor_for("mini-hubert")
    assert extractor.do_normalize is False and extractor.return_attention_mask is False
    assert extractor.sampling_rate == 16_000


def test_missing_hub_checkpoint_offline_raises_quickly_with_the_ways_to_provide_it(tmp_path):
    # A fresh interpreter, so that huggingface_hub reads HF_HUB_OFFLINE and the empty HF_HOME at import.
    script = textwrap.dedent(
        """
        import json, time
        from convexlab.models import load_model
        start = time.perf_counter()
        try:
            load_model("facebook/wav2vec2-base")
        except Exception as err:
            print(json.dumps({"type": type(err).__name__, "mro": [c.__name__ for c in type(err).__mro__],
                              "message": str(err), "seconds": time.perf_counter() - start}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["type"] == CheckpointUnavailableError.__name__
    assert "FileNotFoundError" in result["mro"]
    message = result["message"]
    assert "'facebook/wav2vec2-base'" in message and "HF_HUB_OFFLINE" in message
    assert "hf download facebook/wav2vec2-base" in message and "HF_HOME" in message and "local folder" in message
    assert result["seconds"] < 10


def test_pretrained_miniature_comes_from_ensure_pretrained(tmp_path, monkeypatch, audio):
    # load_model must load the folder that convexlab.pretrain.ensure_pretrained returns
    import importlib

    # import_module: the package may export a function named ``pretrain`` that shadows the module
    pretrain = importlib.import_module("convexlab.pretrain")

    saved = load_model("mini-hubert", pretrained=False, seed=9)
    saved.save_pretrained(tmp_path / "pretrained-hubert")
    calls = []

    def fake_ensure(family, *, seed=0, **kwargs):
        calls.append((family, seed))
        return tmp_path / "pretrained-hubert"

    monkeypatch.setattr(pretrain, "ensure_pretrained", fake_ensure)
    model = load_model("mini-hubert", seed=9)
    assert calls == [("hubert", 9)]
    torch.testing.assert_close(_hidden(model, audio)[-1], _hidden(saved, audio)[-1])
    assert isinstance(model, AutoModel._model_mapping[type(model.config)])
