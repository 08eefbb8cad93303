"""The ``brain2image`` command line: a thin wrapper over the library's stages.

The command of each registered stage (:mod:`brain2image.stages`) is generated from its options;
the other commands live in ``brain2image.commands.<name>`` and expose
``register(subparsers) -> None``, which adds the parser and sets ``func(args) -> int``.
``-v`` and ``--no-progress`` are accepted before or after the command. A
:class:`~brain2image.errors.Brain2ImageError` is printed as one line and exits with status 2; so is
a usage error (an unknown option, a value argparse cannot convert).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .commands._common import HelpFormatter, library_noise, register_stage_command, show_progress, verbosity
from .errors import Brain2ImageError

__all__ = ["main", "build_parser", "OneLineParser", "COMMANDS_BEFORE_STAGES", "COMMANDS_AFTER_STAGES", "ERROR_STATUS"]

#: Command modules listed before the stage commands in ``--help``.
COMMANDS_BEFORE_STAGES = ("simulate",)
#: Command modules listed after the stage commands (which follow the pipeline's order).
COMMANDS_AFTER_STAGES = ("demo", "run", "merge", "train_bundled")
#: Exit status of a command stopped by a :class:`~brain2image.errors.Brain2ImageError` (as argparse's usage errors).
ERROR_STATUS = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (no usage dump), exit status 2.

    The command parsers are made by ``add_subparsers`` of this class, so they are of it too.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>; see <prog> --help`` on stderr and exit with status 2."""
        self.exit(ERROR_STATUS, f"{self.prog}: error: {_one_line(message)}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser.

    Commands: ``simulate``, every registered stage in pipeline order, then ``demo``, ``run``,
    ``merge`` and ``train-bundled``.
    """
    from .stages import pipeline_stages

    parser = OneLineParser(
        prog="brain2image", formatter_class=HelpFormatter,
        description="Reconstruct seen images from fMRI with a latent diffusion model "
        "(Takagi & Nishimoto, CVPR 2023).")
    parser.add_argument("--version", action="version", version=f"brain2image {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS_BEFORE_STAGES:
        importlib.import_module(f"brain2image.commands.{name}").register(subparsers)
    for stage in pipeline_stages():
        register_stage_command(subparsers, stage)
    for name in COMMANDS_AFTER_STAGES:
        importlib.import_module(f"brain2image.commands.{name}").register(subparsers)
    return parser


def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


#: Commands outside the stages that load a model (their library noise is silenced up front).
_MODEL_COMMANDS = ("demo", "run", "train-bundled")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for a usage error or a :class:`Brain2ImageError`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity(args), 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        # Stage commands wrap themselves (loading transformers/diffusers only when they need a model).
        with library_noise(show_progress(args), loads_model=args.command in _MODEL_COMMANDS):
            return int(args.func(args) or 0)
    except Brain2ImageError as error:
        print(f"brain2image {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return ERROR_STATUS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
