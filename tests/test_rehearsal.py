"""The rehearsal fixture (a warm HF cache and a Speech Commands folder, both generated), the
authors' speaker split, and the paper profile run against the fixture offline."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from convexlab import data, pipeline, rehearsal
from convexlab.profiles import get_profile

ROOT = Path(__file__).resolve().parent.parent
PAPER_IDS = get_profile("paper").models


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return rehearsal.build_hf_cache(tmp_path_factory.mktemp("hf"), width="small")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return rehearsal.build_speech_commands(tmp_path_factory.mktemp("sc") / "speech_commands_v0.02",
                                           n_heavy=5, n_light=16, heavy_clips=50)


def _snapshot(hf_home: Path, hub_id: str) -> Path:
    repo = hf_home / "hub" / ("models--" + hub_id.replace("/", "--"))
    revision = (repo / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", revision)
    return repo / "snapshots" / revision


def test_hf_cache_holds_the_real_ids_in_the_real_formats(hf_home):
    for hub_id in PAPER_IDS:
        files = sorted(p.name for p in _snapshot(hf_home, hub_id).iterdir())
        if hub_id == "vasista22/ccc-wav2vec2-base":
            assert files == ["config.json", "pytorch_model.bin"]  # no safetensors, no preprocessor config
        else:
            assert files == ["config.json", "model.safetensors", "preprocessor_config.json"]
        config = json.loads((_snapshot(hf_home, hub_id) / "config.json").read_text())
        assert config["num_hidden_layers"] == 12 and config["do_stable_layer_norm"] is False
        assert config["feat_extract_norm"] == "group" and "convexlab_family" not in config
        assert config["model_type"] == ("wavlm" if "wavlm" in hub_id else "hubert" if "hubert" in hub_id else "wav2vec2")


def test_base_width_config_is_the_real_architecture():
    from convexlab.models import base_config

    for hub_id in PAPER_IDS:
        config = rehearsal.rehearsal_config(hub_id, width="base")
        assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (768, 12, 3072)
        assert list(config.conv_dim) == [512] * 7
        assert config.model_type == base_config("wavlm" if "wavlm" in hub_id else "hubert" if "hubert" in hub_id
                                                else "wav2vec2").model_type


def test_hub_ids_load_offline_from_the_fixture(hf_home):
    # a fresh interpreter: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE at import
    script = """
import json, warnings, torch
warnings.simplefilter("error", UserWarning)
from safetensors.torch import load_file
from convexlab.models import load_model, feature_extractor_for, model_key
from huggingface_hub import snapshot_download
out = {}
for hub_id in %r:
    model = load_model(hub_id)
    folder = snapshot_download(hub_id, local_files_only=True)
    weights = (load_file(folder + "/model.safetensors") if "ccc" not in hub_id
               else torch.load(folder + "/pytorch_model.bin", weights_only=True))
    name = next(k for k in weights if k.endswith("encoder.layers.11.feed_forward.output_dense.weight"))
    fe = feature_extractor_for(model)
    out[hub_id] = {"layers": model.config.num_hidden_layers, "name": model.config._name_or_path,
                   "loaded": bool(torch.equal(model.encoder.layers[11].feed_forward.output_dense.weight, weights[name])),
                   "normalize": fe.do_normalize, "mask": fe.return_attention_mask, "key": model_key(hub_id)}
