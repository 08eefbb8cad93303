"""What every command shares: the help format, the common options, the stage commands.

The common options (``-v``, ``--no-progress``) are accepted before or after the command; the
command of a stage is generated from its options.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["HelpFormatter", "common_parent", "add_command_parser", "show_progress", "verbosity",
           "register_stage_command", "stage_register"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default (when it has a meaningful one); lists shown space-separated."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is argparse.SUPPRESS or default is False
                or action.required or not action.option_strings or isinstance(action, argparse._CountAction)):
            return text
        return text + " (default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        if isinstance(action.default, (list, tuple)):
            action = copy.copy(action)
            action.default = " ".join(str(v) for v in action.default) or "none"
        return super()._expand_help(action)


def common_parent() -> argparse.ArgumentParser:
    """The options every command takes after its name (``-v``, ``--no-progress``).

    They have no default of their own (``SUPPRESS``), so a value given before the command name
    survives; ``-v`` counts go to ``verbose_after`` and are added to the main parser's.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("common options (also accepted before the command)")
    group.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=argparse.SUPPRESS,
                       help="more log output (-vv for debug)")
    group.add_argument("--no-progress", dest="no_progress", action="store_true", default=argparse.SUPPRESS,
                       help="hide progress bars")
    return parent


def add_command_parser(subparsers: argparse._SubParsersAction, name: str, *, help: str,
                       description: str) -> argparse.ArgumentParser:
    """Add a command with the common options and the help format."""
    return subparsers.add_parser(name, help=help, description=description, parents=[common_parent()],
                                 formatter_class=HelpFormatter)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether progress bars are shown (no ``--no-progress`` before or after the command)."""
    return not getattr(args, "no_progress", False)


def verbosity(args: argparse.Namespace) -> int:
    """``-v`` count, before and after the command."""
    return int(getattr(args, "verbose", 0) or 0) + int(getattr(args, "verbose_after", 0) or 0)


def _group_title(section: str) -> str:
    if section == "run":
        return "run-wide options (top-level keys of a run config)"
    return f"options ([{section}] keys of a run config)"


def register_stage_command(subparsers: argparse._SubParsersAction, stage: Any) -> argparse.ArgumentParser:
    """Add ``brain2image <stage>``: its parser is generated from ``stage.options()``.

    Options are grouped: inputs and outputs, run-wide keys, one group per config section, and the
    command's own options.
    """
    parser = add_command_parser(subparsers, stage.command_name(), help=stage.help, description=stage.description)
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(title: str) -> argparse._ArgumentGroup:
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    for option in stage.options():
        if option.role is not None:
            option.add_to(group("inputs and outputs"))
        elif option.sections:
            option.add_to(group(_group_title(option.sections[0])))
        else:
            option.add_to(group(f"{stage.command_name()} options"))
    parser.set_defaults(func=functools.partial(_run_stage_command, stage))
    return parser


def _run_stage_command(stage: Any, args: argparse.Namespace) -> int:
    """Run the command inside :func:`~brain2image.stages.base.stage_guard` (device checked, OOM as one line).

    The config the command built is checked first (:func:`~brain2image.config.check_config`; an
    option left unset, ``None``, passes), so a bad value stops it before it reads or writes a file.
    """
    from ..config import check_config
    from ..stages.base import stage_guard

    ctx = stage.context_from_args(args, progress=show_progress(args))
    check_config(ctx.config, allow_none=True)
    with stage_guard(stage, ctx):
        output = stage.command(ctx)
    for line in output.lines:
        print(line)
    for line in output.errors:
        print(line, file=sys.stderr)
    return int(output.code)


def stage_register(name: str) -> Callable[[argparse._SubParsersAction], None]:
    """``register(subparsers)`` of the command of the registered stage ``name``."""

    def register(subparsers: argparse._SubParsersAction) -> None:
        from ..stages import get_stage

        register_stage_command(subparsers, get_stage(name))

    register.__doc__ = f"Add the ``{name}`` subcommand (generated from its stage)."
    return register
