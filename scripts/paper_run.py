"""The paper-scale run in one command (``make paper``): for a machine with a GPU and network.

1. preflight, in seconds and before anything long: a CUDA GPU (``torch.cuda.is_available()``),
   then, for what is not already local, that the Hugging Face Hub and the Speech Commands URL
   answer (a HEAD request, 10 s timeout), and free disk space;
2. downloads what is missing: Speech Commands v0.02 (2.3 GB, checksum-verified) and the four
   base checkpoints (into ``HF_HOME``);
3. executes every chapter with ``--profile paper`` and builds the HTML book (``_build/html``);
4. ``benchmarks/prune_speed.py --device cuda --dtype bfloat16`` and ``benchmarks/extract.py --device cuda``;
5. writes ``_build/paper/figures.json``: every figure it measured (the pruned-vs-full table per
   model and task, the best layers, the speed ratios by depth, clips/s) with the device, library
   versions, batch sizes and the profile.

    python scripts/paper_run.py [--device cuda:0] [--check-only]

Exit status 2 (and one message naming what is missing) when the preflight fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
HUB_URL = "https://huggingface.co/api/models/{hub_id}"
MIN_FREE_GB = 8.0  # corpus archive + extraction (~5 GB) + four checkpoints (~1.5 GB) + caches


class PreflightError(RuntimeError):
    """What the run needs and this machine lacks."""


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _reachable(url: str, timeout: float = 10.0) -> str | None:
    """None if ``url`` answers a HEAD request within ``timeout`` seconds, else why not."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return None
    except urllib.error.HTTPError as err:  # the server answered: the network is there
        return None if err.code < 500 else f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


def _cached_model(hub_id: str) -> bool:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:
        return False
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def _corpus_present(profile) -> bool:
    from convexlab.data import speech_commands_root

    try:
        speech_commands_root(profile.data_root, download=False)
        return True
    except FileNotFoundError:
        return False


def preflight(profile, *, cuda_available: Callable[[], bool] = _cuda_available,
              reachable: Callable[[str], str | None] = _reachable,
              cached_model: Callable[[str], bool] = _cached_model,
              corpus_present: Callable[[object], bool] | None = None,
              free_bytes: Callable[[Path], int] | None = None) -> dict:
    """Check what the run needs, cheapest first; raise :class:`PreflightError` naming what is missing.

    The checks are arguments so that tests can run this without a GPU or a network.
    Returns what is to be downloaded: ``{"models": [...], "corpus": bool}``.
    """
    if not profile.device.startswith("cuda"):
        raise PreflightError(f"make paper runs on a CUDA GPU; the profile's device is {profile.device!r}")
    if not cuda_available():
        import torch

        raise PreflightError(
            "make paper needs a CUDA GPU, and none is visible: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')!r}). "
            "Run it on a machine with an NVIDIA GPU and its driver; to rehearse the paper profile on "
            "this machine without one, run `make rehearse`."
        )
    missing_models = [m for m in profile.models if not cached_model(m)]
    need_corpus = not (corpus_present or _corpus_present)(profile)
    problems = []
    if missing_models:
        why = reachable(HUB_URL.format(hub_id=missing_models[0]))
        if why is not None:
            problems.append(f"the Hugging Face Hub is unreachable ({why}), and {missing_models} are not in the "
                            f"local cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')})")
    if need_corpus:
        from convexlab.data import SPEECH_COMMANDS_URL

        if not profile.download:
            problems.append("Speech Commands v0.02 is not at data_root and the profile may not download it")
        else:
            why = reachable(SPEECH_COMMANDS_URL)
            if why is not None:
                problems.append(f"{SPEECH_COMMANDS_URL} is unreachable ({why}) and Speech Commands v0.02 is not "
                                f"local (pass data_root= a folder in its layout)")
    if problems:
        raise PreflightError("make paper cannot start: " + "; ".join(problems) + ".")
    from convexlab.cache import cache_root

    free = (free_bytes or (lambda p: shutil.disk_usage(p).free))(cache_root())
    need = (MIN_FREE_GB if need_corpus else 2.0) * 1e9
    if free < need:
        raise PreflightError(f"make paper needs about {need / 1e9:.0f} GB free in {cache_root()}; {free / 1e9:.1f} GB are")
    return {"models": missing_models, "corpus": need_corpus}


