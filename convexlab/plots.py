"""Figures and tables for the book: one look for every model family and every concept.

Every chapter draws with these helpers so that wav2vec2 is the same colour, marker and line
style in chapter 4 as in chapter 6, and "word" and "speaker" keep their colours throughout.
Colours come from seaborn's colour-blind palette; each style also has its own marker and line
style so that the figures stay readable when printed in black and white.

Input tables are the tidy ``pandas.DataFrame`` objects produced by :mod:`convexlab.pipeline`
(one row per model, concept and layer); the helpers only draw, they compute nothing that a
reader would need to trust.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from pandas.io.formats.style import Styler
from convexlab.convexity import best_layer
from convexlab.families import SAMPLE_RATE, TASKS
from convexlab.models import family_or_name

__all__ = [
    "MODEL_COLORS",
    "CONCEPT_COLORS",
    "LineStyle",
    "MODEL_STYLES",
    "CONCEPT_STYLES",
    "STAGE_LINESTYLES",
    "family_style",
    "concept_style",
    "guess_family",
    "miniature_label",
    "styled_table",
    "log_mel_spectrogram",
    "project_2d",
    "plot_layerwise_convexity",
    "plot_best_layer_probability",
    "plot_models_side_by_side",
    "plot_before_after",
    "plot_inference_vs_depth",
    "plot_pruning_comparison",
    "RULE_MARKERS",
    "plot_frontier",
    "plot_spectrograms",
    "plot_projection_2d",
]

_PALETTE = sns.color_palette("colorblind").as_hex()

MODEL_COLORS: dict[str, str] = {
    "wav2vec2": _PALETTE[0],  # blue
    "wavlm": _PALETTE[1],  # orange
    "hubert": _PALETTE[2],  # green
    "ccc-wav2vec2": _PALETTE[4],  # pink-purple
}

CONCEPT_COLORS: dict[str, str] = {
    "word": _PALETTE[3],  # vermilion
    "speaker": "#3b4cc0",  # deep indigo: darker than every model colour, distinct in grey print
}

_UNKNOWN_COLOR = _PALETTE[7]  # grey for a model family the book does not know


@dataclass(frozen=True)
class LineStyle:
    """How one curve looks; passed straight to ``Axes.plot``."""

    color: str  # matplotlib colour
    marker: str  # marker symbol, distinct per family/concept for black-and-white print
    linestyle: str  # matplotlib line style, distinct per family/concept

    def kwargs(self) -> dict[str, str]:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


MODEL_STYLES: dict[str, LineStyle] = {
    "wav2vec2": LineStyle(MODEL_COLORS["wav2vec2"], "o", "-"),
    "wavlm": LineStyle(MODEL_COLORS["wavlm"], "s", "--"),
    "hubert": LineStyle(MODEL_COLORS["hubert"], "^", "-."),
    "ccc-wav2vec2": LineStyle(MODEL_COLORS["ccc-wav2vec2"], "D", ":"),
}

CONCEPT_STYLES: dict[str, LineStyle] = {
    "word": LineStyle(CONCEPT_COLORS["word"], "o", "-"),
    "speaker": LineStyle(CONCEPT_COLORS["speaker"], "s", "--"),
}

# Before/after figures keep the family's colour and vary the line: pretrained dashed, finetuned solid.
STAGE_LINESTYLES: dict[str, str] = {"pretrained": "--", "finetuned": "-", "pruned": ":"}


def guess_family(model_name: str) -> str:
    """The family ("wav2vec2", "wavlm", "hubert", "ccc-wav2vec2") a model name belongs to, or the
    name itself (drawn in grey) so that a plot never fails on an unusual name:
    :func:`convexlab.models.family_or_name`."""
    return family_or_name(model_name)


def family_style(family: str) -> LineStyle:
    """The style of a model family; grey crosses for a family the book does not know."""
    return MODEL_STYLES.get(family, LineStyle(_UNKNOWN_COLOR, "x", "-"))


def concept_style(concept: str) -> LineStyle:
    """The style of a concept ("word" or "speaker")."""
    try:
        return CONCEPT_STYLES[concept]
    except KeyError:
        raise ValueError(f"Unknown concept {concept!r}; use one of {sorted(CONCEPT_STYLES)}") from None


def miniature_label(profile: Any) -> str:
    """The note every figure of a run carries: whose results these are.

    ``profile`` is a :class:`convexlab.Profile`. For miniature models the note says plainly
    that these are not the paper's numbers; for a rehearsal (random weights under the real hub ids,
    :mod:`convexlab.rehearsal`) that they are not results at all.
    """
    if getattr(profile, "rehearsal", False):
        return f"Random-weight rehearsal (profile: {profile.name}), not results."
    if getattr(profile, "miniature", False):
        return f"Miniature-model results ({profile.name} profile), not the paper's."
    return f"Pretrained checkpoints ({profile.name} profile)."


class _Table(Styler):
    """A pandas ``Styler`` whose plain-text form is the table, not an object address.

    Executed notebooks store both the HTML and the plain-text form of a displayed object;
    the default ``Styler`` repr holds a memory address that changes on every run and would
    make output comparison (nbval) fail for no reason.
    """

    def __repr__(self) -> str:
        return self.data.to_string()


def styled_table(
    table: pd.DataFrame,
    *,
    name: str,
    precision: int = 3,
    formats: Mapping[str, str] | None = None,
    caption: str | None = None,
    hide_index: bool = False,
) -> Styler:
    """A deterministic styled table for the book.

    ``name`` becomes the HTML id (instead of a random one) so that re-executing a chapter
    gives identical output; numbers are shown with ``precision`` decimals unless ``formats``
    maps a column to its own format string (e.g. ``{"accuracy": "{:.1%}"}``). Column names may
    wrap after an underscore on the page.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"styled_table expects a pandas DataFrame, got {type(table).__name__}")
    styler = _Table(table, uuid=name, cell_ids=False)
    styler = styler.format(precision=precision, na_rep="–")
    if formats:
        unknown = sorted(set(formats) - set(table.columns))
        if unknown:
            raise ValueError(f"formats name columns {unknown} that the table lacks; columns: {list(table.columns)}")
        styler = styler.format(dict(formats), na_rep="–")
    if caption:
        styler = styler.set_caption(caption)
    if hide_index:
        styler = styler.hide(axis="index")
    # Long column names may break after their underscores, so that a table fits the book's content
    # column while showing the names the code uses (<wbr> is invisible, and absent when copied).
    return styler.format_index(_breakable_label, axis="columns")