print("RESULT" + json.dumps(out))
""" % (list(PAPER_IDS),)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    for hub_id in PAPER_IDS:
        assert out[hub_id]["layers"] == 12 and out[hub_id]["name"] == hub_id and out[hub_id]["loaded"]
    # ccc-wav2vec2 has no preprocessor config: it gets facebook/wav2vec2-base's (as the authors did)
    assert (out["vasista22/ccc-wav2vec2-base"]["normalize"], out["vasista22/ccc-wav2vec2-base"]["mask"]) == (True, False)
    assert out["facebook/wav2vec2-base"]["normalize"] is True
    assert out["microsoft/wavlm-base"]["mask"] is True
    assert len({entry["key"] for entry in out.values()}) == 4  # keyed by the cached files, one key each


def test_ccc_without_any_cache_gets_wav2vec2_base_settings(monkeypatch):
    from convexlab import models

    monkeypatch.setattr(models.AutoFeatureExtractor, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        fe = models.feature_extractor_for("vasista22/ccc-wav2vec2-base")
    assert fe.do_normalize is True and fe.return_attention_mask is False and fe.sampling_rate == 16_000


def test_speech_commands_fixture_has_the_real_layout(corpus):
    folders = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    assert folders == sorted(rehearsal.SPEECH_COMMANDS_WORDS + ("_background_noise_",)) and len(folders) == 36
    for name in ("validation_list.txt", "testing_list.txt", "LICENSE", "README.md"):
        assert (corpus / name).is_file()
    noise = list((corpus / "_background_noise_").glob("*.wav"))
    assert len(noise) >= 3 and all(os.path.getsize(p) > 16_000 * 2 * 5 for p in noise)
    clips = [p for p in corpus.glob("*/*.wav") if p.parent.name != "_background_noise_"]
    assert all(re.fullmatch(r"[0-9a-f]{8}_nohash_\d+\.wav", p.name) for p in clips)
    import soundfile as sf

    info = sf.info(clips[0])
    assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    counts = Counter(p.name.split("_nohash_")[0] for p in clips)
    heavy = [s for s, n in counts.items() if n >= 50]
    assert 2 <= len(heavy) < len(counts) / 2  # a few with >= 50, most without
    listed = {line.split("/")[1].split("_nohash_")[0] for name in ("validation_list.txt", "testing_list.txt")
              for line in (corpus / name).read_text().split()}
    assert set(heavy) & listed  # a speaker with >= 50 clips outside the training split


def test_authors_speaker_split(corpus):
    scanned = data.scan_corpus(corpus)
    authors = data.speaker_task(corpus, split="authors", seed=42)
    assert set(authors.splits) == {"train", "test"}
    split_of = dict(zip(scanned.clip_ids, scanned.splits))
    assert all(split_of[c] == "train" for c in authors.clip_ids)  # the training split only
    train_counts = Counter(s for s, split in zip(scanned.speakers, scanned.splits) if split == "train")
    assert set(authors.label_names) == {s for s, n in train_counts.items() if n >= 50}
    # datasets' train_test_split(test_size=0.1, seed=42): the first ceil(0.1 N) of a seeded permutation
    n = len(authors)
    expected = np.random.default_rng(42).permutation(n)[: math.ceil(0.1 * n)]
    assert sorted(np.flatnonzero(np.array(authors.splits) == "test").tolist()) == sorted(expected.tolist())
    # the stratified split (lite's) also takes speakers whose clips are in the list files
    stratified = data.speaker_task(corpus, seed=42)
    assert set(stratified.label_names) > set(authors.label_names)
    assert get_profile("paper").speaker_split == "authors" == get_profile("large").speaker_split
    assert get_profile("lite").speaker_split == "stratified"


def test_analysis_leaves_out_speakers_without_a_pair(corpus):
    profile = get_profile("paper", data_root=str(corpus), n_per_class=None)
    held_out = pipeline.analysis_dataset("speaker", profile)
    assert min(held_out.class_counts().values()) >= 2
    words = pipeline.analysis_dataset("word", profile)
    assert len(words.label_names) == 35


def _executed_text(notebook: Path) -> str:
    nb = json.loads(notebook.read_text())
    return "\n".join("".join(cell.get("source", "")) + _outputs_text(cell) for cell in nb["cells"])


def _outputs_text(cell: dict) -> str:
    """What the kernel wrote in a cell (streams and plain-text results), not its source."""
    return "".join("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
                   for out in cell.get("outputs", []))


def test_label_notebook_puts_one_banner_after_the_title(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter"),
                                         nbformat.v4.new_code_cell("profile = 'paper'")])
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    profile = get_profile("paper", **rehearsal.rehearsal_parameters(tmp_path)["overrides"])
    assert profile.rehearsal and profile.name == "paper" and profile.models == PAPER_IDS
    rehearsal.label_notebook(path, profile)
    rehearsal.label_notebook(path, profile)  # a second call adds nothing
    cells = nbformat.read(path, as_version=4).cells
    assert [c.source.splitlines()[0] for c in cells] == ["# A chapter", "```{warning}", "profile = 'paper'"]
    banner = cells[1].source
    assert "Random-weight rehearsal, not results" in banner and "`profile: paper`" in banner
    assert all(hub_id in banner for hub_id in PAPER_IDS)
    assert cells[1].metadata["tags"] == [rehearsal.BANNER_TAG]


@pytest.mark.book
def test_rehearsal_runs_the_paper_profile_offline(tmp_path, monkeypatch):
    """`make rehearse` in small: the layers chapter with --profile paper on the fixture. The notebook
    says, in a banner and in its own first cell's output, that it is a random-weight rehearsal of
    profile paper, and the models it printed and measured are the four real hub ids."""
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / "cache"))
    summary = rehearsal.run_rehearsal(chapters=["layers"], folder=tmp_path / "fixture", output_dir=tmp_path / "out")
    assert summary["chapters"]["layers"] > 0 and summary["overrides"]["rehearsal"] is True
    notebook = tmp_path / "out" / "layers.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    assert 'profile = "paper"' in _executed_text(notebook)  # papermill's injected parameters
    banners = [i for i, c in enumerate(cells) if rehearsal.BANNER_TAG in c.get("metadata", {}).get("tags", [])]
    assert banners == [1], "one rehearsal banner, right after the title"
    assert "`profile: paper`" in "".join(cells[1]["source"])
    code = [c for c in cells if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])
            and "injected-parameters" not in c["metadata"].get("tags", [])]
    first = _outputs_text(code[0]).splitlines()
    assert first == ["Random-weight rehearsal (profile: paper), not results.", "models: " + ", ".join(PAPER_IDS)]
    outputs = "".join(_outputs_text(c) for c in code[1:])
    assert "Pretrained checkpoints" not in outputs  # the label of a real run
    best = next(c for c in code if "layers-best" in "".join(c["source"]))  # the best-layers table
    for hub_id in PAPER_IDS:
        assert _outputs_text(best).count(hub_id) == 2  # one row per concept


# ----------------------------------------------------------------------------- make paper


def _paper_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_run", ROOT / "scripts" / "paper_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _no_network(url):
    raise AssertionError(f"the test must not contact {url}")


def test_paper_run_stops_first_on_a_missing_gpu(capsys):
    paper = _paper_script()
    import time

    start = time.perf_counter()
    rc = paper.main(["--check-only"], cuda_available=lambda: False, reachable=_no_network)
    assert rc == 2 and time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "torch.cuda.is_available() is False" in err and "make rehearse" in err


def test_paper_run_names_the_unreachable_hub_and_corpus(capsys):
    paper = _paper_script()
    rc = paper.main(["--check-only"], cuda_available=lambda: True, reachable=lambda url: "no route to host",
                    cached_model=lambda hub_id: hub_id != "microsoft/wavlm-base", corpus_present=lambda p: False)
    err = capsys.readouterr().err
    assert rc == 2 and "Hugging Face Hub is unreachable" in err and "microsoft/wavlm-base" in err
    assert "speech_commands_v0.02.tar.gz is unreachable" in err


def test_paper_run_preflight_passes_with_gpu_network_and_space(capsys):
    paper = _paper_script()
    rc = paper.main(["--check-only"], cuda_available=lambda: True, reachable=lambda url: None,
                    cached_model=lambda hub_id: False, corpus_present=lambda p: False, free_bytes=lambda p: 10**12)
    assert rc == 0 and "preflight passed" in capsys.readouterr().out


def test_make_paper_script_on_this_machine_names_the_missing_gpu():
    """The real script, in a fresh interpreter, with no GPU visible: it stops in seconds (before
    any network check: the GPU comes first)."""
    import time

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "paper_run.py")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs a CUDA GPU" in result.stderr and time.perf_counter() - start < 60


# ----------------------------------------------------------------------------- the true base size


@pytest.mark.slow
def test_one_base_size_model_through_extraction_convexity_pruning_finetuning(tmp_path):
    """facebook/wav2vec2-base at its real size (random weights, from the fixture's HF cache,
    offline): layer extraction, graph convexity, the pruned model, one finetuning step."""
    hf = rehearsal.build_hf_cache(tmp_path / "hf", width="base", models=["facebook/wav2vec2-base"])
    corpus = rehearsal.build_speech_commands(tmp_path / "sc", n_heavy=6, n_light=6, heavy_clips=50)
    script = """
