"""convexlab.pipeline: the chapters' glue returns honest, tidy, cached tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import convexlab
from convexlab import data, pipeline, reported, tables
from convexlab.data import AudioDataset


# ----------------------------------------------------------------------------- the paper's numbers


def test_paper_table_holds_the_posters_figures_labelled_as_the_papers():
    table = pipeline.paper_table().set_index("task")
    assert list(table.index) == ["word", "speaker"]
    assert (table["source"] == "paper (reported)").all()
    assert table.loc["word", "accuracy_change"] == pytest.approx(-0.0025)
    assert table.loc["word", "train_time_change"] == pytest.approx(-0.234)
    assert table.loc["word", "inference_time_change"] == pytest.approx(-0.259)
    assert table.loc["speaker", "accuracy_change"] == pytest.approx(0.0122)
    assert table.loc["speaker", "train_time_change"] == pytest.approx(-0.478)
    assert table.loc["speaker", "inference_time_change"] == pytest.approx(-0.587)


def test_paper_best_layers_are_the_reported_ones():
    table = pipeline.paper_best_layers().set_index(["concept", "model_size"])
    assert table.loc[("word", "base"), "best_layer"] == 8 and table.loc[("speaker", "base"), "best_layer"] == 2
    assert table.loc[("word", "large"), "best_layer"] == 15 and table.loc[("speaker", "large"), "best_layer"] == 4
    assert (table["source"] == "paper (reported)").all()


def test_pruning_vs_paper_keeps_ours_and_the_papers_apart():
    ours = pd.DataFrame({"model": ["a", "b", "a", "b"], "task": ["word", "word", "speaker", "speaker"],
                         "accuracy_change": [0.01, 0.03, -0.02, 0.0], "train_time_change": [-0.1, -0.3, -0.5, -0.5],
                         "inference_time_change": [-0.2, -0.4, -0.6, -0.2]})
    table = pipeline.pruning_vs_paper(ours, "lite")
    assert len(table) == 4
    mine = table[table["source"].str.startswith("this book, lite profile (mean of 2 models)")].set_index("task")
    assert mine.loc["word", "accuracy_change"] == pytest.approx(0.02)
    assert mine.loc["speaker", "inference_time_change"] == pytest.approx(-0.4)
    paper = table[table["source"] == "paper (reported)"].set_index("task")
    assert paper.loc["speaker", "accuracy_change"] == pytest.approx(0.0122)


# ----------------------------------------------------------------------------- the split


def test_pipeline_re_exports_the_tables_and_the_reported_numbers():
    """pipeline runs experiments; tables reshapes; reported holds the paper's numbers. A chapter
    still reaches every name as pipeline.<name>, and it is the same object."""
    for module in (tables, reported):
        for name in module.__all__:
            if name == "SOURCE":
                continue
            assert getattr(pipeline, name) is getattr(module, name), name
            assert name in pipeline.__all__, name
    defined_here = {name for name in pipeline.__all__ if getattr(getattr(pipeline, name), "__module__", "")
                    == "convexlab.pipeline"}
    assert not defined_here & set(tables.__all__) and not defined_here & set(reported.__all__)


def test_tables_and_reported_run_nothing():
    """The reshaping module imports no module that loads models or data (families is pure data);
    reported imports no convexlab."""
    import ast

    for module, allowed in ((tables, {"convexity", "families", "profiles", "reported", "timing"}), (reported, set())):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {node.module.split(".")[1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("convexlab.")}
        assert imported <= allowed, (module.__name__, imported - allowed)


# ----------------------------------------------------------------------------- table helpers


def _curve(model: str, concept: str, scores, stage: str = "pretrained", task: str | None = None) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "family": "hubert", "task": task or concept, "concept": concept,
                         "stage": stage, "layer": np.arange(len(scores)), "score": scores,
                         "p_best": np.full(len(scores), 1 / len(scores))})


def test_best_layers_takes_the_argmax_and_the_shallower_layer_on_ties():
    table = pd.concat([_curve("m", "word", [0.1, 0.5, 0.9, 0.9, 0.2]), _curve("m", "speaker", [0.3, 0.8, 0.1])])
    best = pipeline.best_layers(table).set_index("concept")
    assert best.loc["word", "best_layer"] == 2  # tie between layers 2 and 3
    assert best.loc["word", "n_layers"] == 4 and best.loc["word", "relative_depth"] == pytest.approx(0.5)
    assert best.loc["speaker", "best_layer"] == 1 and best.loc["speaker", "score"] == pytest.approx(0.8)
    assert np.isnan(best.loc["word", "ci_low"])  # no bootstrap columns in the input: NaN, not a guess


def test_best_layers_carries_the_best_layers_interval():
    curve = _curve("m", "word", [0.1, 0.7, 0.5]).assign(ci_low=[0.0, 0.6, 0.45], ci_high=[0.2, 0.8, 0.55])
    best = pipeline.best_layers(curve).iloc[0]
    assert best["best_layer"] == 1
    assert (best["ci_low"], best["ci_high"]) == (pytest.approx(0.6), pytest.approx(0.8))


def _with_interval(curve: pd.DataFrame, half_width: float = 0.02) -> pd.DataFrame:
    return curve.assign(ci_low=curve["score"] - half_width, ci_high=curve["score"] + half_width)


def test_layer_structure_table_applies_the_fixed_test_per_model():
    paper_like = [_with_interval(_curve("a", "word", [0.20, 0.25, 0.30, 0.40, 0.35, 0.30, 0.22])),
                  _with_interval(_curve("a", "speaker", [0.50, 0.55, 0.45, 0.40, 0.35, 0.30, 0.30]))]
    # words peak at the input: the structure does not hold, whatever the speakers do
    flat_words = [_with_interval(_curve("b", "word", [0.40, 0.39, 0.38, 0.37, 0.36, 0.35, 0.34])),
                  _with_interval(_curve("b", "speaker", [0.50, 0.55, 0.45, 0.40, 0.35, 0.30, 0.30]))]
    # a word peak inside the stack but within layer 0's interval does not count
    small_peak = [_with_interval(_curve("c", "word", [0.30, 0.31, 0.30, 0.29, 0.28, 0.27, 0.26])),
                  _with_interval(_curve("c", "speaker", [0.30, 0.31, 0.32, 0.60, 0.35, 0.30, 0.30]))]
    structure = pipeline.layer_structure_table(pd.concat(paper_like + flat_words + small_peak)).set_index("model")
    assert structure.loc["a", ["speaker_peak", "word_peak", "n_layers"]].tolist() == [1, 3, 6]
    assert structure["holds"].tolist() == [True, False, False]
    assert not structure.loc["b", "words_inside"] and structure.loc["b", "speakers_early"]
    assert structure.loc["c", "words_inside"] and not structure.loc["c", "words_above_input"]
    assert not structure.loc["c", "speakers_early"]  # speakers peak at layer 3 > 6 / 3
    with pytest.raises(ValueError, match="speaker"):
        pipeline.layer_structure_table(paper_like[0])
    with pytest.raises(ValueError, match="bootstrap"):
        pipeline.layer_structure_table(pd.concat([_curve("d", "word", [0.1, 0.2]), _curve("d", "speaker", [0.2, 0.1])]))


def test_convexity_change_compares_the_last_layers_and_the_best_layers():
    table = pd.concat([
        _curve("m", "word", [0.2, 0.6, 0.4], stage="pretrained", task="word"),
        _curve("m", "word", [0.2, 0.5, 0.9], stage="finetuned", task="word"),
    ])
    change = pipeline.convexity_change(table).iloc[0]
    assert change["last_before"] == pytest.approx(0.4) and change["last_after"] == pytest.approx(0.9)
    assert change["last_change"] == pytest.approx(0.5)
    assert change["best_before"] == 1 and change["best_after"] == 2


@pytest.mark.parametrize("n_layers, expected", [(1, [1]), (2, [1, 2]), (6, [1, 3, 6]), (12, [1, 6, 12]), (24, [1, 12, 24])])
def test_projection_layers_are_early_middle_last(n_layers, expected):
    assert pipeline.projection_layers(n_layers) == expected


def test_projection_layers_rejects_a_model_without_layers():
    with pytest.raises(ValueError, match="at least one"):
        pipeline.projection_layers(0)


def _toy_dataset() -> AudioDataset:
    words = ["yes", "no", "yes", "no", "yes", "no", "yes"]
    speakers = ["s2", "s2", "s1", "s1", "s3", "s3", "s1"]
    ids = tuple(f"{w}/{s}_nohash_{i}.wav" for i, (w, s) in enumerate(zip(words, speakers)))
    return AudioDataset(task="word", root=Path("/nonexistent"), clip_ids=ids, labels=tuple(words),
                        splits=("train",) * 7, words=tuple(words), speakers=tuple(speakers))


def test_example_clips_picks_distinct_speakers_for_one_word_in_sorted_order():
    dataset = _toy_dataset()
    chosen = pipeline.example_clips(dataset, word="yes", n=3)
    assert [dataset.speakers[i] for i in chosen] == ["s1", "s2", "s3"]
    assert all(dataset.words[i] == "yes" for i in chosen)
    by_speaker = pipeline.example_clips(dataset, speaker="s1", n=5)
    assert sorted(dataset.words[i] for i in by_speaker) == ["no", "yes"]  # only two distinct words exist


def test_example_clips_explains_bad_requests():
    with pytest.raises(ValueError, match="exactly one"):
        pipeline.example_clips(_toy_dataset(), word="yes", speaker="s1")
    with pytest.raises(ValueError, match="maybe"):
        pipeline.example_clips(_toy_dataset(), word="maybe")


def test_unknown_concepts_and_stages_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="speaker"):
        pipeline.concept_labels(_toy_dataset(), "emotion")
    with pytest.raises(ValueError, match="finetuned"):
        pipeline.convexity_by_layer("mini-hubert", "word", "lite", stage="distilled")


def test_concept_labels_reads_the_right_field():
    dataset = _toy_dataset()
    assert list(pipeline.concept_labels(dataset, "speaker")) == list(dataset.speakers)
    assert list(pipeline.concept_labels(dataset, "word")) == list(dataset.words)


# ----------------------------------------------------------------------------- end to end on a tiny corpus


@pytest.fixture()
def tiny_profile(tmp_path, monkeypatch):
    """A lite-synthetic profile on a tiny synthetic corpus, with its own empty cache."""
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return convexlab.get_profile("lite-synthetic", n_words=3, n_speakers=5, n_repetitions=8, min_utterances=4,
                                 n_neighbors=3, max_pairs=40, n_bootstrap=4, batch_size=8)


@pytest.fixture()
def random_model_dir(tmp_path) -> str:
    """A randomly initialised miniature HuBERT saved as a local folder (no pretraining, no network)."""
    from convexlab.models import load_model

    folder = tmp_path / "random-mini-hubert"
    load_model("mini-hubert", pretrained=False, seed=0).save_pretrained(folder)
    return str(folder)


def test_analysis_dataset_holds_only_clips_that_finetuning_never_trains_on(tiny_profile):
    held_out = pipeline.analysis_dataset("word", tiny_profile)
    assert len(held_out) > 0 and "train" not in set(held_out.splits)
    full = data.load_task("word", tiny_profile)
    assert len(held_out) == sum(split != "train" for split in full.splits)
    speakers = pipeline.analysis_dataset("speaker", tiny_profile)
    assert set(speakers.splits) == {"test"}


def test_convexity_by_layer_is_tidy_bounded_and_cached(tiny_profile, random_model_dir):
    table = pipeline.convexity_by_layer(random_model_dir, "word", tiny_profile)
    n_layers = 6  # the miniature's transformer layers
    assert list(table["layer"]) == list(range(n_layers + 1))
    assert set(table.columns) >= {"model", "family", "task", "concept", "stage", "layer", "score", "ci_low",
                                  "ci_high", "p_best"}
    assert (table["concept"] == "word").all() and (table["stage"] == "pretrained").all()
    assert table["family"].iloc[0] == "hubert"
    assert table["score"].between(0, 1).all()
    assert (table["ci_low"] <= table["ci_high"]).all()
    assert table["p_best"].sum() == pytest.approx(1.0)

    cached = list((Path(convexlab.cache_root()) / "pipeline" / "convexity").glob("*.json"))
    assert len(cached) == 1
    again = pipeline.convexity_by_layer(random_model_dir, "word", tiny_profile)
    pd.testing.assert_frame_equal(table, again)

    other_k = pipeline.convexity_by_layer(random_model_dir, "word", tiny_profile.replace(n_neighbors=4))
    assert len(list(cached[0].parent.glob("*.json"))) == 2  # another k is another result, not a stale hit
    assert list(other_k["layer"]) == list(table["layer"])

    layer = pipeline.choose_layer(random_model_dir, "word", tiny_profile)
    assert layer == max(1, int(table.loc[table["score"].idxmax(), "layer"]))


def test_inference_by_depth_times_every_depth_and_splits_the_cost(tiny_profile, random_model_dir):
    by_depth = pipeline.inference_by_depth(random_model_dir, tiny_profile, batch_size=2, n_repeats=2)
    assert by_depth["num_layers"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (by_depth["time_low"] <= by_depth["time_ms"]).all() and (by_depth["time_ms"] <= by_depth["time_high"]).all()
    # Every layer adds the same FLOPs: a straight line in the depth.
    assert np.allclose(np.diff(by_depth["gflops_per_clip"], n=2), 0, atol=1e-9)
    assert (np.diff(by_depth["gflops_per_clip"]) > 0).all()
    split = pipeline.depth_cost_split(by_depth)
    assert split["model"].tolist() == [random_model_dir]
    row = split.iloc[0]
    fixed_gflops = by_depth["gflops_per_clip"].iloc[0] - (by_depth["gflops_per_clip"].iloc[1] - by_depth["gflops_per_clip"].iloc[0])
    assert row["fixed_flop_share"] == pytest.approx(fixed_gflops / by_depth["gflops_per_clip"].iloc[-1])
    assert 0 < row["fixed_flop_share"] < 1
    # Times are measured (no sign asserted: a loaded machine may jitter more than a tiny layer costs).
    assert np.isfinite(row[["fixed_ms", "ms_per_layer", "fixed_time_share", "layer_gflop_per_s"]].astype(float)).all()
    with pytest.raises(ValueError, match="outside 0..6"):
        pipeline.inference_by_depth(random_model_dir, tiny_profile, depths=[7])


def test_overwritten_weights_and_another_dtype_get_their_own_table(tiny_profile, random_model_dir):
    """Regression: the table was keyed by the model's name without its weights or the dtype, so a
    checkpoint overwritten in place, or a bfloat16 profile, got the old float32 table back."""
    from convexlab.models import load_model

    tables = Path(convexlab.cache_root()) / "pipeline" / "convexity"
    before = pipeline.convexity_by_layer(random_model_dir, "word", tiny_profile)
    load_model("mini-hubert", pretrained=False, seed=1).save_pretrained(random_model_dir)  # other weights, same folder
    after = pipeline.convexity_by_layer(random_model_dir, "word", tiny_profile)
    assert len(list(tables.glob("*.json"))) == 2
    assert not np.allclose(before["score"], after["score"])
    pipeline.convexity_by_layer(random_model_dir, "word", tiny_profile.replace(dtype="bfloat16"))
    assert len(list(tables.glob("*.json"))) == 3


def test_finetuned_table_follows_every_finetuning_field(tiny_profile, random_model_dir):
    """Regression: finetune_head_learning_rate and finetune_spec_augment were left out of the finetuned
    table's key: a new finetuning run was made, but the old run's table was returned."""
    profile = tiny_profile.replace(finetune_epochs=1.0, max_train_per_class=4)
    root = Path(convexlab.cache_root())
    pipeline.convexity_by_layer(random_model_dir, "word", profile, stage="finetuned")
    for change in ({"finetune_head_learning_rate": 5e-3}, {"finetune_spec_augment": True}):
        pipeline.convexity_by_layer(random_model_dir, "word", profile.replace(**change), stage="finetuned")
    assert len(list((root / "runs").iterdir())) == 3
    assert len(list((root / "pipeline" / "convexity").glob("*.json"))) == 3
    run = pipeline.finetuned_model(random_model_dir, "word", profile)
    from convexlab.finetune import finetune_run_key

    assert run.key == finetune_run_key(random_model_dir, "word", profile)  # the table's key names this very run


def test_cut_study_measures_every_rule_on_the_frontier_and_reuses_the_cached_runs(tiny_profile, random_model_dir,
                                                                                   monkeypatch):
    from convexlab import frontier as F

    profile = tiny_profile.replace(finetune_epochs=1.0, finetune_batch_size=4, max_train_per_class=4)
    study = pipeline.cut_study(profile, models=[random_model_dir], tasks=["word"])
    table = study.table
    rules = [rule.name for rule in F.RULES]
    assert list(table["rule"]) == rules and (table["model"] == random_model_dir).all()
    assert (table["task"] == "word").all() and (table["n_layers"] == 6).all()
    assert table["depth"].between(1, 6).all()
    frontier = study.frontiers[(random_model_dir, "word")]
    assert list(frontier.table["depth"]) == [1, 2, 3, 4, 5, 6]
    by_rule = table.set_index("rule")
    assert by_rule.loc["keep-all", "depth"] == 6 and by_rule.loc["keep-half", "depth"] == 3
    assert by_rule.loc["keep-all", "gap_to_full"] == 0 and by_rule.loc["keep-all", "flops_saved"] == 0
    assert by_rule.loc["keep-all", "train_time_saved"] == pytest.approx(0)
    # The paper's rule picks the pruning chapter's layer.
    assert by_rule.loc["graph-convexity", "depth"] == pipeline.choose_layer(random_model_dir, "word", profile)
    assert (table["oracle_depth"] == frontier.oracle_depth).all()
    assert (table["depth_from_oracle"] == table["depth"] - frontier.oracle_depth).all()
    accuracy = frontier.table.set_index("depth")["accuracy"]
    np.testing.assert_allclose(table["accuracy"], accuracy.loc[table["depth"]].to_numpy())
    np.testing.assert_allclose(table["gap_to_full"], accuracy.loc[6] - table["accuracy"])
    assert (table["within_tolerance"] == (table["gap_to_full"] <= 0.01 + 1e-12)).all()
    assert (table["gap_to_frontier"] >= 0).all()
    assert (table["flops_saved"] >= 0).all() and (table.sort_values("depth")["flops_saved"].diff().dropna() <= 0).all()
    frontiers = study.frontier_table()
    assert len(frontiers) == 6 and frontiers["oracle"].sum() == 1

    summary = pipeline.cut_rule_summary(table).set_index("rule")
    assert list(summary.index) == rules and (summary["pairs"] == 1).all()
    assert summary.loc["keep-all", "within_tolerance"] == 1

    # Second call: the picks come from the pipeline cache and no depth is finetuned again.
    from transformers import Trainer

    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("a cached depth was finetuned again"))
    monkeypatch.setattr(pipeline, "model_embeddings", lambda *a, **k: pytest.fail("the picks were not cached"))
    again = pipeline.cut_study(profile, models=[random_model_dir], tasks=["word"])
    pd.testing.assert_frame_equal(again.table, table)
