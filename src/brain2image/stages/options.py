"""Options of a stage, each defined once: its flag, config key, type, default and help.

An :class:`Option` is either a config key (``sections`` names the run-config tables it sets, or
:data:`RUN` for a top-level key), an explicit input / output path of the stage command
(``role``), or an option of the command alone. :func:`section_options` builds the options of a
config dataclass from its fields (help text in ``metadata["help"]``, see
:mod:`brain2image.config`). The flag of a key is ``--`` + the key with ``_`` → ``-``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import Brain2ImageError, InvalidArgumentError

__all__ = ["Option", "AccumulateList", "RUN", "section_options",
           "merge_options", "flag_of", "shard_option", "target_part_option"]

#: ``sections`` value of a top-level (run-wide) key of a run config (``model``, ``device``, ...).
RUN = "run"


def flag_of(key: str) -> str:
    """The command-line flag of a config key: ``cv_folds`` -> ``--cv-folds``."""
    return "--" + key.replace("_", "-")


class AccumulateList(argparse.Action):
    """The action of every list option: a repeated option accumulates (``--rois a --rois b`` = both).

    The first occurrence replaces the default; each later one extends the list (argparse's
    ``"extend"`` would extend the default too).
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        """Set the option's list to ``values``, or add them to the values of an earlier occurrence."""
        current = getattr(namespace, self.dest, None)
        earlier = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, earlier + list(values))


