"""The chapter runner on a tiny book in a temporary folder (fast; no models involved)."""

from __future__ import annotations

import textwrap

import nbformat
import pytest

from convexlab.book import (
    PAGE_HIDDEN_TAG, _parse_parameters, book_root, chapter_names, chapter_parameters, hide_injected_parameters, run_book,
    run_chapter, stage_book,
)

HEADER = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
        format_version: 0.13
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---
    """
)


def _write_book(root, chapters: dict[str, str]) -> None:
    (root / "book").mkdir(parents=True)
    names = list(chapters)
    toc = f"format: jb-book\nroot: book/{names[0]}\n"
    if names[1:]:
        toc += "chapters:\n" + "".join(f"  - file: book/{name}\n" for name in names[1:])
    (root / "_toc.yml").write_text(toc)
    (root / "_config.yml").write_text("title: test\n")
    for name, body in chapters.items():
        (root / "book" / f"{name}.md").write_text(HEADER + body)


PARAMETRISED = textwrap.dedent(
    """\
    # A chapter

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "lite"
    n = 2
    ```

    ```{code-cell} ipython3
    print(profile, n * 21)
    ```
    """
)


def test_chapter_names_follow_the_toc(tmp_path):
    _write_book(tmp_path, {"first": PARAMETRISED, "second": PARAMETRISED, "third": PARAMETRISED})
    assert chapter_names(tmp_path) == ["first", "second", "third"]
    assert book_root(tmp_path) == tmp_path.resolve()


def test_the_real_toc_names_existing_chapters():
    root = book_root()
    names = chapter_names(root)
    assert names[0] == "intro"
    assert all((root / "book" / f"{name}.md").is_file() for name in names)


def test_run_chapter_injects_profile_and_overrides(tmp_path, capfd):
    _write_book(tmp_path, {"first": PARAMETRISED})
    run = run_chapter("first", profile="paper", parameters={"n": 5}, root=tmp_path)
    # The kernel's start-up notices stay out of the terminal of `make book`.
    assert "WARNING" not in capfd.readouterr().err
    notebook = nbformat.read(run.notebook, as_version=4)
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "paper 105" in outputs
    assert run.notebook == tmp_path / "_build" / "executed" / "paper" / "first.ipynb"
    assert (run.notebook.parent / "timings.json").is_file()
    # both parameter cells stay in the notebook; papermill's copy is tagged to stay off the page
    tags = [c.metadata.get("tags", []) for c in notebook.cells if c.cell_type == "code"]
    assert tags[0] == ["parameters"]
    assert tags[1] == ["injected-parameters", PAGE_HIDDEN_TAG] and PAGE_HIDDEN_TAG == "remove-cell"
    assert all(PAGE_HIDDEN_TAG not in t for t in tags[2:])


def test_hide_injected_parameters_tags_only_papermills_cell_once(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = 'lite'", metadata={"tags": ["parameters", "hide-cell"]}),
        nbformat.v4.new_code_cell("profile = 'paper'", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(profile)"),
    ])
    path = tmp_path / "chapter.ipynb"
    nbformat.write(notebook, path)
    assert hide_injected_parameters(path) == 1
    assert hide_injected_parameters(path) == 0  # idempotent: a second pass (nbval, a re-stage) adds nothing
    cells = nbformat.read(path, as_version=4).cells
    assert [c.metadata.get("tags", []) for c in cells] == [["parameters", "hide-cell"],
                                                           ["injected-parameters", "remove-cell"], []]
    assert [c.source for c in cells] == ["profile = 'lite'", "profile = 'paper'", "print(profile)"]


def test_chapter_without_parameters_cell_is_rejected(tmp_path):
    _write_book(tmp_path, {"first": "# A chapter\n\n```{code-cell} ipython3\nx = 1\n```\n"})
    with pytest.raises(ValueError, match="parameters"):
        run_chapter("first", root=tmp_path)


def test_unknown_chapter_is_named(tmp_path):
    _write_book(tmp_path, {"first": PARAMETRISED})
    with pytest.raises(FileNotFoundError, match="nope"):
        run_chapter("nope", root=tmp_path)


def test_failing_cell_raises(tmp_path):
    import papermill

    _write_book(tmp_path, {"first": PARAMETRISED.replace("print(profile, n * 21)", "raise RuntimeError('boom')")})
    with pytest.raises(papermill.PapermillExecutionError, match="boom"):
        run_chapter("first", root=tmp_path)


def test_staging_requires_executed_chapters(tmp_path):
    _write_book(tmp_path, {"first": PARAMETRISED})
    with pytest.raises(FileNotFoundError, match="convexlab.book run"):
        stage_book("lite", root=tmp_path)


def test_cli_parameters_are_yaml():
    assert _parse_parameters([("models", "[mini-hubert, mini-wavlm]"), ("seed", "3"), ("device", "cpu")]) == {
        "models": ["mini-hubert", "mini-wavlm"], "seed": 3, "device": "cpu",
    }


def test_chapter_parameters_are_read_from_the_parameters_cell(tmp_path):
    _write_book(tmp_path, {"first": PARAMETRISED})
    assert chapter_parameters("first", tmp_path) == ["profile", "n"]


def test_unknown_parameter_is_refused_with_the_chapters_parameters(tmp_path):
    _write_book(tmp_path, {"first": PARAMETRISED})
    with pytest.raises(ValueError, match=r"\['m'\].*first: n"):
        run_chapter("first", parameters={"m": 5}, root=tmp_path)
    assert not (tmp_path / "_build").exists()  # refused before anything ran


def test_profile_cannot_be_a_parameter(tmp_path):
    _write_book(tmp_path, {"first": PARAMETRISED})
    with pytest.raises(ValueError, match="--profile"):
        run_chapter("first", parameters={"profile": "paper"}, root=tmp_path)


def test_run_book_gives_each_chapter_the_parameters_it_declares(tmp_path):
    other = PARAMETRISED.replace("n = 2", "k = 1").replace("print(profile, n * 21)", "print(profile, k)")
    _write_book(tmp_path, {"first": PARAMETRISED, "second": other})
    runs = run_book(profile="lite", parameters={"n": 3, "k": 4}, root=tmp_path, prepare=False)
    assert [run.parameters for run in runs] == [{"profile": "lite", "n": 3}, {"profile": "lite", "k": 4}]
    with pytest.raises(ValueError, match="first: n; second: k"):
        run_book(profile="lite", parameters={"j": 1}, root=tmp_path, prepare=False)


@pytest.mark.parametrize("pair, expected", [(["nope", "1"], "Unknown chapter parameter"),
                                            (["profile", "paper"], "--profile")])
def test_cli_refuses_bad_parameters_with_one_line_and_exit_2(tmp_path, capsys, pair, expected):
    from convexlab.book import main

    _write_book(tmp_path, {"first": PARAMETRISED})
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--root", str(tmp_path), "--no-prepare", "-p", *pair])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2 and err.strip().splitlines()[-1].startswith("python -m convexlab.book: error:")


def test_chapters_assert_nothing_a_loaded_machine_can_break():
    """Timings move with the machine's load (nbval once failed on "one layer must run faster than all
    layers" under `make test`): chapters may print them, in cells whose output nbval ignores, but
    assert only on what is counted (FLOPs, parameters), never on a measured time."""
    import re

    import jupytext

    root = book_root()
    timing = re.compile(r"time_ms|time_change|seconds|time_low|time_high|_time\b")
    for name in chapter_names(root):
        for cell in jupytext.read(root / "book" / f"{name}.md").cells:
            if cell.cell_type != "code":
                continue
            for line in cell.source.splitlines():
                assert not (line.lstrip().startswith("assert") and timing.search(line)), f"{name}: {line}"
            if re.search(r"time_ms|time_change", cell.source) and "print(" in cell.source:
                assert "nbval-ignore-output" in cell.metadata.get("tags", []), f"{name}: timing output compared by nbval"


def test_reruns_with_parameters_never_overwrite_the_book(tmp_path):
    """The README's `run --chapter layers -p models [...]` must not replace the book's own notebook."""
    from convexlab.book import executed_dir, rerun_dir

    _write_book(tmp_path, {"first": PARAMETRISED})
    (own,) = run_book(profile="lite", root=tmp_path, prepare=False)
    assert own.notebook == executed_dir("lite", tmp_path) / "first.ipynb"
    before = own.notebook.read_bytes()
    (rerun,) = run_book(profile="lite", parameters={"n": 5}, root=tmp_path, prepare=False)
    assert rerun.notebook.parent == rerun_dir("lite", {"n": 5}, tmp_path) != own.notebook.parent
    assert rerun.notebook.parent.name.startswith("n=5-") and own.notebook.read_bytes() == before
    assert "105" in rerun.notebook.read_text() and rerun_dir("lite", {"n": 6}, tmp_path) != rerun.notebook.parent
    (explicit,) = run_book(profile="lite", parameters={"n": 1}, root=tmp_path, prepare=False,
                           output_dir=tmp_path / "mine")
    assert explicit.notebook == tmp_path / "mine" / "first.ipynb"


def test_build_with_parameters_is_refused(tmp_path, capsys):
    from convexlab.book import build_book, main

    _write_book(tmp_path, {"first": PARAMETRISED})
    with pytest.raises(ValueError, match="profile's own runs"):
        build_book("lite", parameters={"n": 3}, root=tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--root", str(tmp_path), "-p", "n", "3"])
    assert exit_info.value.code == 2 and "takes no -p" in capsys.readouterr().err


# PARAMETRISED, logging each execution outside book/ (which is part of the execution key)
COUNTING = PARAMETRISED.replace(
    "print(profile, n * 21)",
    'with open("../executions.log", "a") as log:\n    log.write("ran\\n")\nprint(n)',
)


def _executions(root) -> int:
    log = root / "executions.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_an_up_to_date_chapter_is_kept_and_any_change_executes_it_again(tmp_path, monkeypatch):
    import convexlab.book as book

    _write_book(tmp_path, {"first": COUNTING})
    (first,) = run_book(profile="lite", root=tmp_path, prepare=False)
    assert not first.reused and _executions(tmp_path) == 1
    assert book._recorded_execution_key(first.notebook) == book.execution_key("first", profile="lite", root=tmp_path)

    (again,) = run_book(profile="lite", root=tmp_path, prepare=False)
    assert again.reused and _executions(tmp_path) == 1

    (forced,) = run_book(profile="lite", root=tmp_path, prepare=False, force=True)
    assert not forced.reused and _executions(tmp_path) == 2

    source = tmp_path / "book" / "first.md"
    source.write_text(source.read_text().replace("print(n)", "print(n + 1)"))
    (edited,) = run_book(profile="lite", root=tmp_path, prepare=False)
    assert not edited.reused and _executions(tmp_path) == 3

    (tmp_path / "book" / "figure.svg").write_text("<svg/>")  # another file of the book folder
    assert not run_book(profile="lite", root=tmp_path, prepare=False)[0].reused

    monkeypatch.setattr(book, "_package_digest", lambda: "an edited library")
    assert not run_book(profile="lite", root=tmp_path, prepare=False)[0].reused
    assert _executions(tmp_path) == 5


def test_runs_that_read_what_the_project_does_not_make_are_always_executed(tmp_path):
    import convexlab.book as book

    _write_book(tmp_path, {"first": COUNTING})
    assert book.execution_key("first", profile="paper", root=tmp_path) is None  # Speech Commands, hub ids
    assert book.execution_key("first", profile="lite", parameters={"n": 3}, root=tmp_path) is None
    out = tmp_path / "paper-run"
    for _ in range(2):
        (run,) = run_book(profile="paper", root=tmp_path, prepare=False, output_dir=out)
        assert not run.reused
    assert _executions(tmp_path) == 2
    assert book._recorded_execution_key(run.notebook) is None


def test_a_failed_execution_records_no_key(tmp_path):
    import papermill

    import convexlab.book as book

    _write_book(tmp_path, {"first": COUNTING.replace("print(n)", "raise RuntimeError('broken')")})
    with pytest.raises(papermill.PapermillExecutionError):
        run_chapter("first", root=tmp_path)
    assert book._recorded_execution_key(book.executed_dir("lite", tmp_path) / "first.ipynb") is None
    with pytest.raises(papermill.PapermillExecutionError):  # executed again, not answered from the failure
        run_chapter("first", root=tmp_path)
    assert _executions(tmp_path) == 2
