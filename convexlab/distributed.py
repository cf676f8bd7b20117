"""Which process am I, and how do the processes of a launched run agree?

Under ``torchrun`` or ``accelerate launch`` every process runs the same command; the launcher
tells each its place through the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``). This
module reads that, starts the process group when there is more than one process (through
``accelerate.PartialState``, the same shared state the Hugging Face ``Trainer`` then reuses:
gloo on CPU, NCCL on CUDA), and gives the few collectives the stages need. With one process
(no launcher, or ``--nproc-per-node 1``) every helper is a no-op, so the code paths are the same.

Rules the stages follow: only the main process (rank 0) writes cache entries, run folders,
metrics and timing records; the others wait at :func:`barrier` and then read what it wrote.
Work that fills a shared cache entry the first time (a pretrained miniature, a synthetic corpus)
runs under :func:`main_process_first`.

Test hook: ``CONVEXLAB_FAIL_RANK=<rank>`` with ``CONVEXLAB_FAIL_AFTER=<n>`` makes that rank raise
:class:`SimulatedRankFailure` at its ``n``-th :func:`failure_point` (after ``n - 1`` units of work:
extraction batches or training steps), as a crashed worker would. Unset, it costs nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["World", "world", "local_device", "is_main", "is_distributed", "init", "barrier", "main_process_first",
           "broadcast_object", "all_gather_objects", "failure_point", "SimulatedRankFailure"]


@dataclass(frozen=True)
class World:
    rank: int  # this process among all processes (0 is the main one)
    local_rank: int  # this process among the processes of its node (its GPU index)
    size: int  # number of processes


def world() -> World:
    """This process's rank, local rank and the world size, from the launcher's environment."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return World(rank=rank, local_rank=local_rank, size=size)


def is_main() -> bool:
    """True in the process that writes (rank 0), and always without a launcher."""
    return world().rank == 0


def is_distributed() -> bool:
    return world().size > 1


def init(device: str = "cpu") -> None:
    """Start the process group if this is a launched run of several processes (idempotent).

    ``device``: where the stage computes; "cpu" starts gloo, "cuda" NCCL (one GPU per local
    rank). Uses ``accelerate.PartialState`` so that a ``Trainer`` created later shares it.
    """
    if not is_distributed():
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    from accelerate import PartialState

    PartialState(cpu=str(device).startswith("cpu"))


def local_device(device):
    """``device`` for this process: plain "cuda" becomes this process's GPU (``cuda:<local rank>``)
    under a launcher; anything else is returned as given."""
    if is_distributed() and str(device) == "cuda":
        return f"cuda:{world().local_rank}"
    return device


def _active() -> bool:
    if not is_distributed():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    if _active():
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_process_first(device: str = "cpu") -> Iterator[None]:
    """Run the block on the main process first, then on the others (which find its cache entry)."""
    init(device)
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def broadcast_object(value: Any = None) -> Any:
    """The main process's ``value``, in every process."""
    if not _active():
        return value
    import torch.distributed as dist

    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (``[value]`` with one process)."""
    if not _active():
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world().size
    dist.all_gather_object(gathered, value)
    return gathered


class SimulatedRankFailure(RuntimeError):
    """Raised by :func:`failure_point` in the rank named by ``CONVEXLAB_FAIL_RANK`` (a test hook)."""


_FAILURE_COUNT = {"n": 0}


def failure_point(what: str = "work") -> None:
    """The test hook described in the module's docstring; a no-op unless ``CONVEXLAB_FAIL_RANK`` is set."""
    target = os.environ.get("CONVEXLAB_FAIL_RANK")
    if target is None or int(target) != world().rank:
        return
    _FAILURE_COUNT["n"] += 1
    if _FAILURE_COUNT["n"] >= int(os.environ.get("CONVEXLAB_FAIL_AFTER", "1")):
        raise SimulatedRankFailure(f"simulated failure of rank {world().rank} at {what} {_FAILURE_COUNT['n']}")
