"""finetune_runs (runs side by side in worker processes) and the finetuning dropout setting.

Random-init miniatures on a small synthetic corpus (4 words x 4 speakers x 10 repetitions), in a
private cache folder per test, so that what a pool trained and what one process trains can be
compared run for run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from convexlab import parallel
from convexlab.finetune import cached_run, finetune_for_profile, finetune_run_key
from convexlab.models import DROPOUT_CONFIG_FIELDS, load_model
from convexlab.parallel import FinetuneJob, finetune_runs, worker_count
from convexlab.profiles import get_profile

RANDOM = {"pretrained": False}  # no pretraining in tests: random weights from the seed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from convexlab.synth import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    return generate_corpus(root, n_words=4, n_speakers=4, n_repetitions=10, seed=0, test_fraction=0.25,
                           progress=False)


@pytest.fixture
def profile(corpus):
    return get_profile("lite-synthetic", data_root=str(corpus), min_utterances=10, max_train_per_class=6,
                       finetune_epochs=1.0, finetune_batch_size=4)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder per test; spawned workers inherit it through the environment."""
    def use(name: str):
        monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / name))
    use("default")
    return use


JOBS = [FinetuneJob("mini-hubert", "word", None, RANDOM), FinetuneJob("mini-hubert", "word", 1, RANDOM),
        FinetuneJob("mini-wav2vec2", "speaker", None, RANDOM)]


def _weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.model_dir / "model.safetensors"))


@pytest.mark.slow
def test_runs_side_by_side_are_the_runs_of_one_process(profile, cache):
    cache("pool")
    pooled = finetune_runs(JOBS, profile, workers=2, progress=False)
    cache("serial")
    serial = finetune_runs(JOBS, profile, workers=1, progress=False)
    assert [run.key for run in pooled] == [run.key for run in serial]
    assert [(run.model_name, run.task, run.num_layers) for run in pooled] == [
        (run.model_name, run.task, run.num_layers) for run in serial]
    assert [run.num_layers for run in pooled][:2] == [6, 1]  # lite's miniatures have 6 layers; the job asked for 1
    for a, b in zip(pooled, serial):
        assert a.batch_ids_digest == b.batch_ids_digest
        assert a.accuracy == b.accuracy
        wa, wb = _weights(a), _weights(b)
        assert wa.keys() == wb.keys()
        for name in wa:
            torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_cached_runs_start_no_workers(profile, cache, monkeypatch):
    first = finetune_runs(JOBS[:2], profile, workers=2, progress=False)
    assert all(cached_run(job.model_name, job.task, profile, num_layers=job.num_layers, **job.overrides)
               for job in JOBS[:2])

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for runs that are all cached")

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", no_pool)
    again = finetune_runs(JOBS[:2], profile, workers=2, progress=False)
    assert [run.key for run in again] == [run.key for run in first]
    assert [run.train_seconds for run in again] == [run.train_seconds for run in first]  # read back, not retrained
    assert cached_run("mini-hubert", "speaker", profile, **RANDOM) is None


def test_a_failing_run_raises_its_own_error(profile, cache):
    with pytest.raises(ValueError, match="Cannot prune at layer 99"):
        finetune_runs([FinetuneJob("mini-hubert", "word", 99, RANDOM), FinetuneJob("mini-hubert", "word", 98, RANDOM)],
                      profile, workers=2, progress=False)


def test_worker_count(profile, monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 8)
    assert worker_count(profile, 20) == 8  # one per core on a CPU
    assert worker_count(profile, 3) == 3  # never more than the runs
    assert worker_count(profile, 0) == 1
    assert worker_count(profile.replace(device="cuda"), 20) == 1  # an accelerator trains one run at a time
    assert worker_count(profile.replace(finetune_workers=2), 20) == 2
    with pytest.raises(ValueError, match="finetune_workers=0"):
        worker_count(profile.replace(finetune_workers=0), 20)


def test_dropout_is_set_keyed_and_checked(profile, cache):
    model = load_model("mini-hubert", task="word", num_labels=4, pretrained=False, dropout=0.0)
    assert all(getattr(model.config, name) == 0.0 for name in DROPOUT_CONFIG_FIELDS)
    assert not any(module.p for module in model.modules() if isinstance(module, torch.nn.Dropout))
    default = load_model("mini-hubert", task="word", num_labels=4, pretrained=False)
    assert any(module.p > 0 for module in default.modules() if isinstance(module, torch.nn.Dropout))
    with pytest.raises(ValueError, match="dropout=1.5 is not a rate"):
        load_model("mini-hubert", pretrained=False, dropout=1.5)

    off = profile.replace(finetune_dropout=0.0)
    key_default = finetune_run_key("mini-hubert", "word", profile, **RANDOM)
    key_off = finetune_run_key("mini-hubert", "word", off, **RANDOM)
    assert key_off != key_default
    assert finetune_run_key("mini-hubert", "word", profile.replace(finetune_dropout=0.1), **RANDOM) not in (
        key_default, key_off)  # the checkpoint's own rate and the same rate set explicitly are different runs
    result = finetune_for_profile("mini-hubert", "word", off, progress=False, **RANDOM)
    assert result.key == key_off and result.hyperparameters["dropout"] == 0.0
    saved = load_model(str(result.model_dir))
    assert all(getattr(saved.config, name) == 0.0 for name in DROPOUT_CONFIG_FIELDS)
    assert "dropout" not in finetune_for_profile("mini-hubert", "word", profile, progress=False,
                                                 **RANDOM).hyperparameters
    assert np.isfinite(result.accuracy)
