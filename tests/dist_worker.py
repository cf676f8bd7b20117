"""One stage of convexlab, run by tests/test_distributed.py alone or under ``torchrun``.

``python tests/dist_worker.py {extract,finetune} --corpus DIR --out DIR`` runs the stage on a
miniature with random weights (``CONVEXLAB_CACHE`` says where the cache is) and writes, per
process, ``rank<r>.json`` (the result's figures, this process's world, and every path it
published with ``os.replace``, which is how convexlab's ``atomic_write``/``atomic_dir`` publish)
and, for extraction, ``rank<r>.npz`` (the embeddings and clip ids it returned).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

PUBLISHED: list[str] = []
_replace = os.replace


def _recording_replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    PUBLISHED.append(str(Path(dst).resolve()))


os.replace = _recording_replace  # every atomic publication of this process, for "no file written twice"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["extract", "finetune"])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="mini-hubert")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from convexlab import distributed
    from convexlab.data import word_task

    dataset = word_task(args.corpus)
    me = distributed.world()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record: dict = {"rank": me.rank, "world_size": me.size}
    if args.stage == "extract":
        from convexlab.extract import layer_embeddings

        result = layer_embeddings(args.model, dataset, pretrained=False, batch_size=args.batch_size, progress=False)
        np.savez(out / f"rank{me.rank}.npz", embeddings=result.embeddings, clip_ids=result.clip_ids)
        record.update(cache_file=result.meta["cache_file"], cache_hit=result.meta["cache_hit"],
                      shape=list(result.embeddings.shape))
    else:
        from convexlab.finetune import finetune, load_batch_ids

        result = finetune(args.model, dataset, epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3,
                          head_learning_rate=1e-2, spec_augment=False, pretrained=False, progress=False)
        record.update(accuracy=result.accuracy, eval_loss=result.eval_loss, digest=result.batch_ids_digest,
                      n_batches=result.n_batches, key=result.key, run_dir=str(result.run_dir),
                      batches=load_batch_ids(result), train_seconds=result.train_seconds,
                      timing_world_size=result.training.context.get("world_size"),
                      context_world_size=result.context.get("world_size"), resumed=result.training.resumed)
    record.update(seconds=time.perf_counter() - start, published=PUBLISHED)
    (out / f"rank{me.rank}.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
