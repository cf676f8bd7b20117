"""Finetuning runs side by side: one process per CPU core, each run cached as if it ran alone.

A miniature's finetuning step is small: on two cores a run at two threads is only about 10 %
faster than at one (docs/offline-world.md), so the book's independent runs (every model and
task, every pruned depth) finish sooner one per core than one after another. :func:`finetune_runs`
trains the runs a list names that are not cached yet in a pool of ``spawn``-ed worker processes
(each with ``cores // workers`` torch threads), then returns every run's
:class:`convexlab.finetune.FinetuneResult` read back from the cache. A run's key does not
depend on where or beside what it ran, so the workers change when a result is ready, not the
result. On a GPU, in a ``torchrun``/``accelerate launch`` run, with one core or one run to train,
the runs train one after another in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Sequence

from tqdm.auto import tqdm

from convexlab import distributed
from convexlab._progress import tqdm_disable
from convexlab.finetune import FinetuneResult, cached_run, finetune_for_profile
from convexlab.profiles import Profile, get_profile

__all__ = ["FinetuneJob", "finetune_runs", "available_cores", "worker_count"]


@dataclass(frozen=True)
class FinetuneJob:
    """One finetuning run of a profile: what :func:`convexlab.finetune.finetune_for_profile` is given."""

    model_name: str  # miniature name, hub id or folder
    task: str  # "word" or "speaker"
    num_layers: int | None = None  # kept transformer layers (None: the full model)
    overrides: dict[str, Any] = field(default_factory=dict)  # finetune() arguments over the profile's (e.g. seed)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_count(profile: Profile, n_runs: int) -> int:
    """How many runs :func:`finetune_runs` trains at once for ``profile``: its ``finetune_workers``
    (None: one per available core on a CPU device, 1 on an accelerator), at most ``n_runs``;
    1 inside a multi-process launch, whose processes already share each run."""
    if distributed.world().size > 1:
        return 1
    workers = profile.finetune_workers
    if workers is None:
        workers = available_cores() if str(profile.device) == "cpu" else 1
    if workers < 1:
        raise ValueError(f"finetune_workers={workers}; use a positive number of processes, or None for one per core")
    return max(1, min(int(workers), n_runs))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train(profile: Profile, job: FinetuneJob) -> str:
    """A worker's task: train (or find) one run; only its key travels back."""
    result = finetune_for_profile(job.model_name, job.task, profile, num_layers=job.num_layers,
                                  **(job.overrides | {"progress": False}))
    return result.key


def finetune_runs(jobs: Sequence[FinetuneJob], profile: Profile | str, *, workers: int | None = None,
                  progress: bool | None = None) -> list[FinetuneResult]:
    """Every run of ``jobs`` finetuned with ``profile``'s recipe, in the order given.

    Runs already cached are read back; the rest train in :func:`worker_count` processes at once
    (``workers`` overrides the profile's ``finetune_workers``), each cached by
    :func:`convexlab.finetune.finetune` exactly as a run in this process would be: an
    interrupted call keeps every run that finished. A failing run raises its own error here once
    the runs already started have ended. ``progress`` shows one bar over the runs.
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    jobs = list(jobs)
    pending = [job for job in jobs if cached_run(job.model_name, job.task, profile, num_layers=job.num_layers,
                                                  **job.overrides) is None]
    if workers is not None:
        profile = profile.replace(finetune_workers=workers)
    n_workers = worker_count(profile, len(pending))
    if n_workers > 1:
        threads = max(1, available_cores() // n_workers)
        context = multiprocessing.get_context("spawn")  # fork would copy a kernel's torch threads and locks
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(_train, profile, job) for job in pending]
            bar = tqdm(as_completed(futures), total=len(futures), disable=tqdm_disable(progress),
                       desc=f"finetuning {len(futures)} runs, {n_workers} at once")
            try:
                for future in bar:
                    future.result()
            except BaseException:
                for future in futures:  # the runs not started yet are not started
                    future.cancel()
                raise
    return [finetune_for_profile(job.model_name, job.task, profile, num_layers=job.num_layers,
                                 **(job.overrides | ({"progress": progress} if progress is not None else {})))
            for job in jobs]