def _download(profile, todo: dict) -> None:
    if todo["corpus"]:
        from convexlab.data import speech_commands_root

        print("[paper] downloading Speech Commands v0.02 (2.3 GB) ...", flush=True)
        speech_commands_root(profile.data_root, download=True)
    if todo["models"]:
        from huggingface_hub import snapshot_download

        for hub_id in todo["models"]:
            print(f"[paper] downloading {hub_id} ...", flush=True)
            snapshot_download(hub_id)


def _step(name: str, command: Sequence[str], timings: dict) -> None:
    print(f"[paper] {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(list(command), cwd=ROOT, check=True)
    timings[name] = round(time.perf_counter() - start, 1)


def _records(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def collect_figures(profile, *, prune_speed: Path, extract: Path, timings: dict) -> dict:
    """Every figure of the run, from the (now warm) caches and the benchmarks' JSON files."""
    import platform

    import torch
    import transformers

    from convexlab import pipeline

    convexity = pipeline.all_models_convexity(profile)
    figures = {
        "profile": profile.to_dict(),
        "device": {"name": torch.cuda.get_device_name(profile.device), "torch": torch.__version__,
                   "cuda": torch.version.cuda, "transformers": transformers.__version__,
                   "python": platform.python_version()},
        "batch_sizes": {"extraction": profile.batch_size, "finetuning": profile.finetune_batch_size,
                        "timing": profile.timing_batch_size},
        "pruned_vs_full": _records(pipeline.pruning_results(profile)),
        "best_layers": _records(pipeline.best_layers(convexity)),
        "prune_speed": json.loads(prune_speed.read_text()),
        "extract": json.loads(extract.read_text()),
        "stage_seconds": timings,
    }
    return figures


def main(argv: Sequence[str] | None = None, **checks) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="CUDA device (default: the profile's, cuda)")
    parser.add_argument("--data-root", default=None, help="an existing Speech Commands v0.02 folder")
    parser.add_argument("--check-only", action="store_true", help="run the preflight checks and stop")
    parser.add_argument("--out", default=str(ROOT / "_build" / "paper"), help="folder for figures.json")
    args = parser.parse_args(argv)

    from convexlab.profiles import get_profile

    profile = get_profile("paper", device=args.device, data_root=args.data_root)
    try:
        todo = preflight(profile, **checks)
    except PreflightError as err:
        print(f"[paper] {err}", file=sys.stderr, flush=True)
        return 2
    print(f"[paper] preflight passed on {profile.device}; to download: {todo}", flush=True)
    if args.check_only:
        return 0
    timings: dict[str, float] = {}
    start = time.perf_counter()
    _download(profile, todo)
    timings["download"] = round(time.perf_counter() - start, 1)
    py = sys.executable
    book = [py, "-m", "convexlab.book", "build", "--profile", "paper", "-p", "device", json.dumps(profile.device)]
    if args.data_root:
        book += ["-p", "overrides", json.dumps({"data_root": args.data_root})]
    _step("book", book, timings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _step("prune_speed", [py, "benchmarks/prune_speed.py", "--device", profile.device, "--dtype", "bfloat16",
                          "--json", str(out / "prune_speed.json")], timings)
    _step("extract", [py, "benchmarks/extract.py", "--device", profile.device, "--json", str(out / "extract.json")],
          timings)
    figures = collect_figures(profile, prune_speed=out / "prune_speed.json", extract=out / "extract.json",
                              timings=timings)
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"[paper] done in {time.perf_counter() - start:.0f} s: book in _build/html, figures in {out / 'figures.json'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