@dataclass(frozen=True)
class Option:
    """One option of a stage.

    Parameters
    ----------
    key : str
        Config key and ``argparse`` dest; the flag is :func:`flag_of` ``(key)``.
    help : str
        Help text (the default is appended by the CLI's help formatter).
    default : object
        Default value (for a config key: the dataclass field's default).
    type : callable, optional
        Converter of one command-line token.
    nargs : str, optional
        ``"+"`` / ``"*"`` for list values (a repeated list option accumulates: :class:`AccumulateList`).
    choices : sequence, optional
        Allowed values (a live view such as a registry's names is read when the parser is built).
    sections : tuple of str
        Run-config sections the value goes to (``("decoder",)``; :data:`RUN` for a top-level key);
        empty for an option of the command alone.
    role : {"input", "output"}, optional
        An explicit input or output path of the stage command (in a run folder, the stage finds
        its files through :class:`~brain2image.formats.run_layout.RunLayout`).
    required, metavar, hidden, positional : see :mod:`argparse`
    cli_flag : str, optional
        The flag, when not :func:`flag_of` ``(key)`` (a config field's ``flag`` metadata).
    action : str or Action class, optional
        ``"store_true"``, ``"append"``, or :class:`argparse.BooleanOptionalAction` for booleans.
    """

    key: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    nargs: str | None = None
    choices: Sequence[Any] | None = None
    sections: tuple[str, ...] = ()
    role: str | None = None
    required: bool = False
    metavar: str | None = None
    action: Any = None
    hidden: bool = False
    positional: bool = False
    cli_flag: str | None = None

    @property
    def flag(self) -> str:
        """``cli_flag`` when given (``[source] kind`` is ``--source``), else ``--`` + the key with ``_`` -> ``-``."""
        return self.cli_flag or flag_of(self.key)

    def replace(self, **changes: Any) -> Option:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Add this option to an ``argparse`` parser or argument group."""
        kwargs: dict[str, Any] = {"help": argparse.SUPPRESS if self.hidden else self.help, "default": self.default}
        if self.type is not None:
            kwargs["type"] = self.type
        if self.positional:
            parser.add_argument(self.key, metavar=self.metavar, **kwargs)
            return
        if self.action in ("store_true", argparse.BooleanOptionalAction):
            parser.add_argument(self.flag, dest=self.key, action=self.action, **kwargs)
            return
        if self.action:
            kwargs["action"] = self.action
        elif self.nargs in ("+", "*"):
            kwargs["action"] = AccumulateList
        parser.add_argument(self.flag, dest=self.key, nargs=self.nargs, choices=self.choices, required=self.required,
                            metavar=self.metavar, **kwargs)


def _token_converter(func: Callable[[str], Any]) -> Callable[[str], Any]:
    """``func`` with its errors turned into argparse's (so the message reaches the user)."""

    def convert(text: str) -> Any:
        try:
            return func(text)
        except (ValueError, Brain2ImageError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(func, "__name__", "value")
    return convert


def _unwrap_optional(hint: Any) -> Any:
    """``X | None`` -> ``X`` (other hints unchanged)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _field_option(f: dataclasses.Field, hint: Any, section: str, default: Any) -> Option:
    """The option of one config field."""
    meta = f.metadata
    hint = _unwrap_optional(hint)
    common = {"key": f.name, "help": meta["help"], "default": default, "sections": (section,),
              "choices": meta.get("choices"), "metavar": meta.get("metavar"), "cli_flag": meta.get("flag")}
    if "parse" in meta:
        return Option(type=_token_converter(meta["parse"]), nargs=meta.get("nargs"), **common)
    if hint is bool:
        return Option(action=argparse.BooleanOptionalAction, **{**common, "choices": None})
    if typing.get_origin(hint) in (list, tuple):
        return Option(type=typing.get_args(hint)[0], nargs=meta.get("nargs", "+"), **common)
    return Option(type=hint if hint in (int, float, str) else None, nargs=meta.get("nargs"), **common)


def section_options(cls: type, section: str, keys: Iterable[str] | None = None) -> list[Option]:
    """The options of a config dataclass's fields that have help text and are not ``cli=False``.

    Parameters
    ----------
    cls : dataclass type
        A config section (:mod:`brain2image.config`).
    section : str
        Its run-config table (``"decoder"``), or :data:`RUN` for :class:`~brain2image.config.RunConfig`'s
        top-level keys.
    keys : iterable of str, optional
        Only these fields, in this order.

    Returns
    -------
    list of Option
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    wanted = list(keys) if keys is not None else list(fields)
    out = []
    for name in wanted:
        f = fields[name]
        if "help" not in f.metadata or f.metadata.get("cli", True) is False:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None  # a required key (nsd_root, out_dir)
        out.append(_field_option(f, hints[name], section, default))
    return out


def merge_options(options: Iterable[Option], overrides: dict[str, dict[str, Any]] | None = None) -> tuple[Option, ...]:
    """Options with one entry per key: a key found in several sections sets all of them.

    Parameters
    ----------
    options : iterable of Option
    overrides : dict, optional
        Per key, fields to change (``{"subject": {"required": True}}``).
    """
    merged: dict[str, Option] = {}
    for option in options:
        if option.key in merged:
            first = merged[option.key]
            if not first.sections or not option.sections:
                raise InvalidArgumentError(f"option {option.flag} is defined twice; expected one definition per "
                                           "key (a key shared by config sections sets all of them)")
            added = tuple(s for s in option.sections if s not in first.sections)
            merged[option.key] = first.replace(sections=first.sections + added, help=first.help + "".join(
                f"; also sets [{s}] {option.key}" for s in added))
        else:
            merged[option.key] = option
    for key, changes in (overrides or {}).items():
        if key in merged:
            merged[key] = merged[key].replace(**changes)
    return tuple(merged.values())


def _parse_shard(text: str) -> tuple[int, int]:
    from ..formats.partitions import parse_shard

    return parse_shard(text)


#: The ``--shard i/n`` option of the stages that run on a part of the image ids.
shard_option = Option("shard", "run only part i of n (1-based) of the image ids, e.g. 1/4",
                      type=_token_converter(_parse_shard), metavar="I/N")


def _parse_target_part(text: str) -> tuple[int, int]:
    from ..errors import InvalidArgumentError

    try:
        return _parse_shard(text)
    except InvalidArgumentError:
        raise InvalidArgumentError(f"target part {text}: expected i/n with integers 1 ≤ i ≤ n, e.g. 1/4") from None


#: ``fit --target-part i/n``: one part of a decoder's targets (joined with ``brain2image merge``).
target_part_option = Option("target_part", "fit only part i of n (1-based) of the targets' columns, into "
                            "<decoder>.part-i-of-n.h5; join the parts with brain2image merge DECODER.h5",
                            type=_token_converter(_parse_target_part), metavar="I/N")
