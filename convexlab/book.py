"""The book pipeline: execute chapters with papermill for a profile, then build the HTML book.

Chapters are Jupytext MyST markdown files in ``book/``, each with a cell tagged ``parameters``
right after its title. For a named profile this module

1. prepares what every chapter needs and would otherwise compute on first use (the synthetic
   corpus and the pretrained miniature models of the lite profile), so that no single chapter
   pays for it;
2. executes each chapter with papermill (unless its executed notebook is up to date: same
   :func:`execution_key`), injecting ``profile=<name>`` plus any overrides, into
   ``_build/executed/<profile>/<chapter>.ipynb`` (with a ``timings.json`` beside them);
3. stages the executed notebooks beside ``_toc.yml`` in ``_build/stage/<profile>/`` and builds HTML
   with Jupyter Book, execution off, warnings as errors (``-W -n --keep-going``), with MathJax served
   from the book itself (no CDN).

The same runner is a CLI::

    python -m convexlab.book run   --profile lite [--chapter layers ...] [-p models '["mini-hubert"]']
    python -m convexlab.book run   --profile paper -p overrides '{n_per_class: 20}' --output-dir DIR
    python -m convexlab.book html  --profile lite
    python -m convexlab.book build --profile lite     # run + html
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from convexlab.cache import cache_path, file_digest, save_json, stable_hash, stage_key
from convexlab.data import corpus_root
from convexlab.families import MINIATURE_NAMES
from convexlab.models import FAMILIES
from convexlab.pretrain import ensure_pretrained
from convexlab.profiles import get_profile

__all__ = [
    "ChapterRun",
    "book_root",
    "chapter_names",
    "chapter_parameters",
    "run_chapter",
    "hide_injected_parameters",
    "run_book",
    "execution_key",
    "prepare_profile",
    "stage_book",
    "build_html",
    "build_book",
]

MATHJAX_VERSION = "3.2.2"  # npm package "mathjax"; its es5/ folder is the browser build


@dataclass
class ChapterRun:
    """One executed chapter."""

    chapter: str  # chapter name, e.g. "layers" (the file book/layers.md)
    profile: str  # profile the chapter ran with
    notebook: Path  # executed notebook (_build/executed/<profile>/<chapter>.ipynb)
    seconds: float  # wall time of the execution
    parameters: dict[str, Any] = field(default_factory=dict)  # parameters papermill injected
    reused: bool = False  # True: an earlier execution with the same execution key was kept, nothing ran


def book_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``_toc.yml`` (``$CONVEXLAB_BOOK_ROOT``, the checkout, or the cwd)."""
    candidates = [root, os.environ.get("CONVEXLAB_BOOK_ROOT"), Path(__file__).resolve().parent.parent, Path.cwd()]
    for candidate in candidates:
        if candidate and (Path(candidate) / "_toc.yml").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        "Cannot find the book (a folder with _toc.yml). Run from the convexlab checkout or set "
        "CONVEXLAB_BOOK_ROOT to it."
    )


def _toc_files(toc: dict) -> list[str]:
    files = [toc["root"]]

    def walk(node: dict) -> None:
        for part in node.get("parts", []):
            walk(part)
        for entry in node.get("chapters", []) + node.get("sections", []):
            if "file" in entry:
                files.append(entry["file"])
            walk(entry)

    walk(toc)
    return files


