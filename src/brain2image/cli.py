"""The ``brain2image`` command line: a thin wrapper over the library's stages.

The command of each registered stage (:mod:`brain2image.stages`) is generated from its options;
the other commands live in ``brain2image.commands.<name>`` and expose
``register(subparsers) -> None``, which adds the parser and sets ``func(args) -> int``.
``-v`` and ``--no-progress`` are accepted before or after the command. A
:class:`~brain2image.errors.Brain2ImageError` is printed as one line and exits with status 2; so is
a usage error (an unknown option, a value argparse cannot convert). SIGINT (Ctrl-C) or SIGTERM
ends a command with one line naming the stage it interrupted (:mod:`brain2image.interrupts`) and
exit status 130 or 143; finished work is kept, and the same command resumes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .commands._common import HelpFormatter, library_noise, register_stage_command, show_progress, verbosity
from .errors import Brain2ImageError
from .interrupts import interrupted_message, interrupted_status, signals_interrupt

__all__ = ["main", "build_parser", "OneLineParser", "COMMANDS_BEFORE_STAGES", "COMMANDS_AFTER_STAGES", "ERROR_STATUS"]

#: Command modules listed before the stage commands in ``--help``.
COMMANDS_BEFORE_STAGES = ("simulate",)
#: Command modules listed after the stage commands (which follow the pipeline's order).
COMMANDS_AFTER_STAGES = ("demo", "run", "merge", "train_bundled", "transfer_curve")
#: Exit status of a command stopped by a :class:`~brain2image.errors.Brain2ImageError` (as argparse's usage errors).
ERROR_STATUS = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (no usage dump), exit status 2.

    The command parsers are made by ``add_subparsers`` of this class, so they are of it too. No
    parser accepts an abbreviated option (``allow_abbrev`` is off): ``--n-samp`` is an unknown option,
    not ``--n-samples``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>; see <prog> --help`` on stderr and exit with status 2."""
        self.exit(ERROR_STATUS, f"{self.prog}: error: {_one_line(message)}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser.

    Commands: ``simulate``, every registered stage in pipeline order, then ``demo``, ``run``,
    ``merge``, ``train-bundled`` and ``transfer-curve``.
    """
    from .commands._common import add_renamed_options
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
    add_renamed_options(subparsers)
    return parser


def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


def _refuse_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]) -> NoReturn:
    """A usage error of the command's parser for arguments it does not know, naming the options they abbreviate."""
    command = parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and args.command in action.choices:
            command = action.choices[args.command]
    known = [flag for flag, action in command._option_string_actions.items()
             if flag.startswith("--") and action.help != argparse.SUPPRESS]
    hints = []
    for token in unknown:
        name = token.split("=", 1)[0]
        matches = sorted(flag for flag in known if name.startswith("--") and flag.startswith(name))
        if matches:
            hints.append(f"abbreviations are not accepted: write {' or '.join(matches)} for {name}")
    command.error(" ".join(["unrecognized arguments:", *unknown]) + "".join(f"; {hint}" for hint in hints))


#: Commands outside the stages that load a model (their library noise is silenced up front).
_MODEL_COMMANDS = ("demo", "run", "train-bundled", "transfer-curve")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2: usage error or :class:`Brain2ImageError`; 130 / 143: SIGINT / SIGTERM)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(parser, args, unknown)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity(args), 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """Run the parsed command: an error is one line (status 2), SIGINT / SIGTERM one line (130 / 143)."""
    try:
        # Stage commands wrap themselves (loading transformers/diffusers only when they need a model).
        with signals_interrupt(), library_noise(show_progress(args), loads_model=args.command in _MODEL_COMMANDS):
            return int(args.func(args) or 0)
    except Brain2ImageError as error:
        print(f"brain2image {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return ERROR_STATUS
    except KeyboardInterrupt as error:
        message, status = interrupted_message(args.command, error), interrupted_status(error)
    # Printed once the interrupt's frames are gone, so a progress bar they held has closed before it.
    print(message, file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
