"""One rule for every progress bar of the library.

``progress=None`` (the default everywhere) shows a bar where a reader can see it: in a terminal,
and as a widget in a notebook run interactively. ``TQDM_DISABLE=1`` in the environment hides
every bar; the book's runner sets it, so executed chapters hold results, not bars. tqdm reads
that variable only for arguments a caller leaves out, so the library reads it itself rather than
pass ``disable=None`` and lose it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

__all__ = ["bars_disabled", "show_bars", "tqdm_disable", "transformers_bars"]


def bars_disabled() -> bool:
    """True when ``TQDM_DISABLE`` is set to anything but ``""``, ``"0"`` or ``"false"``."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def show_bars(progress: bool | None) -> bool:
    """Whether a ``progress`` argument asks for bars: itself, or for ``None`` not :func:`bars_disabled`."""
    return not bars_disabled() if progress is None else bool(progress)


def tqdm_disable(progress: bool | None) -> bool | None:
    """The ``disable=`` argument for ``tqdm`` from a ``progress`` argument.

    ``True``/``False``: show/hide. ``None``: hide if :func:`bars_disabled`, else let tqdm decide
    (``disable=None`` hides a bar whose stream is not a terminal; notebook bars are always shown).
    """
    if progress is not None:
        return not progress
    return True if bars_disabled() else None


@contextlib.contextmanager
def transformers_bars(progress: bool | None = None) -> Iterator[None]:
    """transformers' own bars (loading weights, saving shards) on or off for a block, by :func:`show_bars`.

    transformers decides once, at import, from ``HF_HUB_DISABLE_PROGRESS_BARS``; this applies the
    library's rule for the block and restores the previous state after it.
    """
    from transformers.utils import logging as hf_logging

    show = show_bars(progress)
    was_enabled = hf_logging.is_progress_bar_enabled()
    if not show and was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not hf_logging.is_progress_bar_enabled():
            hf_logging.enable_progress_bar()
