"""``python -m convexlab <stage> ...``: the command line of :mod:`convexlab.cli` (``--help`` lists the stages)."""

import sys

from convexlab.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
