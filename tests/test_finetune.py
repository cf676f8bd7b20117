"""finetune / compare_pruned on a small synthetic corpus with miniature models (random init).

Everything runs in a private cache folder, on one small corpus generated once per module:
4 words x 4 speakers x 10 repetitions (160 clips), a quarter of them held out for testing.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from transformers import AutoModel, TrainerCallback

from convexlab.finetune import (
    FinetuneResult,
    finetune,
    finetune_for_profile,
    finetune_run_key,
    finetuned_layer_embeddings,
    load_batch_ids,
    training_dataset,
)

FAST = dict(epochs=1.0, batch_size=8, learning_rate=1e-3, head_learning_rate=1e-2, spec_augment=False, pretrained=False,
            progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from convexlab.synth import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    return generate_corpus(root, n_words=4, n_speakers=4, n_repetitions=10, seed=0, test_fraction=0.25,
                           progress=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def word_data(corpus):
    from convexlab.data import word_task

    return word_task(corpus)


@pytest.fixture(scope="module")
def speaker_data(corpus):
    from convexlab.data import speaker_task

    return speaker_task(corpus, min_utterances=10, test_fraction=0.25)


@pytest.mark.parametrize("task", ["word", "speaker"])
def test_finetuning_beats_chance_clearly(task, word_data, speaker_data):
    dataset = word_data if task == "word" else speaker_data
    result = finetune("mini-hubert", dataset, **(FAST | {"epochs": 6.0}), cache=False)
    assert result.n_classes == 4 and result.n_eval >= 30
    assert result.chance_accuracy <= 0.3
    # Four classes: chance is 25 %; a random-init miniature trained for a few seconds must
    # clear it by a margin that a lucky guesser on 30+ clips would not reach.
    assert result.accuracy >= result.chance_accuracy + 0.15, (result.accuracy, result.chance_accuracy)
    assert 0.0 <= result.macro_f1 <= 1.0
    losses = [entry["loss"] for entry in result.history if "loss" in entry]
    assert losses[-1] < losses[0]  # it learned something
    assert result.train_seconds > 0 and result.seconds_per_sample > 0
    assert result.training.context["device"] == "cpu" and result.training.context["batch_size"] == 8


def test_full_and_pruned_runs_see_identical_batches(word_data):
    full = finetune("mini-wav2vec2", word_data, **FAST)
    pruned = finetune("mini-wav2vec2", word_data, num_layers=2, **FAST)
    assert full.num_layers == 6 and not full.pruned
    assert pruned.num_layers == 2 and pruned.pruned
    assert pruned.n_parameters < full.n_parameters
    assert full.batch_ids_digest == pruned.batch_ids_digest
    batches = load_batch_ids(full)
    assert batches == load_batch_ids(pruned)
    clips = [clip for batch in batches for clip in batch]
    train_clips = [c for c, s in zip(word_data.clip_ids, word_data.splits) if s == "train"]
    assert sorted(clips) == sorted(train_clips)  # one epoch: every training clip exactly once
    assert clips != train_clips  # and shuffled
    other_seed = finetune("mini-wav2vec2", word_data, num_layers=2, **(FAST | {"seed": 1}))
    assert other_seed.batch_ids_digest != full.batch_ids_digest


def test_second_call_returns_the_stored_run(word_data):
    first = finetune("mini-wavlm", word_data, num_layers=1, **FAST)
    start = time.perf_counter()
    again = finetune("mini-wavlm", word_data, num_layers=1, **FAST)
    assert time.perf_counter() - start < 2.0
    assert again == first
    assert FinetuneResult.load(first.run_dir) == first
    other = finetune("mini-wavlm", word_data, num_layers=1, **(FAST | {"learning_rate": 5e-4}))
    assert other.run_dir != first.run_dir and other.key != first.key
    reloaded = AutoModel.from_pretrained(first.model_dir)
    assert reloaded.config.num_hidden_layers == 1
    assert not (first.run_dir / "checkpoints").exists()  # removed once the run finished


class _Interrupt(TrainerCallback):
    """Stops training right after the first checkpoint, as a crash or Ctrl-C would."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("simulated interruption")


