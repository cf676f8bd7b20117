"""Two processes under ``torchrun`` (CPU, gloo) against one: finetuning, extraction, a failing rank.

Each test launches ``torchrun --standalone --nproc-per-node 2 tests/dist_worker.py ...`` on a
miniature with random weights and a small synthetic corpus, and compares it with the same stage
run in this process (one process, no launcher). The figures compared are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "dist_worker.py"
TIMEOUT = 300  # seconds per launch; a two-process run takes about a minute on a busy 2-core machine
BATCH = 10  # the global batch: 5 clips per process with two processes
EPOCHS = 2.0
ACCURACY_TOLERANCE = 0.1  # (one clip of the 12 held out is 0.083); 1 vs 2 processes: same batches, but dropout draws differ between the layouts
LOSS_TOLERANCE = 0.02  # measured: 1e-4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from convexlab.synth import generate_corpus

    # 48 clips, 24 for training: 24 is not a multiple of the global batch 10, so the last step of
    # each epoch is one the launcher pads (and the record must leave the padding out)
    return generate_corpus(tmp_path_factory.mktemp("dist") / "corpus", n_words=4, n_speakers=4, n_repetitions=3,
                           seed=0, test_fraction=0.25, progress=False)


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def launch(stage: str, corpus: Path, out: Path, cache: Path, *, nproc: int = 2, env: dict | None = None,
           check: bool = True) -> tuple[subprocess.CompletedProcess, float, list[dict]]:
    """Run the worker under torchrun; return the process, its wall time and each rank's record."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(WORKER), stage, "--corpus", str(corpus), "--out", str(out), "--batch-size", str(BATCH),
               "--epochs", str(EPOCHS)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CONVEXLAB_CACHE": str(cache),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                   **(env or {})}
    start = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=TIMEOUT)
    seconds = time.perf_counter() - start
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    records = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
    return done, seconds, records


def assert_each_file_published_once(records: list[dict], cache: Path) -> list[str]:
    """Every path under the cache published by exactly one process, at most once."""
    published = [path for record in records for path in record["published"]
                 if path.startswith(str(cache.resolve()))]
    assert len(published) == len(set(published)), sorted(p for p in published if published.count(p) > 1)
    return published


