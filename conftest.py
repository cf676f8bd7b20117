"""nbval collection of the book's chapters.

``pytest --nbval book`` validates every Jupytext chapter in ``book/``: nbval re-executes the
chapter's executed notebook (``_build/executed/<profile>/<chapter>.ipynb``, written by
``python -m convexlab.book run``) and compares each cell's output with the stored one, after the
substitutions in ``tests/nbval_sanitize.cfg`` (timings, addresses, devices). A chapter that has
not been executed yet, or whose source is newer than its executed notebook, is executed first.
Cells tagged ``nbval-ignore-output`` (timings, hardware) are run but not compared.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"

from convexlab.book import KERNEL_ENV

# nbval's kernels inherit this process's environment: give them the runner's kernel environment
for _name, _value in KERNEL_ENV.items():
    os.environ.setdefault(_name, _value)


def _is_chapter(path: Path) -> bool:
    if path.suffix != ".md" or path.parent != ROOT / "book":
        return False
    with open(path) as handle:
        return "jupytext:" in handle.read(400)


def pytest_configure(config):
    option = config.option
    if getattr(option, "nbval", False) or getattr(option, "nbval_lax", False):
        if not getattr(option, "nbval_sanitize_with", None):
            option.nbval_sanitize_with = str(SANITIZE)
        option.nbval_current_env = True


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if not (getattr(option, "nbval", False) or getattr(option, "nbval_lax", False)):
        return None
    path = Path(file_path)
    if not _is_chapter(path):
        return None
    from nbval.plugin import IPyNbFile

    from convexlab.book import executed_dir, run_chapter

    profile = os.environ.get("CONVEXLAB_NBVAL_PROFILE", "lite")
    executed = executed_dir(profile, ROOT) / f"{path.stem}.ipynb"
    if not executed.is_file() or executed.stat().st_mtime < path.stat().st_mtime:
        run_chapter(path.stem, profile=profile, root=ROOT)
    return _chapter_notebook_class(IPyNbFile).from_parent(parent, path=path, executed=executed)


def _chapter_notebook_class(base):
    """An nbval notebook item named after the chapter source but reading its executed notebook."""
    from _pytest.compat import LEGACY_PATH, legacy_path

    class ChapterNotebook(base):
        def __init__(self, *args, executed: Path, **kwargs):
            self.executed = executed
            super().__init__(*args, **kwargs)

        @property
        def fspath(self) -> LEGACY_PATH:  # nbval reads the notebook (and sets the kernel cwd) from here
            return legacy_path(self.executed)

    return ChapterNotebook