def _breakable_label(label):
    """An HTML column label with a line-break opportunity after each underscore; non-strings as they are."""
    return html.escape(label).replace("_", "_<wbr>") if isinstance(label, str) else label


# --------------------------------------------------------------------------- audio


def _mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape (n_mels, n_fft // 2 + 1)."""
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    edges_hz = to_hz(np.linspace(to_mel(0.0), to_mel(sample_rate / 2), n_mels + 2))
    bin_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None] - lower) / (centre - lower)
    falling = (upper - bin_hz[None]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def log_mel_spectrogram(
    audio: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = 400,
    hop_length: int = 160,
    n_mels: int = 64,
    top_db: float = 80.0,
) -> np.ndarray:
    """Log-mel power spectrogram in dB of a mono clip.

    ``audio``: float array (T,). Returns float32 (n_mels, frames) with
    ``frames = 1 + (T - n_fft) // hop_length`` (25 ms windows every 10 ms at 16 kHz), clipped
    to ``top_db`` below the loudest bin so that silence does not dominate the colour scale.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1:
        raise ValueError(f"log_mel_spectrogram expects one mono clip of shape (T,), got shape {audio.shape}")
    if audio.shape[0] < n_fft:
        raise ValueError(f"Clip of {audio.shape[0]} samples is shorter than one window (n_fft={n_fft}); pad it first")
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop_length]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2  # (frames, n_fft//2+1)
    mel = _mel_filterbank(n_mels, n_fft, sample_rate) @ power.T  # (n_mels, frames)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - top_db).astype(np.float32)


def project_2d(X: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D view of embeddings ``X`` (N, D) -> (N, 2).

    ``"pca"`` (default) is deterministic and fast; ``"tsne"`` shows local neighbourhoods
    better but depends on ``seed``. The data are centred and scaled per dimension first so
    that a few large dimensions (common in speech models) do not decide the view alone.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 3:
        raise ValueError(f"project_2d expects embeddings of shape (N>=3, D), got shape {X.shape}")
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(X)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, svd_solver="full").fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (X.shape[0] - 1) / 3)
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)
    raise ValueError(f"Unknown projection method {method!r}; use 'pca' or 'tsne'")


# --------------------------------------------------------------------------- helpers


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} expects a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what} needs columns {missing}, which the table lacks (it has {list(table.columns)}); "
            "build it with convexlab.pipeline (e.g. convexity_by_layer)"
        )


def _family_column(table: pd.DataFrame) -> pd.Series:
    if "family" in table.columns:
        return table["family"].astype(str)
    if "model" in table.columns:
        return table["model"].map(guess_family)
    return pd.Series(["model"] * len(table), index=table.index)


def _add_note(fig: plt.Figure, note: str | None) -> None:
    """The provenance note (e.g. "Miniature-model results ...") in the figure's bottom-left corner."""
    if note:
        fig.text(0.01, 0.005, note, ha="left", va="bottom", fontsize="small", style="italic", color="0.3")


def _draw_curve(ax: plt.Axes, rows: pd.DataFrame, style: dict, *, label: str, band: bool, mark_best: bool) -> None:
    rows = rows.sort_values("layer")
    ax.plot(rows["layer"], rows["score"], label=label, markersize=5, linewidth=1.6, **style)
    if band and {"ci_low", "ci_high"} <= set(rows.columns) and rows["ci_low"].notna().any():
        ax.fill_between(rows["layer"], rows["ci_low"], rows["ci_high"], color=style["color"], alpha=0.15, linewidth=0)
    if mark_best and len(rows):
        best = rows[rows["layer"] == best_layer(rows)].iloc[0]
        ax.plot(
            [best["layer"]], [best["score"]], marker="*", markersize=14, color=style["color"],
            markeredgecolor="black", markeredgewidth=0.6, linestyle="none",
        )


def _layer_axis(ax: plt.Axes, layers: pd.Series) -> None:
    layers = sorted(int(v) for v in pd.unique(layers))
    step = max(1, int(np.ceil(len(layers) / 13)))  # at most ~13 tick labels, even for 24-layer models
    ax.set_xticks(layers[::step])
    ax.set_xlabel("layer (0 = input to the first transformer layer)")
    ax.grid(True, alpha=0.3)


def _resolve_hue(table: pd.DataFrame, hue: str | None) -> str | None:
    if hue is not None:
        if hue not in table.columns:
            raise ValueError(f"hue={hue!r} is not a column of the table; columns: {list(table.columns)}")
        return hue
    for candidate in ("model", "concept", "stage"):
        if candidate in table.columns and table[candidate].nunique() > 1:
            return candidate
    return None


def _style_for(hue: str | None, value: Any, rows: pd.DataFrame) -> dict:
    if hue == "concept":
        return concept_style(str(value)).kwargs()
    if hue in ("model", "family"):
        return family_style(str(_family_column(rows).iloc[0])).kwargs()
    if hue == "stage":
        base = family_style(str(_family_column(rows).iloc[0])).kwargs()
        return {**base, "linestyle": STAGE_LINESTYLES.get(str(value), "-")}
    if "concept" in rows.columns and rows["concept"].nunique() == 1:
        return concept_style(str(rows["concept"].iloc[0])).kwargs()
    return family_style(str(_family_column(rows).iloc[0])).kwargs()


# --------------------------------------------------------------------------- convexity figures


def plot_layerwise_convexity(
    table: pd.DataFrame,
    *,
    ax: plt.Axes | None = None,
    hue: str | None = None,
    band: bool = True,
    mark_best: bool = True,
    title: str | None = None,
    legend: bool = True,
) -> plt.Axes:
    """Graph convexity against layer, one curve per ``hue`` value, with bootstrap bands.

    ``table``: tidy rows with columns ``layer`` and ``score``, optionally ``ci_low``/``ci_high``
    (drawn as a shaded band) and ``model``/``family``/``concept``/``stage`` (used for colours).
    ``hue`` defaults to the first of model, concept, stage that varies. The most convex layer
    of each curve is marked with a star.
    """
    _require_columns(table, ["layer", "score"], "plot_layerwise_convexity")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    hue = _resolve_hue(table, hue)
    groups = [(None, table)] if hue is None else list(table.groupby(hue, sort=False))
    for value, rows in groups:
        label = str(value) if value is not None else (str(rows["model"].iloc[0]) if "model" in rows else "convexity")
        _draw_curve(ax, rows, _style_for(hue, value, rows), label=label, band=band, mark_best=mark_best)
    _layer_axis(ax, table["layer"])
    ax.set_ylabel("graph convexity")
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(title)
    if legend and hue is not None:
        ax.legend(fontsize="small", frameon=False)
    return ax


def plot_best_layer_probability(
    table: pd.DataFrame, *, ax: plt.Axes | None = None, hue: str | None = None, title: str | None = None
) -> plt.Axes:
    """Bars: the bootstrap probability that each layer is the most convex one.

    ``table`` needs columns ``layer`` and ``p_best`` (probabilities summing to 1 per curve).
    """
    _require_columns(table, ["layer", "p_best"], "plot_best_layer_probability")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.6))
    hue = _resolve_hue(table, hue)
    groups = [(None, table)] if hue is None else list(table.groupby(hue, sort=False))
    width = 0.8 / len(groups)
    for i, (value, rows) in enumerate(groups):
        style = _style_for(hue, value, rows)
        rows = rows.sort_values("layer")
        offset = (i - (len(groups) - 1) / 2) * width
        hatch = {"-": None, "--": "//", "-.": "..", ":": "xx"}.get(style["linestyle"])
        ax.bar(rows["layer"] + offset, rows["p_best"], width=width, color=style["color"], hatch=hatch,
               edgecolor="white", label=str(value) if value is not None else None)
    _layer_axis(ax, table["layer"])
    ax.set_ylabel("P(best layer)")
    ax.set_ylim(0, 1.02)
    if title:
        ax.set_title(title)
    if hue is not None:
        ax.legend(fontsize="small", frameon=False)
    return ax