def test_finetuning_two_processes_match_one(corpus, tmp_path, monkeypatch):
    from convexlab.data import word_task
    from convexlab.finetune import finetune, load_batch_ids

    dataset = word_task(corpus)
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / "cache-1"))
    start = time.perf_counter()
    with one_thread():
        single = finetune("mini-hubert", dataset, epochs=EPOCHS, batch_size=BATCH, learning_rate=1e-3,
                          head_learning_rate=1e-2, spec_augment=False, pretrained=False, progress=False)
    single_seconds = time.perf_counter() - start

    cache = tmp_path / "cache-2"
    _, seconds, records = launch("finetune", corpus, tmp_path / "out", cache)
    assert [r["rank"] for r in records] == [0, 1] and all(r["world_size"] == 2 for r in records)
    main, other = records
    # the cache key is the global batch's: the same run as the single process's
    assert main["key"] == other["key"] == single.key
    # the same batches, in the same order, recorded once for the global batch
    assert main["digest"] == other["digest"] == single.batch_ids_digest
    assert main["batches"] == load_batch_ids(single)
    assert main["n_batches"] == single.n_batches == 2 * -(-24 // BATCH)
    # timing records carry the world size
    assert main["timing_world_size"] == main["context_world_size"] == 2
    assert single.training.context["world_size"] == 1
    # every process returns the one result rank 0 wrote
    assert main["accuracy"] == other["accuracy"] and main["train_seconds"] == other["train_seconds"]
    accuracy_change = main["accuracy"] - single.accuracy
    loss_change = main["eval_loss"] - single.eval_loss
    assert abs(accuracy_change) <= ACCURACY_TOLERANCE and abs(loss_change) <= LOSS_TOLERANCE
    # one run folder, written by rank 0 alone, nothing written twice
    runs = list((cache / "runs").iterdir())
    assert len(runs) == 1 and str(runs[0]) == main["run_dir"]
    assert sorted(p.name for p in runs[0].iterdir()) == ["batch_ids.json", "model", "result.json", "run_key.json"]
    assert not [p for p in other["published"] if p.startswith(str(cache.resolve()))]  # rank 1 wrote nothing
    assert {Path(p).name for p in assert_each_file_published_once(records, cache)} >= {
        "run_key.json", "model", "batch_ids.json", "result.json"}
    print(f"\nfinetune: 1 process {single_seconds:.1f} s in-process (train {single.train_seconds:.2f} s), "
          f"2 processes {seconds:.1f} s launch (train {main['train_seconds']:.2f} s); digest {single.batch_ids_digest}"
          f" both; accuracy {single.accuracy:.3f} vs {main['accuracy']:.3f} ({accuracy_change:+.3f}); eval loss "
          f"{single.eval_loss:.4f} vs {main['eval_loss']:.4f} ({loss_change:+.4f})")


def test_sharded_extraction_equals_single_process(corpus, tmp_path, monkeypatch):
    from convexlab.data import word_task
    from convexlab.extract import layer_embeddings

    dataset = word_task(corpus)
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / "cache-1"))
    start = time.perf_counter()
    with one_thread():
        single = layer_embeddings("mini-hubert", dataset, pretrained=False, batch_size=BATCH, progress=False)
    single_seconds = time.perf_counter() - start

    cache = tmp_path / "cache-2"
    _, seconds, records = launch("extract", corpus, tmp_path / "out", cache)
    difference = 0.0
    for record in records:
        result = np.load(tmp_path / "out" / f"rank{record['rank']}.npz")
        assert list(result["clip_ids"]) == list(dataset.clip_ids)  # clip order preserved
        assert result["embeddings"].shape == single.embeddings.shape
        difference = max(difference, float(np.abs(result["embeddings"] - single.embeddings).max()))
    np.testing.assert_allclose(np.load(tmp_path / "out" / "rank0.npz")["embeddings"], single.embeddings,
                               rtol=1e-5, atol=1e-6)
    assert difference <= 1e-5
    # one cache entry, the same file name as the single process's, no chunks left, each chunk written once
    entries = list((cache / "embeddings").iterdir())
    assert [e.name for e in entries] == [Path(single.meta["cache_file"]).parent.name]
    assert sorted(p.name for p in entries[0].iterdir()) == ["embeddings.npz"]
    published = assert_each_file_published_once(records, cache)
    n_batches = -(-len(dataset) // BATCH)
    chunks = [[p for p in r["published"] if "/chunks/" in p] for r in records]
    assert [len(c) for c in chunks] == [-(-n_batches // 2), n_batches // 2]  # batches split between the ranks
    assert sum(Path(p).name == "embeddings.npz" for p in published) == 1
    assert not any(Path(p).name == "embeddings.npz" for p in records[1]["published"])
    print(f"\nextract: {len(dataset)} clips; 1 process {single_seconds:.1f} s in-process, 2 processes {seconds:.1f} s "
          f"launch ({records[0]['seconds']:.2f} s / {records[1]['seconds']:.2f} s in the stage); max abs difference "
          f"{difference:.2e}")


def test_a_failing_rank_publishes_nothing_and_the_rerun_resumes(corpus, tmp_path):
    cache = tmp_path / "cache"
    # rank 1 raises before its second batch (it has written the chunk of its first)
    failed, failed_seconds, _ = launch("extract", corpus, tmp_path / "failed", cache, check=False,
                                       env={"CONVEXLAB_FAIL_RANK": "1", "CONVEXLAB_FAIL_AFTER": "2"})
    assert failed.returncode != 0 and "SimulatedRankFailure" in failed.stdout + failed.stderr
    (entry,) = list((cache / "embeddings").iterdir())
    assert not (entry / "embeddings.npz").exists()  # no cache entry published
    assert not list(cache.rglob("*.tmp"))  # and nothing half-written lying about
    left = sorted(p.name for p in (entry / "chunks").iterdir())
    assert left  # the finished batches survive, each a complete chunk
    from convexlab.data import word_task

    n_batches = -(-len(word_task(corpus)) // BATCH)
    assert len(left) < n_batches

    done, seconds, records = launch("extract", corpus, tmp_path / "rerun", cache)
    assert (entry / "embeddings.npz").is_file() and not (entry / "chunks").exists()
    rewritten = {Path(p).name for r in records for p in r["published"] if "/chunks/" in p}
    assert rewritten.isdisjoint(left) and len(rewritten) == n_batches - len(left)  # the rerun resumed
    print(f"\nfailure: failed launch {failed_seconds:.1f} s left {len(left)} of {n_batches} chunks and no entry; "
          f"rerun {seconds:.1f} s computed the other {len(rewritten)}")
