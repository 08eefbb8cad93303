"""The ``brain2image`` command line: a thin wrapper over the library's stages.

Each subcommand lives in ``brain2image.commands.<name>`` and exposes
``register(subparsers) -> None`` which adds its parser and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import Brain2ImageError

__all__ = ["main", "build_parser", "COMMANDS"]

#: Subcommand modules, in the order ``--help`` lists them (the pipeline's order).
COMMANDS = (
    "simulate",
    "prepare",
    "features",
    "fit",
    "reconstruct",
    "evaluate",
    "report",
    "encode",
    "demo",
    "run",
    "train_bundled",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="brain2image",
        description="Reconstruct seen images from fMRI with a latent diffusion model "
        "(Takagi & Nishimoto, CVPR 2023).",
    )
    parser.add_argument("--version", action="version", version=f"brain2image {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"brain2image.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Brain2ImageError as error:
        print(f"brain2image {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