import json, time, torch
torch.set_num_threads(1)
from convexlab import get_profile, pipeline
from convexlab.finetune import finetune_for_profile, training_dataset
from convexlab.models import load_model
P = get_profile("paper", device="cpu", data_root=%r, n_per_class=6, n_neighbors=5, n_bootstrap=2, batch_size=8,
                finetune_batch_size=4, max_train_per_class=1, models=["facebook/wav2vec2-base"])
t, start = {}, time.perf_counter()
table = pipeline.convexity_by_layer("facebook/wav2vec2-base", "speaker", P)  # extraction + convexity
t["extract_and_convexity"] = time.perf_counter() - start
layer = pipeline.choose_layer("facebook/wav2vec2-base", "speaker", P)
pruned = load_model("facebook/wav2vec2-base", num_layers=layer)
n_train = sum(1 for s in training_dataset("speaker", P).splits if s == "train")
P1 = P.replace(finetune_epochs=P.finetune_batch_size / n_train)  # one optimiser step
start = time.perf_counter()
run = finetune_for_profile("facebook/wav2vec2-base", "speaker", P1, num_layers=layer)
t["finetune"] = time.perf_counter() - start
print("RESULT" + json.dumps({"layers": sorted(table["layer"].tolist()), "width": pruned.config.hidden_size,
      "layer": layer, "pruned_layers": pruned.config.num_hidden_layers, "run_layers": run.num_layers,
      "batches": run.n_batches, "params": run.n_parameters, "seconds": t}))
""" % (str(corpus),)
    env = {**os.environ, "HF_HOME": str(hf), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "CONVEXLAB_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    print(out)
    assert out["layers"] == list(range(13)) and out["width"] == 768
    assert 1 <= out["layer"] <= 12 and out["pruned_layers"] == out["layer"] == out["run_layers"]
    assert out["batches"] == 1