def plot_models_side_by_side(
    table: pd.DataFrame,
    *,
    concepts: Sequence[str] | None = None,
    note: str | None = None,
    band: bool = True,
    figsize: tuple[float, float] | None = None,
) -> plt.Figure:
    """One panel per concept (word, speaker), one curve per model: where each model keeps what.

    ``table``: tidy rows with columns model, concept, layer, score (and optionally family,
    ci_low, ci_high). ``note`` is printed in the corner (use :func:`miniature_label`).
    """
    _require_columns(table, ["model", "concept", "layer", "score"], "plot_models_side_by_side")
    concepts = list(concepts) if concepts is not None else [c for c in TASKS if c in set(table["concept"])]
    if not concepts:
        raise ValueError(f"No concept to draw: the table's concepts are {sorted(set(table['concept']))}")
    fig, axes = plt.subplots(1, len(concepts), figsize=figsize or (5.2 * len(concepts), 3.8), sharey=True, squeeze=False)
    for ax, concept in zip(axes[0], concepts):
        rows = table[table["concept"] == concept]
        plot_layerwise_convexity(rows, ax=ax, hue="model", band=band, legend=False, title=f"{concept} convexity")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, 1.02), fontsize="small")
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    _add_note(fig, note)
    return fig


def plot_before_after(table: pd.DataFrame, *, note: str | None = None, band: bool = True) -> plt.Figure:
    """Convexity per layer before (dashed) and after (solid) finetuning.

    ``table``: tidy rows with columns model, task (what the model was finetuned for), concept
    (what is measured), stage ("pretrained"/"finetuned"), layer, score. Rows of the grid are
    tasks, columns are concepts, colours are model families.
    """
    _require_columns(table, ["model", "task", "concept", "stage", "layer", "score"], "plot_before_after")
    tasks = [t for t in TASKS if t in set(table["task"])] or sorted(set(table["task"]))
    concepts = [c for c in TASKS if c in set(table["concept"])] or sorted(set(table["concept"]))
    fig, axes = plt.subplots(len(tasks), len(concepts), figsize=(5.0 * len(concepts), 3.3 * len(tasks)),
                             sharey=True, squeeze=False)
    for i, task in enumerate(tasks):
        for j, concept in enumerate(concepts):
            ax = axes[i][j]
            cell = table[(table["task"] == task) & (table["concept"] == concept)]
            for (model, stage), rows in cell.groupby(["model", "stage"], sort=False):
                style = family_style(str(_family_column(rows).iloc[0])).kwargs()
                style["linestyle"] = STAGE_LINESTYLES.get(str(stage), "-")
                if stage != "finetuned":
                    style["marker"] = "none"  # keep the "before" curves quiet
                _draw_curve(ax, rows, style, label=f"{model} ({stage})", band=band and stage == "finetuned",
                            mark_best=False)
            _layer_axis(ax, cell["layer"] if len(cell) else table["layer"])
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"finetuned for {task} · {concept} convexity", fontsize="medium")
            if j == 0:
                ax.set_ylabel("graph convexity")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, 1.0), fontsize="small")
    rows_of_legend = int(np.ceil(len(labels) / 4))
    fig.tight_layout(rect=(0, 0.03, 1, 1 - 0.045 * rows_of_legend * 2 / len(tasks)))
    _add_note(fig, note)
    return fig


