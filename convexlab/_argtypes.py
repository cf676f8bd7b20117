"""Argument types and the usage error of the command-line stages (argparse-style: one line, exit 2)."""

from __future__ import annotations

import argparse

__all__ = ["UsageError", "positive_int", "nonnegative_int"]


class UsageError(Exception):
    """A bad command-line value found by a stage's handler; ``python -m convexlab`` reports it as
    argparse does (``prog: error: message``, exit status 2), without a traceback."""


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def positive_int(text: str) -> int:
    """An ``int`` of at least 1 (batch sizes, repeats, steps)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An ``int`` of at least 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value
