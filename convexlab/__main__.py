"""Command-line stages: ``python -m convexlab <stage> ...`` (``--help`` lists them).

Each stage lives in its own module as ``add_<stage>_cli(subparsers)``, which registers the
subcommand and its handler (``handler(args) -> exit status``); this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# "module:function" of every stage, one line each
STAGES = (
    "convexlab.extract:add_extract_cli",
    "convexlab.compare:add_prune_compare_cli",
    "convexlab.pretrain:add_pretrain_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m convexlab", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        module, function = stage.split(":")
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from convexlab._argtypes import UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UsageError as err:  # a bad value found by the handler: argparse's one line and exit 2
        parser.error(" ".join(str(err).split()))


if __name__ == "__main__":
    sys.exit(main())