# --------------------------------------------------------------------------- pruning figures


def plot_inference_vs_depth(
    table: pd.DataFrame,
    *,
    ax: plt.Axes | None = None,
    chosen_layers: Mapping[str, int] | None = None,
    note: str | None = None,
) -> plt.Axes:
    """Inference time against the number of transformer layers kept, one curve per model.

    ``table``: columns model, num_layers, time_ms (median) and optionally time_low/time_high
    (spread, drawn as error bars). ``chosen_layers`` maps a model to the depth pruning chose,
    marked with a star.
    """
    _require_columns(table, ["model", "num_layers", "time_ms"], "plot_inference_vs_depth")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    for model, rows in table.groupby("model", sort=False):
        rows = rows.sort_values("num_layers")
        style = family_style(str(_family_column(rows).iloc[0])).kwargs()
        yerr = None
        if {"time_low", "time_high"} <= set(rows.columns):
            yerr = np.vstack([rows["time_ms"] - rows["time_low"], rows["time_high"] - rows["time_ms"]])
            yerr = np.clip(yerr, 0, None)
        ax.errorbar(rows["num_layers"], rows["time_ms"], yerr=yerr, label=str(model), capsize=3, markersize=5, **style)
        if chosen_layers and model in chosen_layers:
            chosen = rows[rows["num_layers"] == chosen_layers[model]]
            ax.plot(chosen["num_layers"], chosen["time_ms"], marker="*", markersize=14, linestyle="none",
                    color=style["color"], markeredgecolor="black", markeredgewidth=0.6)
    ax.set_xlabel("transformer layers kept")
    ax.set_ylabel("inference time per batch (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    if note:
        _add_note(ax.figure, note)
    return ax


def plot_pruning_comparison(
    ours: pd.DataFrame,
    paper: pd.DataFrame | None = None,
    *,
    metrics: Sequence[str] = ("accuracy_change", "train_time_change", "inference_time_change"),
    note: str | None = None,
) -> plt.Figure:
    """Pruned vs full model, in percent change, per task and metric; the paper's figures beside ours.

    ``ours``: rows with columns model, task and the ``metrics`` (fractions, −0.25 % = −0.0025).
    ``paper``: same metric columns with a task column (from :func:`convexlab.reported.paper_table`),
    drawn as hatched grey bars labelled as the paper's.
    """
    _require_columns(ours, ["model", "task", *metrics], "plot_pruning_comparison")
    tasks = [t for t in TASKS if t in set(ours["task"])]
    titles = {"accuracy_change": "accuracy", "train_time_change": "training time",
              "inference_time_change": "inference time"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    models = list(dict.fromkeys(ours["model"]))
    n_bars = len(models) + (1 if paper is not None else 0)
    width = 0.8 / n_bars
    for ax, metric in zip(axes[0], metrics):
        for i, model in enumerate(models):
            rows = ours[ours["model"] == model].set_index("task").reindex(tasks)
            style = family_style(str(_family_column(ours[ours["model"] == model]).iloc[0]))
            ax.bar(np.arange(len(tasks)) + (i - (n_bars - 1) / 2) * width, 100 * rows[metric].to_numpy(dtype=float),
                   width=width, color=style.color, label=str(model), edgecolor="white")
        if paper is not None:
            rows = paper.set_index("task").reindex(tasks)
            ax.bar(np.arange(len(tasks)) + (n_bars - 1 - (n_bars - 1) / 2) * width,
                   100 * rows[metric].to_numpy(dtype=float), width=width, color="0.75", hatch="//",
                   edgecolor="0.3", label="paper (base models, reported)")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(tasks)), tasks)
        ax.set_title(f"change in {titles.get(metric, metric)}")
        ax.set_ylabel("pruned vs full (%)")
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(5, len(labels)), frameon=False, fontsize="small",
               bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0.04, 1, 0.92))
    _add_note(fig, note)
    return fig


