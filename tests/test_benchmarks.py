"""The benchmark scripts stay runnable (their analysis is tested with the library, in test_timing)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prune_speed():
    return _load("prune_speed")


def _run_prune_speed(*extra: str) -> str:
    # The smallest run that goes through every step: the base wav2vec2 network, one depth, a
    # tenth of a second of audio.
    command = [sys.executable, str(BENCHMARKS / "prune_speed.py"), "--families", "wav2vec2", "--depths", "2",
               "--batch-size", "1", "--repeats", "1", "--clip-seconds", "0.1", "--device", "cpu", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(command, capture_output=True, text=True, env=env | {"OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # a 95M-parameter base architecture: not the fast tier
def test_prune_speed_runs_on_a_base_architecture():
    out = _run_prune_speed()
    assert "glibc malloc keeping freed memory" in out.splitlines()[0]  # the script restarted itself
    table_lines = [line.split() for line in out.splitlines() if line.strip().startswith("wav2vec2")]
    assert [int(row[1]) for row in table_lines] == [2, 12]
    flop_ratio_of_pruned = float(table_lines[0][5])
    # Two of twelve layers plus the fixed encoder: well under the full model's FLOPs.
    assert 0.1 < flop_ratio_of_pruned < 0.6
    assert "fixed part" in out and "largest |time ratio / FLOP ratio - 1|" in out


class _Restarted(Exception):
    pass


def test_prune_speed_restarts_only_when_needed(prune_speed, monkeypatch):
    calls = []

    def fake_execve(path, args, env):
        calls.append((args, env))
        raise _Restarted

    monkeypatch.setattr(prune_speed.os, "execve", fake_execve)
    monkeypatch.setattr(prune_speed.sys, "platform", "linux")
    for name in prune_speed.RETAINING_MALLOC:
        monkeypatch.delenv(name, raising=False)
    prune_speed.restart_with_retaining_malloc(["--system-malloc"])
    assert calls == [] and prune_speed.malloc_mode() == "the default allocator settings"
    with pytest.raises(_Restarted):
        prune_speed.restart_with_retaining_malloc(["--quick"])
    (args, env), = calls
    assert args[-1] == "--quick" and all(env[k] == v for k, v in prune_speed.RETAINING_MALLOC.items())
    for name, value in prune_speed.RETAINING_MALLOC.items():
        monkeypatch.setenv(name, value)
    prune_speed.restart_with_retaining_malloc(["--quick"])  # already set: no second restart
    assert len(calls) == 1 and "keeping freed memory" in prune_speed.malloc_mode()


def test_where_to_cut_prints_the_frontier_and_each_rule_against_the_oracle(monkeypatch, capsys):
    """The script's tables from a constructed frontier (no finetuning): cut_study's assembly included."""
    import math

    import numpy as np
    import pandas as pd

    from convexlab import frontier as F
    from convexlab import pipeline

    def fake_frontier(model, task, profile, *, seeds=None, tolerance=0.01):
        depths = np.arange(1, 7)
        table = pd.DataFrame({"depth": depths, "accuracy": [0.5, 0.8, 0.895, 0.9, 0.9, 0.9], "accuracy_std": math.nan,
                              "n_seeds": 1, "train_seconds": 10.0 * depths, "n_parameters": 1000 * depths,
                              "flops_per_clip": 1e9 * (1 + depths), "inference_ms": math.nan})
        return F.Frontier(model_name=model, task=task, profile_name="lite", n_layers=6, seeds=(0,),
                          tolerance=tolerance, table=table, runs=pd.DataFrame({"depth": depths}),
                          oracle_depth=F.oracle_depth(table, tolerance=tolerance), inference_timed=False)

    def fake_picks(model, task, profile):
        return pd.DataFrame({"rule": [r.name for r in F.RULES], "depth": [3, 4, 2, 1, 6, 3],
                             "uses_labels": [r.uses_labels for r in F.RULES], "description": ""})

    monkeypatch.setattr(F, "pruning_frontier", fake_frontier)
    monkeypatch.setattr(pipeline, "cut_picks", fake_picks)
    _load("where_to_cut").main(["--models", "mini-hubert", "--tasks", "word", "--threads", "1"])
    out = capsys.readouterr().out
    assert "Miniature-model results (lite profile), not the paper's." in out
    assert "=== the frontier" in out and "=== each rule against the oracle" in out and "=== per rule" in out
    names = {r.name for r in F.RULES}
    rule_part = out.split("=== each rule")[1].split("=== per rule")[0]
    rows = {line.split()[2]: line.split() for line in rule_part.splitlines() if line.startswith("mini-hubert word ")}
    assert set(rows) == names
    frontier_part = out.split("=== the frontier")[1].split("=== each rule")[0]
    assert sum(line.startswith("mini-hubert word ") for line in frontier_part.splitlines()) == 6
    oracle_rows = [line.split() for line in frontier_part.splitlines() if "*" in line.split()]
    assert len(oracle_rows) == 1 and oracle_rows[0][3] == "3"  # depth 3: within a point of 90 %
    assert rows["graph-convexity"][3:7] == ["3", "6", "3", "0"]  # depth, n_layers, oracle, from oracle
    assert rows["cka-redundancy"][6] == "-2" and rows["keep-all"][6] == "3"


def test_pooling_diagnostic_splits_the_clip_mean_into_speech_and_background():
    """The all-frame mean is the frame-weighted mix of the speech and background means, per clip."""
    import numpy as np
    import torch
    from transformers import AutoModel

    from convexlab.models import miniature_config

    diagnostic = _load("pooling_diagnostic")
    torch.manual_seed(0)
    model = AutoModel.from_config(miniature_config("hubert", num_layers=2)).eval()
    rng = np.random.default_rng(0)
    clips = (rng.standard_normal((3, 16000)) * 1e-4).astype(np.float32)  # quiet background
    clips[:, 4000:8000] += np.sin(np.arange(4000) * 0.2).astype(np.float32)  # a loud quarter second
    means, fraction = diagnostic.masked_means(model, clips, silence_db=30.0)
    assert set(means) == {"all", "speech", "background"}
    assert all(m.shape == (3, 3, model.config.hidden_size) for m in means.values())
    assert 0.15 < fraction < 0.35
    n_frames = int(model._get_feat_extract_output_lengths(torch.tensor(16000)))
    speech = diagnostic.speech_frames(clips, n_frames=n_frames, silence_db=30.0)
    share = speech.mean(1)[None, :, None]
    np.testing.assert_allclose(means["all"], share * means["speech"] + (1 - share) * means["background"],
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(means["speech"], means["background"])


def test_probe_threads_times_both_thread_counts_and_finds_the_same_accuracies():
    command = [sys.executable, str(BENCHMARKS / "probe_threads.py"), "--quick", "--classes", "5", "--per-class", "6"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert "one thread:" in last and "ratio" in last and last.endswith("same accuracies: True")
