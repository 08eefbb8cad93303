"""What every command shares: the help format, the common options, the stage commands.

The common options (``-v``, ``--no-progress``) are accepted before or after the command; the
command of a stage is generated from its options.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["HelpFormatter", "common_parent", "add_command_parser", "show_progress", "library_noise", "verbosity",
           "register_stage_command", "RENAMED_OPTIONS", "add_renamed_options"]


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


#: Old spellings of options (docs/cli.md, "Renamed options and keys"): command -> old flag -> what replaces it.
#: Each is refused in one line naming its replacement (no abbreviation is accepted, so none can prefix-match).
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "prepare": {"--format": "--beta-format",
                "--raw-int16": "--scale raw"},
    "features": {"--resolution": "--z-resolution"},
    "fit": {"--dtype": "--ridge-dtype", "--progress": "--no-progress (progress is on by default)"},
    "reconstruct": {"--steps": "--num-inference-steps", "--guidance": "--guidance-scale"},
    "encode": {"--folds": "--cv-folds", "--banded-iter": "--banded-n-iter", "--pair": "--partition-pairs A:B [A:B ...]",
               "--steps": "--num-inference-steps", "--guidance": "--guidance-scale",
               "--progress": "--no-progress (progress is on by default)"},
}


class _Renamed(argparse.Action):
    """A hidden old spelling: using it is a one-line usage error naming the new one."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        """Refuse the option (``parser.error``: one line, exit status 2)."""
        parser.error(f"{option_string} was renamed to {self.const}")


def add_renamed_options(subparsers: argparse._SubParsersAction) -> None:
    """Give each command the old spellings of its options (:data:`RENAMED_OPTIONS`), hidden, as errors.

    An old spelling that is a current option of the command (``fit --roi``) stays that option.
    """
    for command, renamed in RENAMED_OPTIONS.items():
        parser = subparsers.choices.get(command)
        if parser is None:
            continue
        for old, new in renamed.items():
            if old not in parser._option_string_actions:
                parser.add_argument(old, action=_Renamed, nargs="*", const=new, default=argparse.SUPPRESS,
                                    help=argparse.SUPPRESS)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether progress bars are shown (no ``--no-progress`` before or after the command)."""
    return not getattr(args, "no_progress", False)


#: Libraries whose deprecation chatter ``--no-progress`` silences (brain2image warns of nothing itself,
#: so a library warning attributed to its calling line is theirs too).
_NOISY_MODULES = r"(diffusers|transformers|huggingface_hub|brain2image)(\.|$)"
#: Modules with a global switch of their progress bars (``is_progress_bar_enabled`` etc.).
_BAR_MODULES = ("transformers.utils.logging", "diffusers.utils.logging")


def _switch_off_bars(import_libraries: bool) -> Callable[[], None]:
    """Turn off the progress bars of huggingface_hub, transformers and diffusers; returns the undo.

    transformers and diffusers are imported here only with ``import_libraries`` (a command that
    loads a model); otherwise the ones already imported are switched, and transformers, imported
    later, starts with huggingface_hub's setting (off). The undo restores each one's former state.
    """
    from huggingface_hub import utils as hub

    hub_on = not hub.are_progress_bars_disabled()
    modules = {name: sys.modules.get(name) or (importlib.import_module(name) if import_libraries else None)
               for name in _BAR_MODULES}
    was_on = {name: module.is_progress_bar_enabled() if module else hub_on for name, module in modules.items()}
    hub.disable_progress_bars()
    for module in modules.values():
        if module is not None:
            module.disable_progress_bar()

    def undo() -> None:
        for name in _BAR_MODULES:
            module = sys.modules.get(name)
            if module is not None and was_on[name]:
                module.enable_progress_bar()
        if hub_on:
            hub.enable_progress_bars()

    return undo


@contextlib.contextmanager
def library_noise(progress: bool, loads_model: bool = True) -> Iterator[None]:
    """Under ``--no-progress`` (``progress`` false), no library progress bars or deprecation warnings.

    For the block only: the progress bars of huggingface_hub, transformers and diffusers ("Loading
    weights", "Loading pipeline components") are switched off and their ``FutureWarning`` /
    ``DeprecationWarning`` ignored; both are restored afterwards. With ``progress`` it does nothing.

    Parameters
    ----------
    progress : bool
        :func:`show_progress` of the command.
    loads_model : bool
        Whether the block may load a model (transformers and diffusers are then imported up front to
        switch their bars off; a command that loads none does not pay for the import).
    """
    if progress:
        yield
        return
    undo = _switch_off_bars(loads_model)
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=_NOISY_MODULES)
            yield
    finally:
        undo()


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
    with library_noise(ctx.progress, stage.needs_model(ctx.config)), stage_guard(stage, ctx):
        output = stage.command(ctx)
    for line in output.lines:
        print(line)
    for line in output.errors:
        print(line, file=sys.stderr)
    return int(output.code)

