"""The exercises' solutions run, so that they cannot rot as the library changes.

Every chapter's ``{admonition} Solution`` block is taken from the chapter source; its ``python``
blocks run after the setup block the chapter prints before the exercises (``import convexlab``,
``P = ...``), and its ``bash`` blocks that call the book runner run through
:func:`convexlab.book.main`, into a temporary folder. The fast tier checks that the solutions are
found and compile; running them is the book tier (they build on the chapters' cached results and
compute a few tables and one finetuning run of their own: minutes on a cold cache).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from convexlab.book import book_root, chapter_names

ROOT = book_root()
SOLUTION = re.compile(r"^````\{admonition\} Solution\n(.*?)^````$", flags=re.S | re.M)
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```$", flags=re.S | re.M)


@dataclass(frozen=True)
class Solution:
    chapter: str
    number: int  # 1-based, in the chapter's order
    python: tuple[str, ...]  # the solution's python blocks, in order
    bash: tuple[str, ...]  # its bash blocks


def _sources() -> dict[str, str]:
    return {name: (ROOT / "book" / f"{name}.md").read_text() for name in chapter_names(ROOT)}


def _setup(text: str) -> str:
    """The python block between the chapter's "## Exercises" heading and its first solution."""
    head = text.split("## Exercises", 1)[1].split("````{admonition} Solution", 1)[0]
    blocks = [code for kind, code in BLOCK.findall(head) if kind == "python"]
    assert len(blocks) == 1, "the exercises need exactly one setup block before the first solution"
    return blocks[0]


def _solutions() -> list[Solution]:
    found = []
    for chapter, text in _sources().items():
        for number, body in enumerate(SOLUTION.findall(text), start=1):
            blocks = BLOCK.findall(body)
            found.append(Solution(chapter, number, tuple(c for k, c in blocks if k == "python"),
                                  tuple(c for k, c in blocks if k == "bash")))
    return found


SOLUTIONS = _solutions()
IDS = [f"{s.chapter}-{s.number}" for s in SOLUTIONS]


def test_the_solutions_are_found_and_compile():
    assert len(SOLUTIONS) >= 5, IDS  # the summary's five exercises, at least
    assert all(s.python or s.bash for s in SOLUTIONS), "a solution without code to run"
    for solution in SOLUTIONS:
        for code in solution.python:
            compile(code, f"<{solution.chapter} solution {solution.number}>", "exec")
        for command in solution.bash:
            argv = shlex.split(command.strip())
            assert argv[:3] == ["python", "-m", "convexlab.book"], f"only book-runner commands can be tested: {command}"
    for chapter in {s.chapter for s in SOLUTIONS}:
        compile(_setup(_sources()[chapter]), f"<{chapter} exercise setup>", "exec")


def test_no_solution_picks_the_most_convex_layer_by_hand():
    """The most convex layer comes from the library's one rule (best_layer / best_layers / choose_layer)."""
    for solution in SOLUTIONS:
        code = "\n".join(solution.python)
        assert not re.search(r"idxmax|argmax|nlargest|sort_values\([^)]*score", code), (solution.chapter, solution.number)


@pytest.mark.book
@pytest.mark.parametrize("solution", SOLUTIONS, ids=IDS)
def test_solution_runs(solution, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {}
    exec(compile(_setup(_sources()[solution.chapter]), "<setup>", "exec"), namespace)
    # one model keeps a cold run to minutes (the summary says so); the rest of the profile is the book's
    namespace["P"] = namespace["P"].replace(models=namespace["P"].models[:1])
    for code in solution.python:
        exec(compile(code, f"<{solution.chapter} solution {solution.number}>", "exec"), namespace)
    from convexlab.book import main

    for command in solution.bash:
        argv = shlex.split(command.strip())[3:]
        # into a temporary folder: the solution's command must not leave a re-run in the checkout
        assert main([*argv, "--output-dir", str(tmp_path / "rerun")]) == 0
        assert list(Path(tmp_path / "rerun").glob("*.ipynb")), command
