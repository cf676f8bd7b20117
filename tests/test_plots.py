"""convexlab.plots: consistent styles, deterministic tables, correct spectrograms and projections."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import convexlab  # noqa: E402
from convexlab import pipeline, plots  # noqa: E402

FAMILIES = ["wav2vec2", "wavlm", "hubert", "ccc-wav2vec2"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _convexity_table(seed: int = 0, n_layers: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for model, family in [("mini-wav2vec2", "wav2vec2"), ("mini-hubert", "hubert")]:
        for concept in ("word", "speaker"):
            scores = rng.uniform(0.1, 0.9, n_layers + 1)
            for layer, score in enumerate(scores):
                rows.append(dict(model=model, family=family, task=concept, concept=concept, stage="pretrained",
                                 layer=layer, score=score, ci_low=score - 0.05, ci_high=score + 0.05,
                                 p_best=1.0 / (n_layers + 1)))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- styles


def test_every_family_and_concept_has_a_distinct_look_for_colour_and_for_print():
    styles = [plots.MODEL_STYLES[f] for f in FAMILIES]
    assert len({s.color for s in styles}) == 4
    assert len({s.marker for s in styles}) == 4  # black-and-white print tells them apart by marker...
    assert len({s.linestyle for s in styles}) == 4  # ...and by line style
    concept_colors = {plots.CONCEPT_COLORS["word"], plots.CONCEPT_COLORS["speaker"]}
    assert len(concept_colors) == 2
    assert not concept_colors & set(plots.MODEL_COLORS.values())
    for color in list(plots.MODEL_COLORS.values()) + list(concept_colors):
        assert mcolors.is_color_like(color)


def test_family_style_of_unknown_family_is_grey_not_an_error():
    style = plots.family_style("some-new-model")
    assert style.marker == "x"
    assert style.color not in plots.MODEL_COLORS.values()


def test_concept_style_rejects_unknown_concept_with_the_choices():
    with pytest.raises(ValueError, match="speaker"):
        plots.concept_style("emotion")


@pytest.mark.parametrize(
    "name, family",
    [("vasista22/ccc-wav2vec2-base", "ccc-wav2vec2"), ("facebook/wav2vec2-base", "wav2vec2"),
     ("microsoft/wavlm-large", "wavlm"), ("mini-hubert", "hubert"), ("mini-ccc-wav2vec2", "ccc-wav2vec2")],
)
def test_guess_family_recognises_hub_ids_and_miniatures(name, family):
    assert plots.guess_family(name) == family


def test_miniature_label_marks_lite_results_as_not_the_papers():
    lite = plots.miniature_label(convexlab.get_profile("lite"))
    paper = plots.miniature_label(convexlab.get_profile("paper"))
    assert "Miniature" in lite and "not the paper's" in lite and "lite" in lite
    assert "Miniature" not in paper and "paper" in paper
    rehearsal = plots.miniature_label(convexlab.get_profile("paper", rehearsal=True))
    assert rehearsal == "Random-weight rehearsal (profile: paper), not results."


# ----------------------------------------------------------------------------- tables


def test_styled_table_renders_identically_twice_and_has_a_plain_text_form_without_addresses():
    table = pd.DataFrame({"model": ["a", "b"], "score": [0.123456, 0.9]})
    first = plots.styled_table(table, name="scores", formats={"score": "{:.2f}"})
    second = plots.styled_table(table.copy(), name="scores", formats={"score": "{:.2f}"})
    assert first.to_html() == second.to_html()
    assert 'id="T_scores"' in first.to_html()
    assert "0.12" in first.to_html() and "0.123456" not in first.to_html()
    assert "0x" not in repr(first) and "0.123456" in repr(first)


def test_styled_table_headers_may_wrap_after_underscores_and_keep_their_names():
    table = pd.DataFrame({"depth_from_oracle": [1], "a<b": [2], 3: [4]})
    html = plots.styled_table(table, name="t", hide_index=True).to_html()
    headers = re.findall(r"<th[^>]*>(.*?)</th>", html)
    assert headers == ["depth_<wbr>from_<wbr>oracle", "a&lt;b", "3"]  # escaped, and non-strings untouched
    assert re.sub(r"<wbr>", "", headers[0]) == "depth_from_oracle"  # what a reader copies
    assert "<wbr>" not in repr(plots.styled_table(table, name="t"))  # the notebook's text form is the data


def test_styled_table_names_the_unknown_column_in_formats():
    with pytest.raises(ValueError, match="accuracy"):
        plots.styled_table(pd.DataFrame({"score": [1.0]}), name="t", formats={"accuracy": "{:.1%}"})


# ----------------------------------------------------------------------------- audio and projections


def _tone(freq: float, seconds: float = 1.0, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_log_mel_spectrogram_shape_and_a_higher_tone_lands_in_a_higher_band():
    low = plots.log_mel_spectrogram(_tone(500.0), n_mels=40)
    high = plots.log_mel_spectrogram(_tone(4000.0), n_mels=40)
    assert low.shape == high.shape == (40, 1 + (16_000 - 400) // 160)
    assert low.dtype == np.float32
    low_band = int(np.argmax(low.mean(axis=1)))
    high_band = int(np.argmax(high.mean(axis=1)))
    assert high_band > low_band + 5
    assert low.max() - low.min() <= 80.0 + 1e-4  # clipped to top_db


def test_log_mel_spectrogram_rejects_stereo_and_too_short_clips():
    with pytest.raises(ValueError, match="mono"):
        plots.log_mel_spectrogram(np.zeros((2, 16_000)))
    with pytest.raises(ValueError, match="pad"):
        plots.log_mel_spectrogram(np.zeros(100))


def test_project_2d_pca_is_deterministic_and_does_not_depend_on_point_order():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 7))
    order = rng.permutation(60)
    points = plots.project_2d(X)
    assert points.shape == (60, 2)
    np.testing.assert_allclose(plots.project_2d(X[order]), points[order], atol=1e-8)


def test_project_2d_keeps_two_far_apart_blobs_apart():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (30, 10)), rng.normal(0, 1, (30, 10)) + 20.0])
    first = plots.project_2d(X)[:, 0]
    assert max(first[:30]) < min(first[30:]) or max(first[30:]) < min(first[:30])


def test_project_2d_rejects_bad_shapes_and_methods():
    with pytest.raises(ValueError, match="shape"):
        plots.project_2d(np.zeros(5))
    with pytest.raises(ValueError, match="tsne"):
        plots.project_2d(np.zeros((5, 3)), method="umap")


# ----------------------------------------------------------------------------- figures


def test_layerwise_convexity_draws_one_curve_per_model_in_the_family_colour_and_stars_the_best_layer():
    table = _convexity_table()
    words = table[table["concept"] == "word"]
    ax = plots.plot_layerwise_convexity(words)
    curves = [line for line in ax.get_lines() if line.get_marker() != "*"]
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert [c.get_label() for c in curves] == ["mini-wav2vec2", "mini-hubert"]
    assert mcolors.same_color(curves[0].get_color(), plots.MODEL_COLORS["wav2vec2"])
    assert mcolors.same_color(curves[1].get_color(), plots.MODEL_COLORS["hubert"])
    for star, (_, rows) in zip(stars, words.groupby("model", sort=False)):
        best = rows.loc[rows["score"].idxmax()]
        assert star.get_xdata()[0] == best["layer"] and star.get_ydata()[0] == pytest.approx(best["score"])
    assert len(ax.collections) == 2  # one bootstrap band per curve


def test_layerwise_convexity_names_missing_columns():
    with pytest.raises(ValueError, match="score"):
        plots.plot_layerwise_convexity(pd.DataFrame({"layer": [0, 1]}))


def test_models_side_by_side_has_one_panel_per_concept_and_the_note():
    fig = plots.plot_models_side_by_side(_convexity_table(), note="Miniature-model results (lite profile)")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["word convexity", "speaker convexity"]
    assert any("Miniature" in text.get_text() for text in fig.texts)


def test_before_after_draws_pretrained_dashed_and_finetuned_solid():
    table = _convexity_table()
    both = pd.concat([table, table.assign(stage="finetuned", score=table["score"] / 2)], ignore_index=True)
    fig = plots.plot_before_after(both)
    assert len(fig.axes) == 4  # tasks x concepts
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["mini-hubert (pretrained)"].get_linestyle() == "--"
    assert lines["mini-hubert (finetuned)"].get_linestyle() == "-"


def test_best_layer_probability_bars_match_the_table():
    table = _convexity_table()
    one = table[(table["model"] == "mini-hubert") & (table["concept"] == "word")]
    ax = plots.plot_best_layer_probability(one)
    heights = [patch.get_height() for patch in ax.patches]
    np.testing.assert_allclose(heights, one.sort_values("layer")["p_best"])


def test_inference_vs_depth_marks_the_chosen_depth():
    table = pd.DataFrame({"model": ["mini-wavlm"] * 3, "num_layers": [1, 2, 3], "time_ms": [10.0, 20.0, 30.0],
                          "time_low": [9.0, 19.0, 29.0], "time_high": [11.0, 21.0, 31.0]})
    ax = plots.plot_inference_vs_depth(table, chosen_layers={"mini-wavlm": 2})
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].get_xdata()[0] == 2 and stars[0].get_ydata()[0] == 20.0


def test_pruning_comparison_shows_the_paper_as_its_own_labelled_bars():
    ours = pd.DataFrame({"model": ["mini-hubert", "mini-hubert"], "task": ["word", "speaker"],
                         "accuracy_change": [0.01, -0.02], "train_time_change": [-0.3, -0.5],
                         "inference_time_change": [-0.2, -0.6]})
    fig = plots.plot_pruning_comparison(ours, pipeline.paper_table())
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["mini-hubert", "paper (base models, reported)"]
    heights = [p.get_height() for p in fig.axes[2].patches]  # inference time: ours (2 tasks) then the paper's
    np.testing.assert_allclose(heights, [-20.0, -60.0, -25.9, -58.7])


def test_spectrograms_share_one_colour_scale():
    fig = plots.plot_spectrograms([_tone(300.0), 0.01 * _tone(3000.0)], ["loud", "quiet"])
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    assert images[0].get_clim() == images[1].get_clim()
    with pytest.raises(ValueError, match="title"):
        plots.plot_spectrograms([_tone(300.0)], ["a", "b"])


def test_projection_scatter_colours_classes_in_sorted_order_whatever_the_point_order():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    labels = np.array(["b", "a"] * 20)
    ax = plots.plot_projection_2d(X, labels)
    assert [collection.get_label() for collection in ax.collections] == ["a", "b"]
    with pytest.raises(ValueError, match="one label per row"):
        plots.plot_projection_2d(X, labels[:-1])
