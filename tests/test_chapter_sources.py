"""The chapters as a reader sees them, checked on their sources (fast: nothing is executed).

- the ``parameters`` cell is hidden behind a toggle (``hide-cell``): it stays in the notebook for
  papermill, and the runner keeps papermill's injected copy off the page (``remove-cell``);
- every figure cell shows its figure and folds its plotting code behind a toggle (``hide-input``);
- the graph-convexity formula is labelled once, and the chapters that use it reference the label.
"""

from __future__ import annotations

import re

import jupytext
import pytest

from convexlab.book import book_root, chapter_names

ROOT = book_root()
CHAPTERS = chapter_names(ROOT)
LABEL = "eq-graph-convexity"
PLOTTING = re.compile(r"plt\.show\(\)|\bplots\.plot_|\bplot_convexity_graph\(|\bsns\.")


def _notebook(chapter: str):
    return jupytext.read(ROOT / "book" / f"{chapter}.md")


def _code_cells(chapter: str):
    return [cell for cell in _notebook(chapter).cells if cell.cell_type == "code"]


def _text(chapter: str) -> str:
    return (ROOT / "book" / f"{chapter}.md").read_text()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_parameters_cell_is_hidden_on_the_page(chapter):
    first = _code_cells(chapter)[0]
    tags = first.metadata.get("tags", [])
    assert "parameters" in tags, f"{chapter}: the first code cell must be the parameters cell"
    assert "hide-cell" in tags, f"{chapter}: tag the parameters cell hide-cell (it repeats on every page)"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_figure_cells_fold_their_code(chapter):
    unfolded = []
    for cell in _code_cells(chapter):
        figure = "figure" in cell.metadata.get("mystnb", {})
        if (figure or PLOTTING.search(cell.source)) and "hide-input" not in cell.metadata.get("tags", []):
            unfolded.append(cell.source.strip().splitlines()[-1])
    assert unfolded == [], f"{chapter}: plotting cells without the hide-input tag: {unfolded}"


def test_every_figure_cell_is_a_plotting_cell():
    """The two rules agree: a cell with a figure caption plots (else the caption has nothing to label)."""
    for chapter in CHAPTERS:
        for cell in _code_cells(chapter):
            if "figure" in cell.metadata.get("mystnb", {}):
                assert PLOTTING.search(cell.source), (chapter, cell.source[:80])


def test_the_convexity_formula_is_labelled_once_and_referenced():
    defined = {chapter: len(re.findall(r"^\$\$ \(" + LABEL + r"\)$", _text(chapter), flags=re.M)) for chapter in CHAPTERS}
    assert sum(defined.values()) == 1 and defined["intro"] == 1, defined
    referenced = {chapter for chapter in CHAPTERS if "{eq}`" + LABEL + "`" in _text(chapter)}
    # the chapters that measure or prune by graph convexity point back to the formula
    assert {"convexity", "layers", "pruning", "where-to-cut"} <= referenced, referenced
    for chapter in CHAPTERS:
        for label in re.findall(r"\{eq\}`([^`]+)`", _text(chapter)):
            assert label == LABEL, f"{chapter} references an unknown equation {label!r}"