def test_interrupted_run_resumes_from_its_checkpoint(word_data, tmp_path):
    settings = FAST | {"epochs": 2.0}
    reference = finetune("mini-hubert", word_data, num_layers=2, output_dir=tmp_path / "reference", **settings)
    with pytest.raises(KeyboardInterrupt):
        finetune("mini-hubert", word_data, num_layers=2, output_dir=tmp_path / "run", callbacks=[_Interrupt()],
                 **settings)
    assert not (tmp_path / "run" / "result.json").exists()
    assert list((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    resumed = finetune("mini-hubert", word_data, num_layers=2, output_dir=tmp_path / "run", **settings)
    assert resumed.training.resumed
    assert resumed.training.n_steps == reference.training.n_steps // 2
    assert resumed.batch_ids_digest == reference.batch_ids_digest  # the whole order, both epochs
    assert resumed.accuracy == pytest.approx(reference.accuracy, abs=0.05)


def test_profile_sets_data_and_hyperparameters(corpus):
    from convexlab.profiles import get_profile

    profile = get_profile("lite-synthetic", data_root=str(corpus), min_utterances=10, max_train_per_class=5,
                          finetune_epochs=1.0, finetune_batch_size=4, learning_rate=2e-3, seed=3)
    dataset = training_dataset("speaker", profile)
    train = dataset.subset("train")
    assert set(train.class_counts().values()) == {5}
    assert dataset.subset("test") == training_dataset("speaker", profile.replace(max_train_per_class=None)).subset("test")
    result = finetune_for_profile("mini-hubert", "speaker", profile, pretrained=False, progress=False)
    # the key a convexity table chains is this run's own key, computed without training
    assert result.key == finetune_run_key("mini-hubert", "speaker", profile, pretrained=False)
    assert result.key != finetune_run_key("mini-hubert", "speaker", profile.replace(finetune_head_learning_rate=5e-3),
                                          pretrained=False)
    assert result.n_train == 20
    assert result.hyperparameters["batch_size"] == 4
    assert result.hyperparameters["learning_rate"] == 2e-3 and result.hyperparameters["seed"] == 3
    assert result.n_batches == 5


def test_finetuned_embeddings_have_one_layer_per_kept_layer(word_data):
    result = finetune("mini-hubert", word_data, num_layers=3, **FAST)
    test = word_data.subset("test")
    embeddings = finetuned_layer_embeddings(result, test, batch_size=16, cache=False)
    assert embeddings.embeddings.shape == (4, len(test), 64)
    assert np.isfinite(embeddings.embeddings).all()


def test_bad_inputs_raise_clear_errors(word_data, speaker_data):
    with pytest.raises(ValueError, match="validation"):
        finetune("mini-hubert", speaker_data, eval_split="validation", **FAST)
    with pytest.raises(ValueError, match="epochs"):
        finetune("mini-hubert", word_data, **(FAST | {"epochs": 0}))
    with pytest.raises(ValueError, match="mixed_precision"):
        finetune("mini-hubert", word_data, mixed_precision="int8", **FAST)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            finetune("mini-hubert", word_data, **(FAST | {"device": "cuda"}))
    with pytest.raises(FileNotFoundError, match="finetune"):
        FinetuneResult.load("/nonexistent/run")


def test_compare_pruned_table_and_cache(corpus, tmp_path):
    from convexlab.compare import PruneComparison, compare_pruned
    from convexlab.models import load_model
    from convexlab.profiles import get_profile

    folder = tmp_path / "random-mini-hubert"
    load_model("mini-hubert", pretrained=False, seed=0).save_pretrained(folder)
    profile = get_profile("lite-synthetic", data_root=str(corpus), min_utterances=10, max_train_per_class=10,
                          finetune_epochs=1.0, finetune_batch_size=8)
    comparison = compare_pruned(str(folder), "word", 2, profile=profile, timing_batch_size=2, timing_repeats=2)
    assert comparison.layer == 2 and comparison.n_layers == 6
    assert comparison.full.batch_ids_digest == comparison.pruned.batch_ids_digest
    assert comparison.parameters_change < 0 and comparison.flops_change < 0
    table = comparison.table
    assert list(table.columns) == ["full", "pruned", "change", "unit"]
    assert table.loc["accuracy (%)", "change"] == pytest.approx(100 * comparison.accuracy_change)
    assert table.loc["parameters (M)", "pruned"] < table.loc["parameters (M)", "full"]
    data = comparison.to_dict()
    for key in ("layer", "n_layers", "accuracy_full", "accuracy_pruned", "accuracy_change", "train_time_change",
                "inference_time_change", "parameters_change"):
        assert key in data
    json.dumps(data)
    assert PruneComparison.from_dict(json.loads(json.dumps(data))).table.equals(table)
    start = time.perf_counter()
    again = compare_pruned(str(folder), "word", 2, profile=profile, timing_batch_size=2, timing_repeats=2)
    assert time.perf_counter() - start < 3.0
    assert again.full_inference.repeats == comparison.full_inference.repeats
    with pytest.raises(ValueError, match="1..6"):
        compare_pruned(str(folder), "word", 7, profile=profile)


def test_prune_compare_cli_is_registered():
    from convexlab.__main__ import build_parser

    args = build_parser().parse_args(["prune-compare", "--model", "mini-hubert", "--task", "speaker", "--layer", "2"])
    assert args.stage == "prune-compare" and args.layer == "2" and args.profile == "lite"
    assert callable(args.handler)


def test_output_dir_of_another_run_is_not_resumed_and_foreign_folders_are_refused(word_data, tmp_path):
    folder = tmp_path / "run"
    first = finetune("mini-hubert", word_data, num_layers=1, output_dir=folder, **FAST)
    second = finetune("mini-hubert", word_data, num_layers=1, output_dir=folder, **(FAST | {"seed": 5}))
    assert second.key != first.key and FinetuneResult.load(folder).key == second.key
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a finetuning run folder"):
        finetune("mini-hubert", word_data, num_layers=1, output_dir=foreign, **FAST)
    assert (foreign / "notes.txt").read_text() == "keep me"