def chapter_names(root: str | os.PathLike | None = None) -> list[str]:
    """Chapter names in ``_toc.yml`` order, e.g. ``["intro", "data", ...]``."""
    root = book_root(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [Path(entry).name for entry in _toc_files(toc)]


def _chapter_source(root: Path, chapter: str) -> Path:
    path = root / "book" / f"{Path(chapter).stem}.md"
    if not path.is_file():
        raise FileNotFoundError(f"No chapter {chapter!r}: {path} does not exist. Chapters: {chapter_names(root)}")
    return path


def chapter_parameters(chapter: str, root: str | os.PathLike | None = None) -> list[str]:
    """The names a chapter's ``parameters`` cell assigns, in order (what ``-p NAME VALUE`` may set)."""
    import ast

    import jupytext

    source = _chapter_source(book_root(root), chapter)
    notebook = jupytext.read(source)
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    if not cells:
        raise ValueError(f"{source} has no cell tagged 'parameters'; add one right after the title.")
    names: list[str] = []
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id not in names:
                names.append(target.id)
    return names


def _check_parameters(parameters: dict[str, Any], chapters: dict[str, list[str]]) -> None:
    """Refuse what the runner cannot honour: ``profile`` (it is --profile) and names no chapter declares."""
    if "profile" in parameters:
        raise ValueError("'profile' cannot be set as a chapter parameter; use --profile NAME (profile=...) instead")
    known = {name for names in chapters.values() for name in names}
    unknown = sorted(set(parameters) - known)
    if unknown:
        listing = "; ".join(f"{chapter}: {', '.join(n for n in names if n != 'profile') or '(none)'}"
                            for chapter, names in chapters.items())
        raise ValueError(f"Unknown chapter parameter(s) {unknown}. The chapters' parameters are: {listing}")


def executed_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """Where executed notebooks of ``profile`` are written: ``_build/executed/<profile>/``."""
    return book_root(root) / "_build" / "executed" / profile


# The environment chapter kernels run in, for the runner and for nbval's re-runs alike (the root
# conftest.py applies it too). nbval compares a re-run on a warm cache with the first, cold run,
# so nothing may print only when a result is computed: progress bars, library logs and warnings
# stay out of the executed notebooks.
KERNEL_ENV = {
    "TQDM_DISABLE": "1",  # every convexlab bar (convexlab._progress)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' and huggingface_hub's own bars, whoever calls them
    "PYTHONHASHSEED": "0",
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore",
}


def rerun_dir(profile: str, parameters: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Where a re-run with ``parameters`` goes: ``_build/reruns/<profile>/<name>-<hash>/``.

    Never the book's own folder (:func:`executed_dir`), so the next ``make html`` publishes only
    the profile's own runs. The name spells the parameters (``models=mini-hubert``) for a reader;
    the hash keeps two runs with different values apart however the name is shortened.
    """
    spelled = "_".join(f"{key}={value}" for key, value in sorted(parameters.items()))
    readable = re.sub(r"[^A-Za-z0-9=.,+-]+", "-", spelled).strip("-")[:80] or "defaults"
    return book_root(root) / "_build" / "reruns" / profile / f"{readable}-{stable_hash(parameters, length=8)}"


def _kernel_env() -> dict[str, str]:
    """``os.environ`` with :data:`KERNEL_ENV` filled in where the caller has not set a value."""
    return {**KERNEL_ENV, **os.environ}


EXECUTION_VERSION = 1  # bump when what an execution key covers changes


def _package_digest() -> str:
    """Digest of every source file of the imported convexlab package (what a chapter's kernel runs)."""
    package = Path(__file__).resolve().parent
    files = sorted(path for path in package.rglob("*.py") if "__pycache__" not in path.parts)
    return stable_hash([[str(path.relative_to(package)), file_digest(path)] for path in files], length=32)


def execution_key(chapter: str, *, profile: str = "lite", parameters: dict[str, Any] | None = None,
                  root: str | os.PathLike | None = None, kernel_name: str = "python3") -> str | None:
    """The key of one chapter's execution, or ``None`` when an earlier execution may not stand in for it.

    A chapter's outputs are a function of its source, the book folder's other files, the convexlab
    package's source, the locked environment, the resolved profile, the kernel's environment and
    the Python version; for a profile whose every input the project generates (a generated corpus
    and miniature models only) nothing else enters, so an executed notebook with the same key is
    the notebook a new execution would write (up to timings). Runs that read what the project does
    not make (Speech Commands, hub checkpoints, local model folders, whose contents can change
    under the same name) and runs with parameters get ``None``: always executed.
    """
    if parameters:
        return None
    prof = get_profile(profile)
    generated = prof.corpus in ("synthetic", "spoken") and not prof.data_root
    if not (generated and prof.miniature and all(model in MINIATURE_NAMES for model in prof.models)):
        return None
    root = book_root(root)
    source = _chapter_source(root, chapter)
    book_files = sorted(path for path in (root / "book").rglob("*") if path.is_file() and path.suffix != ".md")
    lock = root / "requirements.lock"
    return stage_key(
        "executed-chapter", EXECUTION_VERSION,
        inputs={
            "chapter": file_digest(source),
            "book_files": stable_hash([[str(p.relative_to(root)), file_digest(p)] for p in book_files], length=32),
            "package": _package_digest(),
            "lock": file_digest(lock) if lock.is_file() else "no-lock",
            "config": stable_hash([file_digest(root / name) for name in ("_config.yml", "_toc.yml")], length=32),
        },
        params={"profile": prof.to_dict(), "kernel_env": KERNEL_ENV, "kernel_name": kernel_name,
                "python": sys.version},
    )


def _recorded_execution_key(notebook: Path) -> str | None:
    """The execution key a finished run wrote into ``notebook``'s metadata (None: none, or unreadable)."""
    try:
        metadata = json.loads(notebook.read_text()).get("metadata", {})
    except (OSError, ValueError):
        return None
    return (metadata.get("convexlab") or {}).get("execution_key")


def run_chapter(
    chapter: str,
    *,
    profile: str = "lite",
    parameters: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    kernel_name: str = "python3",
    timeout: int | None = 1800,
    force: bool = False,
) -> ChapterRun:
    """Execute one chapter with papermill and write the executed notebook.

    ``parameters`` override the chapter's ``parameters`` cell (``profile`` is always injected and
    cannot be among them; a name the cell does not assign raises ``ValueError`` listing those it does).
    Raises ``papermill.PapermillExecutionError`` naming the failing cell when a cell fails; the
    partly executed notebook is still written, to the same place, for inspection.

    An executed notebook already at the target whose recorded :func:`execution_key` equals this
    run's is kept and not executed again (``ChapterRun.reused``); ``force=True`` always executes.
    """
    import jupytext
    import papermill

    root = book_root(root)
    source = _chapter_source(root, chapter)
    _check_parameters(parameters or {}, {source.stem: chapter_parameters(chapter, root)})
    out_dir = Path(output_dir) if output_dir else executed_dir(profile, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}.ipynb"
    params = {"profile": profile, **(parameters or {})}
    key = execution_key(chapter, profile=profile, parameters=parameters, root=root, kernel_name=kernel_name)
    if key is not None and not force and target.is_file() and _recorded_execution_key(target) == key:
        return ChapterRun(chapter=source.stem, profile=profile, notebook=target, seconds=0.0, parameters=params,
                          reused=True)

    notebook = jupytext.read(source)
    with tempfile.TemporaryDirectory() as tmp:
        unexecuted = Path(tmp) / f"{source.stem}.ipynb"
        jupytext.write(notebook, unexecuted)
        start = time.perf_counter()
        saved_env = dict(os.environ)
        os.environ.update(_kernel_env())
        try:
            papermill.execute_notebook(
                str(unexecuted),
                str(target),
                parameters=params,
                kernel_name=kernel_name,
                cwd=str(source.parent),
                progress_bar=False,
                execution_timeout=timeout,
                language="python",
                # The kernel's start-up notice that local TCP is unencrypted would otherwise fill
                # the terminal once per chapter; its errors still show.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
        seconds = time.perf_counter() - start
    _finish_notebook(target, execution_key=key)
    run = ChapterRun(chapter=source.stem, profile=profile, notebook=target, seconds=seconds, parameters=params)
    _record_timing(out_dir, run)
    return run


# papermill tags the cell it adds "injected-parameters". On the page it would repeat the chapter's
# own parameters cell (hidden behind a toggle, tag "hide-cell"), so the page drops it; the notebook
# keeps it, as the record of the values the chapter ran with.
PAGE_HIDDEN_TAG = "remove-cell"


def hide_injected_parameters(notebook: str | os.PathLike) -> int:
    """Tag papermill's ``injected-parameters`` cell of an executed notebook :data:`PAGE_HIDDEN_TAG`,
    in place, so that Jupyter Book leaves it off the page; returns how many cells were tagged."""
    return _finish_notebook(Path(notebook), execution_key=None)


def _finish_notebook(path: Path, *, execution_key: str | None) -> int:
    """One rewrite of an executed notebook: hide the injected parameters cell and, when given,
    record ``execution_key`` in its metadata (atomically: a partial run never has one).
    Returns how many cells were tagged; an unchanged notebook is not rewritten."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tagged = 0
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and PAGE_HIDDEN_TAG not in tags:
            cell.metadata["tags"] = [*tags, PAGE_HIDDEN_TAG]
            tagged += 1
    if execution_key is not None:
        nb.metadata.setdefault("convexlab", {})["execution_key"] = execution_key
    if tagged or execution_key is not None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    return tagged


def _record_timing(out_dir: Path, run: ChapterRun) -> None:
    timings_file = out_dir / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    timings[run.chapter] = {"seconds": round(run.seconds, 2), "parameters": run.parameters}
    save_json(timings_file, timings)


def prepare_profile(profile: str = "lite", *, parameters: dict[str, Any] | None = None) -> float:
    """Compute once what all chapters share (corpus, pretrained miniatures); returns seconds.

    Every chapter would do this itself on first use; doing it up front keeps each chapter's
    execution time about the chapter's own work.
    """
    start = time.perf_counter()
    parameters = dict(parameters or {})
    fields = {f.name for f in dataclasses.fields(get_profile())}
    overrides = {k: v for k, v in parameters.items() if k in fields}
    overrides.update(parameters.get("overrides") or {})  # the chapters' `overrides` parameter: more profile fields
    prof = get_profile(profile, **overrides)
    if prof.corpus in ("synthetic", "spoken") or prof.data_root or not prof.download:
        print(f"[prepare] corpus for profile {prof.name!r} ...", flush=True)
        corpus_root(prof)
    if prof.miniature:
        for family, spec in FAMILIES.items():
            if spec.miniature_name in prof.models:
                print(f"[prepare] pretrained miniature {family!r} ...", flush=True)
                ensure_pretrained(family, seed=prof.seed, recipe=prof.pretrain_recipe)
    return time.perf_counter() - start


def run_book(
    *,
    profile: str = "lite",
    chapters: Sequence[str] | None = None,
    parameters: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    prepare: bool = True,
    output_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> list[ChapterRun]:
    """Execute ``chapters`` (default: all of ``_toc.yml``) for ``profile``; prints each time.

    Each chapter gets the ``parameters`` its ``parameters`` cell declares; a name that none of the
    chapters declares (or ``profile``) raises ``ValueError`` before anything runs. Runs without
    parameters go to the book's folder (:func:`executed_dir`); runs with parameters to
    ``output_dir`` or, by default, their own :func:`rerun_dir`. A chapter whose executed notebook
    is up to date (:func:`execution_key`) is kept unless ``force``.
    """
    root = book_root(root)
    names = list(chapters) if chapters else chapter_names(root)
    parameters = dict(parameters or {})
    declared = {name: chapter_parameters(name, root) for name in names}
    _check_parameters(parameters, declared)
    if output_dir is not None:
        out_dir = Path(output_dir)
    else:
        out_dir = rerun_dir(profile, parameters, root) if parameters else executed_dir(profile, root)
    if prepare:
        seconds = prepare_profile(profile, parameters=parameters)
        print(f"[prepare] done in {seconds:.1f} s", flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        _record_timing(out_dir, ChapterRun("_prepare", profile, out_dir, seconds, {}))
    runs = []
    for name in names:
        print(f"[run] {name} (profile {profile}) ...", flush=True)
        own = {key: value for key, value in parameters.items() if key in declared[name]}
        run = run_chapter(name, profile=profile, parameters=own, root=root, output_dir=out_dir, force=force)
        if run.reused:
            print(f"[run] {name}: up to date (its source, the package, the lock and the profile are unchanged "
                  f"since it ran), kept -> {run.notebook}", flush=True)
        else:
            print(f"[run] {name}: {run.seconds:.1f} s -> {run.notebook}", flush=True)
        runs.append(run)
    return runs


def ensure_mathjax(target: Path) -> Path:
    """Put MathJax's browser build into ``target`` (from the npm package, cached); returns it.

    The rendered book must typeset math offline, so MathJax is served from the book's own
    ``_static`` folder instead of a CDN. The npm package is fetched once with ``npm pack`` and
    kept in the convexlab cache; nothing is committed.
    """
    cached = cache_path("mathjax", MATHJAX_VERSION)
    if not (cached / "tex-chtml.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "MathJax is needed to render the book's math offline and is taken from the npm package "
                f"'mathjax@{MATHJAX_VERSION}', but `npm` is not installed. Install Node.js/npm "
                "(Debian: apt-get install npm) or put MathJax's es5/ folder at " + str(cached)
            )
        with tempfile.TemporaryDirectory() as tmp:
            result = subprocess.run(
                [npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"],
                cwd=tmp, capture_output=True, text=True, timeout=300,
            )
            if result.returncode != 0:
                raise RuntimeError(f"`npm pack mathjax@{MATHJAX_VERSION}` failed:\n{result.stderr}")
            tarball = next(Path(tmp).glob("mathjax-*.tgz"))
            with tarfile.open(tarball) as archive:
                members = [m for m in archive.getmembers() if m.name.startswith("package/es5/")]
                archive.extractall(tmp, members=members, filter="data")
            staging = Path(tmp) / "package" / "es5"
            if cached.exists():
                shutil.rmtree(cached)
            shutil.copytree(staging, cached)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(cached, target)
    return target


def stage_book(profile: str = "lite", *, root: str | os.PathLike | None = None) -> Path:
    """Copy the book's config and the executed notebooks into ``_build/stage/<profile>/``."""
    root = book_root(root)
    executed = executed_dir(profile, root)
    names = chapter_names(root)
    missing = [n for n in names if not (executed / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"Chapters {missing} have not been executed for profile {profile!r} (looked in {executed}). "
            f"Run `python -m convexlab.book run --profile {profile}` first."
        )
    stage = root / "_build" / "stage" / profile
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "book").mkdir(parents=True)
    shutil.copy2(root / "_config.yml", stage / "_config.yml")
    shutil.copy2(root / "_toc.yml", stage / "_toc.yml")
    for item in (root / "book").iterdir():
        if item.suffix == ".md":
            continue  # the executed notebook stands in for the chapter source
        if item.is_dir():
            shutil.copytree(item, stage / "book" / item.name)
        else:
            shutil.copy2(item, stage / "book" / item.name)
    for name in names:
        shutil.copy2(executed / f"{name}.ipynb", stage / "book" / f"{name}.ipynb")
    ensure_mathjax(stage / "_mathjax" / "mathjax")
    return stage


def _jupyter_book_executable() -> str:
    beside_python = Path(sys.executable).parent / "jupyter-book"
    found = str(beside_python) if beside_python.is_file() else shutil.which("jupyter-book")
    if found is None:
        raise RuntimeError("jupyter-book is not installed; install the book extra: pip install -e '.[book]'")
    return found


def build_html(profile: str = "lite", *, root: str | os.PathLike | None = None) -> Path:
    """Build the HTML book from the executed notebooks; returns ``_build/html/index.html``.

    Jupyter Book runs with execution off and ``-W -n --keep-going``: any warning (a broken
    reference, a missing citation, a notebook that does not parse) fails the build.
    """
    root = book_root(root)
    stage = stage_book(profile, root=root)
    html = root / "_build" / "html"
    command = [
        _jupyter_book_executable(), "build", str(stage),
        "--path-output", str(stage), "--builder", "html", "-W", "-n", "--keep-going",
    ]
    result = subprocess.run(command, cwd=root)
    if result.returncode != 0:
        raise RuntimeError(f"Jupyter Book build failed (exit {result.returncode}); see the warnings above.")
    built = stage / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(built, html)
    index = html / "index.html"
    if not index.is_file():
        raise RuntimeError(f"The build finished but {index} is missing.")
    return index


def build_book(
    profile: str = "lite",
    *,
    chapters: Sequence[str] | None = None,
    parameters: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Execute every chapter for ``profile`` and build the HTML book (what ``make book`` does).

    Chapters whose executed notebooks are up to date are kept (:func:`run_book`); ``force``
    executes every one.

    The book is the profile's own runs: ``parameters`` (which would make it another book) are
    refused; re-run chapters with parameters through :func:`run_book` instead.
    """
    if parameters:
        raise ValueError(f"A book is built from the profile's own runs, not with parameters {sorted(parameters)}; "
                         "re-run chapters with them by `python -m convexlab.book run -p NAME VALUE` "
                         "(written to _build/reruns/), or pick another profile.")
    start = time.perf_counter()
    run_book(profile=profile, chapters=chapters, parameters=parameters, root=root, force=force)
    executed_seconds = time.perf_counter() - start
    index = build_html(profile, root=root)
    total = time.perf_counter() - start
    print(f"[book] chapters executed in {executed_seconds:.1f} s; book built in {total:.1f} s -> {index}")
    return index


def _parse_parameters(pairs: Iterable[Sequence[str]] | None) -> dict[str, Any]:
    return {key: yaml.safe_load(value) for key, value in (pairs or [])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convexlab.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("run", "execute chapters with papermill"),
        ("html", "build HTML from executed chapters"),
        ("build", "execute all chapters and build HTML"),
    ]:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--profile", default="lite", help="named profile (lite, lite-synthetic, paper, large)")
        cmd.add_argument("--root", default=None, help="book folder (with _toc.yml); default: this checkout")
        if name != "html":
            cmd.add_argument("--chapter", action="append", dest="chapters", help="chapter name (repeatable); default: all")
            cmd.add_argument(
                "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                help="override a chapter parameter; VALUE is parsed as YAML (e.g. -p models '[mini-hubert]')",
            )
            cmd.add_argument("--force", action="store_true",
                             help="execute every chapter, even one whose executed notebook is up to date")
            if name == "run":
                cmd.add_argument("--no-prepare", action="store_true", help="skip the shared preparation step")
                cmd.add_argument("--output-dir", "--output", dest="output_dir", default=None,
                                 help="folder for the executed notebooks (default: the book's folder, or with -p "
                                      "a folder of its own under _build/reruns/<profile>/)")
    args = parser.parse_args(argv)
    if args.command != "html":
        try:  # refuse unknown or unsettable parameters as a usage error, before anything runs
            parameters = _parse_parameters(args.parameter)
            names = args.chapters or chapter_names(args.root)
            _check_parameters(parameters, {name: chapter_parameters(name, args.root) for name in names})
            if args.command == "build" and parameters:
                raise ValueError("`build` makes the profile's own book and takes no -p; re-run chapters with "
                                 "parameters by `run -p NAME VALUE` (written to _build/reruns/)")
        except (ValueError, FileNotFoundError, yaml.YAMLError) as err:
            parser.error(" ".join(str(err).split()))
    if args.command == "run":
        runs = run_book(profile=args.profile, chapters=args.chapters, parameters=parameters, root=args.root,
                        prepare=not args.no_prepare, output_dir=args.output_dir, force=args.force)
        if parameters and runs:
            print(f"[run] re-run with parameters written to {runs[0].notebook.parent} (the book's folder is untouched)")
    elif args.command == "html":
        print(build_html(args.profile, root=args.root))
    else:
        build_book(args.profile, chapters=args.chapters, parameters=parameters, root=args.root, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
