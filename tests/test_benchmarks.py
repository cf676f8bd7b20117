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