# One marker per layer-selection rule of convexlab.frontier, distinct in black-and-white print.
RULE_MARKERS: dict[str, str] = {
    "graph-convexity": "*",
    "euclidean-convexity": "P",
    "linear-probe": "D",
    "cka-redundancy": "X",
    "keep-all": "s",
    "keep-half": "v",
}


def plot_frontier(frontier: Any, picks: pd.DataFrame, *, ax: plt.Axes | None = None,
                  note: str | None = None) -> plt.Axes:
    """Accuracy against transformer layers kept, with each rule's pick marked.

    ``frontier``: a :class:`convexlab.frontier.Frontier` (its ``table`` has depth, accuracy and
    accuracy_std; error bars show the spread over seeds when there are several). ``picks``:
    :func:`convexlab.frontier.pick_depths`'s table (rule, depth). The shaded band is the oracle's
    tolerance below the full model's accuracy; the dotted line marks the oracle depth. Rules that
    pick the same depth are stacked above the curve so that every marker stays visible.
    """
    _require_columns(frontier.table, ["depth", "accuracy"], "plot_frontier")
    _require_columns(picks, ["rule", "depth"], "plot_frontier")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    table = frontier.table.sort_values("depth")
    style = family_style(guess_family(frontier.model_name)).kwargs()
    accuracy = 100 * table["accuracy"].to_numpy(dtype=float)
    spread = 100 * table["accuracy_std"].to_numpy(dtype=float) if "accuracy_std" in table else None
    if spread is not None and np.isnan(spread).all():
        spread = None
    ax.errorbar(table["depth"], accuracy, yerr=spread, capsize=3, markersize=5, label=str(frontier.model_name), **style)
    full = 100 * frontier.full_accuracy
    ax.axhspan(full - 100 * frontier.tolerance, full, color="0.85", alpha=0.6, linewidth=0,
               label=f"within {100 * frontier.tolerance:g} pt of the full model")
    ax.axvline(frontier.oracle_depth, color="0.4", linestyle=":", linewidth=1, label="oracle depth")
    by_depth = dict(zip(table["depth"].astype(int), accuracy))
    span = max(float(np.nanmax(accuracy) - np.nanmin(accuracy)), 1.0)
    stacked: dict[int, int] = {}
    for pick in picks.itertuples():
        depth = int(pick.depth)
        if depth not in by_depth:
            continue  # the frontier did not run that depth
        level = stacked.get(depth, 0)
        stacked[depth] = level + 1
        ax.plot([depth], [by_depth[depth] + 0.06 * span * level], marker=RULE_MARKERS.get(pick.rule, "o"),
                markersize=11, linestyle="none", markerfacecolor="white" if level else style["color"],
                markeredgecolor="black", markeredgewidth=0.8, label=f"{pick.rule} (depth {depth})")
    ax.set_xticks(table["depth"].astype(int).tolist())
    ax.set_xlabel("transformer layers kept")
    ax.set_ylabel(f"{frontier.task} accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curve
    if note:
        _add_note(ax.figure, note)
    return ax


# --------------------------------------------------------------------------- data figures


def plot_spectrograms(
    clips: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    sample_rate: int = SAMPLE_RATE,
    ncols: int | None = None,
    suptitle: str | None = None,
    note: str | None = None,
) -> plt.Figure:
    """Log-mel spectrograms of several clips on one shared colour scale.

    ``clips``: sequence of float arrays (T,) at ``sample_rate``; ``titles``: one per clip.
    A shared scale makes loudness comparable across panels.
    """
    if len(clips) == 0 or len(clips) != len(titles):
        raise ValueError(f"plot_spectrograms needs one title per clip; got {len(clips)} clips and {len(titles)} titles")
    spectrograms = [log_mel_spectrogram(c, sample_rate=sample_rate) for c in clips]
    vmin = min(float(s.min()) for s in spectrograms)
    vmax = max(float(s.max()) for s in spectrograms)
    ncols = ncols or min(len(clips), 4)
    nrows = int(np.ceil(len(clips) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.4 * nrows + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    hop_seconds = 160 / sample_rate
    image = None
    for ax, spectrogram, title in zip(axes.flat, spectrograms, titles):
        extent = (0, spectrogram.shape[1] * hop_seconds, 0, spectrogram.shape[0])
        image = ax.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                          extent=extent)
        ax.set_title(title, fontsize="medium")
    for ax in axes.flat[len(clips):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("mel band")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.03, 0.9, 1))
    colorbar_ax = fig.add_axes((0.91, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=colorbar_ax, label="power (dB)")
    _add_note(fig, note)
    return fig


def plot_projection_2d(
    X: np.ndarray,
    labels: Sequence[Any],
    *,
    ax: plt.Axes | None = None,
    method: str = "pca",
    seed: int = 0,
    title: str | None = None,
    legend: bool = True,
    max_legend: int = 12,
) -> plt.Axes:
    """Scatter of a 2-D projection of ``X`` (N, D), coloured by ``labels`` (N,).

    Classes are sorted so that colours do not depend on the order of the points; with more
    than ``max_legend`` classes the legend is left out.
    """
    X = np.asarray(X)
    labels = np.asarray([str(label) for label in labels])
    if X.shape[0] != labels.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but labels has {labels.shape[0]} entries; pass one label per row")
    points = project_2d(X, method=method, seed=seed)
    classes = sorted(set(labels))
    palette = sns.color_palette("husl" if len(classes) > 10 else "colorblind", len(classes))
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*"]
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    for i, cls in enumerate(classes):
        mask = labels == cls
        ax.scatter(points[mask, 0], points[mask, 1], s=12, color=palette[i], marker=markers[i % len(markers)],
                   label=cls, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    if title:
        ax.set_title(title, fontsize="medium")
    if legend and len(classes) <= max_legend:
        ax.legend(fontsize="x-small", frameon=False, markerscale=1.2, loc="best")
    return ax
