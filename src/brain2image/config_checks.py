"""The checks of config dataclasses: each field against its type and the checks its metadata declares.

A config class declares its fields with :func:`_field` (help text, command-line hints and checks
in ``metadata``); :func:`check_config` and :func:`config_from_dict` check every value against the
field's annotation and those checks, and raise a one-line error naming the key, the value and
what is expected. Nothing here knows a particular section: what a class adds, it declares itself
(the way a scikit-learn estimator declares ``_parameter_constraints``), through optional class
attributes these checks read:

``_section``
    The class's table in a run config (``"decoder"``; ``""``: the top level), which the
    messages name (``run.toml: [decoder] cv_folds = 1: expected ...``). Without it, the
    messages name the key alone.
``_renamed_keys()``
    A classmethod returning the keys renamed or moved (old key -> new key, or ``"[table] key"``),
    which the error of an unknown key names.
``_check_values(values, where, allow_none)``
    A classmethod called with the values given (every field's, for :func:`check_config`) once each
    has passed its own checks: it checks what spans several fields (and the fields marked
    ``label=True``, which the per-field checks skip), may normalise ``values`` in place, and
    raises the one-line error itself.

:mod:`brain2image.config` holds the run config's sections; :func:`_field`, :func:`_shown` and
:func:`_value_message` are for such config classes of this package (the embedded world's training
config included).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, TypeVar

__all__ = ["check_config", "config_from_dict", "config_to_dict", "config_to_json"]

T = TypeVar("T")


def _field(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None, kw_only: bool = False,
           **cli: Any) -> Any:
    """A dataclass field with its help text, CLI hints and checks in ``metadata``.

    ``cli`` may hold ``choices``, ``nargs`` (``"*"`` to allow an empty list), ``parse`` (a
    converter of one command-line token, also applied to a string in a config file), ``metavar``
    and ``cli=False`` (a config-only key); and the checks :func:`check_config` makes on top of the
    type: ``min`` / ``max`` (inclusive) and ``gt`` (exclusive) bounds of a number or of each
    number of a list, ``min_len`` (of a list: default 1, 0 with ``nargs="*"``), ``item_len`` (of
    each list of a list of lists) and ``expected`` (the error's wording of what is expected); for
    a table of scalars (``dict[str, str]``), ``key_choices`` (the allowed keys) and ``table_text``
    (what the table is, in errors), ``parse`` reading ``KEY=VALUE`` tokens, ``allow_empty`` (an
    empty table is valid); ``flag`` (the command-line flag, when not ``--`` + the key); ``label=True``
    marks a field the per-field checks skip (subject labels: the class's ``_check_values`` checks them).
    ``kw_only`` makes the field a keyword-only argument of the class.
    """
    metadata = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, kw_only=kw_only)
    return field(default=default, metadata=metadata, kw_only=kw_only)


def config_to_dict(config: Any) -> dict:
    """A dataclass config as a plain dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_to_json(config: Any) -> str:
    """A dataclass config as indented JSON."""
    return json.dumps(config_to_dict(config), indent=2, sort_keys=True)


class _Invalid(Exception):
    """A value that does not fit its field; ``expected`` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class _Checking:
    """Where the values being checked come from (a file, or None) and whether ``None`` means unset."""

    where: str | None
    allow_none: bool


_NOUNS: dict[Any, tuple[str, str]] = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
                                      float: ("a number", "numbers"), str: ("a string", "strings")}


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a dataclass (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


def _alternatives(hint: Any) -> tuple[Any, ...] | None:
    """The members of a union type (``X | None`` included), or None for another type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _bounds_text(meta: Mapping[str, Any]) -> str:
    """`` ≥ 1``, `` > 0``, `` in [0, 1]``, `` in (0, 1]`` (empty without bounds)."""
    low, high, above = meta.get("min"), meta.get("max"), meta.get("gt")
    if high is not None and (low is not None or above is not None):
        return f" in [{low}, {high}]" if above is None else f" in ({above}, {high}]"
    if low is not None:
        return f" ≥ {low}"
    if above is not None:
        return f" > {above}"
    return f" ≤ {high}" if high is not None else ""


def _describe(hint: Any, meta: Mapping[str, Any], plural: bool = False) -> str:
    """What a value of type ``hint`` with the checks of ``meta`` is, in words."""
    alternatives = _alternatives(hint)
    if alternatives is not None:
        return " or ".join(_describe(a, meta, plural) for a in alternatives if a is not type(None))
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        items = _describe(typing.get_args(hint)[0], meta, plural=True)
        if plural:
            size = meta.get("item_len")
            return f"lists of {size} {items}" if size is not None else f"lists of {items}"
        at_least = meta.get("min_len", 0 if meta.get("nargs") == "*" else 1)
        kind = {0: "a list", 1: "a non-empty list"}.get(at_least, f"a list of at least {at_least}")
        return f"{kind} of {items}"
    if dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        return "tables" if plural else "a table of keys"
    if meta.get("choices"):
        names = ", ".join(json.dumps(c) for c in meta["choices"])
        return f"items from {names}" if plural else f"one of {names}"
    single, many = _NOUNS.get(hint, (f"a {getattr(hint, '__name__', hint)}", f"{getattr(hint, '__name__', hint)}s"))
    return (many if plural else single) + (_bounds_text(meta) if hint in (int, float) else "")


def _fits_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the scalar type ``hint`` (an int for a float; never a bool for a number)."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _fits_bounds(value: Any, meta: Mapping[str, Any]) -> bool:
    """Whether the number ``value`` is within the ``min`` / ``max`` / ``gt`` bounds of ``meta``."""
    low, high, above = meta.get("min"), meta.get("max"), meta.get("gt")
    return ((low is None or value >= low) and (high is None or value <= high)
            and (above is None or value > above))


def _parse_text(value: str, hint: Any, meta: Mapping[str, Any]) -> Any:
    """``meta["parse"](value)`` (the command-line form of a value), an error as :class:`_Invalid`."""
    try:
        return meta["parse"](value)
    except (ValueError, TypeError):
        raise _Invalid(_describe(hint, meta)) from None


def _check_list(value: Any, hint: Any, meta: Mapping[str, Any], checking: _Checking, item: bool) -> Any:
    """A list (or tuple) value: each item checked; a tuple for a ``tuple[...]`` field."""
    inner = typing.get_args(hint)[0]
    if not isinstance(value, (list, tuple)):
        example = f", e.g. [{json.dumps(value)}]" if isinstance(value, str) and inner is str else ""
        raise _Invalid(_describe(hint, meta) + example)
    if item:
        bad_length = meta.get("item_len") is not None and len(value) != meta["item_len"]
    else:
        bad_length = len(value) < meta.get("min_len", 0 if meta.get("nargs") == "*" else 1)
    if bad_length:
        raise _Invalid(_describe(hint, meta))
    items = []
    for entry in value:
        try:
            if isinstance(entry, str) and inner is not str and "parse" in meta and "nargs" in meta:
                entry = _parse_text(entry, inner, meta)
            items.append(_check_value(entry, inner, meta, checking, item=True))
        except _Invalid:
            raise _Invalid(_describe(hint, meta)) from None
    if typing.get_origin(hint) is tuple:
        return tuple(items)
    return items if any(a is not b for a, b in zip(items, value, strict=True)) else value


def _check_union(value: Any, hint: Any, meta: Mapping[str, Any], checking: _Checking, item: bool) -> Any:
    """``value`` checked against the first member of the union ``hint`` it fits (None when one is None)."""
    alternatives = typing.get_args(hint)
    if value is None and type(None) in alternatives:
        return None
    for alternative in alternatives:
        try:
            return _check_value(value, alternative, meta, checking, item)
        except _Invalid:
            continue
    raise _Invalid(_describe(hint, meta))


def _check_mapping(value: Any, hint: Any, meta: Mapping[str, Any], checking: _Checking) -> dict[str, Any]:
    """A table of scalars (``dict[str, str]``): from a config file, or ``KEY=VALUE`` pairs from the command line.

    Keys must be among ``meta["key_choices"]`` when given; each value is checked against the value type.
    """
    if isinstance(value, (list, tuple)) and "parse" in meta:
        try:
            value = dict(meta["parse"](v) if isinstance(v, str) else tuple(v) for v in value)
        except (ValueError, TypeError):
            raise _Invalid(_describe(hint, meta)) from None
    if not isinstance(value, dict) or not (value or meta.get("allow_empty")):
        raise _Invalid(meta.get("table_text", _describe(hint, meta)))
    choices = meta.get("key_choices")
    key_type, value_type = typing.get_args(hint)
    for key, entry in value.items():
        if not _fits_type(key, key_type) or (choices is not None and key not in choices):
            names = f"; keys: one of {', '.join(json.dumps(c) for c in choices)}" if choices is not None else ""
            raise _Invalid(f"{meta.get('table_text', _describe(hint, meta))}{names} (got key {json.dumps(key)})")
        try:
            _check_value(entry, value_type, {}, checking, item=True)
        except _Invalid:
            raise _Invalid(f"{meta.get('table_text', _describe(hint, meta))}; values: {_describe(value_type, {}, True)}"
                           ) from None
    return dict(value)


def _check_table(value: Any, hint: Any, checking: _Checking) -> Any:
    """A section (a dataclass instance, checked in turn) or a table of tables (``stage_settings``)."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):  # type: ignore[arg-type]
            raise _Invalid(f"a {hint.__name__}")  # type: ignore[union-attr]
        check_config(value, checking.where, allow_none=checking.allow_none)
    elif not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise _Invalid("a table of tables")
    return value


def _check_value(value: Any, hint: Any, meta: Mapping[str, Any], checking: _Checking, item: bool = False) -> Any:
    """``value`` checked against ``hint`` and the checks of ``meta``; raises :class:`_Invalid`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, hint, meta, checking, item)
    if origin in (list, tuple):
        return _check_list(value, hint, meta, checking, item)
    if origin is dict and dict not in (typing.get_args(hint)[1], typing.get_origin(typing.get_args(hint)[1])):
        return _check_mapping(value, hint, meta, checking)
    if dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        return _check_table(value, hint, checking)
    if hint is Any:
        return value
    fits = _fits_type(value, hint)
    if fits and meta.get("choices"):
        fits = value in meta["choices"]
    if fits and hint in (int, float):
        fits = _fits_bounds(value, meta)
    if not fits:
        raise _Invalid(_describe(hint, meta))
    return value


def _section_of(cls: type) -> str | None:
    """The run-config table of a config class, as it declares it (``_section``; ``""``: the top level; None: none)."""
    return getattr(cls, "_section", None)


def _shown(value: Any) -> str:
    """A value as a config file writes it (``"5"``, ``true``, ``[1, 2]``), shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_message(cls: type, f: dataclasses.Field, value: Any, expected: str, where: str | None) -> str:
    """``<where>: [section] key = value (--flag): expected ...`` (the flag when not from a file)."""
    section = _section_of(cls)
    label = f"[{section}] {f.name}" if section else f.name
    flag = ""
    if where is None and "help" in f.metadata and f.metadata.get("cli", True):
        flag = f" ({f.metadata.get('flag') or '--' + f.name.replace('_', '-')})"
    return f"{where + ': ' if where else ''}{label} = {_shown(value)}{flag}: expected {expected}"


def _checked_values(cls: type, values: Mapping[str, Any], checking: _Checking) -> dict[str, Any]:
    """The values of known fields of ``cls``, each checked (tuple fields as tuples)."""
    from .errors import InvalidArgumentError

    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(values)
    for key, value in values.items():
        f = fields[key]
        if (value is None and checking.allow_none) or f.metadata.get("label"):
            continue
        hint = hints.get(key, Any)
        try:
            if isinstance(value, str) and "parse" in f.metadata and "nargs" not in f.metadata:
                value = _parse_text(value, hint, f.metadata)
            out[key] = _check_value(value, hint, f.metadata, checking)
        except _Invalid as invalid:
            expected = f.metadata.get("expected", invalid.expected)
            raise InvalidArgumentError(_value_message(cls, f, values[key], expected, checking.where)) from None
    check_values = getattr(cls, "_check_values", None)
    if check_values is not None:
        check_values(out, checking.where, checking.allow_none)
    return out


def check_config(config: Any, where: str | None = None, *, allow_none: bool = False) -> None:
    """Check every field of a config dataclass (sections included) against its type and checks.

    The type comes from the annotation (``int``, ``float`` (an int is one), ``bool``, ``str``,
    ``X | None``, lists, tuples, sections), the rest from the field's metadata (:func:`_field`:
    ``choices``, ``min`` / ``max`` / ``gt``, ``min_len``, ``item_len``).

    Parameters
    ----------
    config : dataclass instance
        A :class:`~brain2image.config.RunConfig`, a section, or a stage's settings.
    where : str, optional
        What the values come from (a file), for the message; None: the message names the flag.
    allow_none : bool
        Accept ``None`` in any field (an option a stage command leaves unset, e.g. ``nsd_root``).

    Raises
    ------
    InvalidArgumentError
        For the first value that does not fit, naming ``[section] key``, the value and what is expected.
    """
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    _checked_values(type(config), values, _Checking(where, allow_none))


def _unknown_key_message(key: str, names: list[str], where: str, renamed: Mapping[str, str]) -> str:
    """``unknown key 'n_folds' in <where>; did you mean 'cv_folds'?`` (or the list of known keys).

    ``renamed``: keys renamed or moved (old -> new key, or ``"[table] key"``), named before a close match.
    """
    hint = renamed.get(key)
    if hint is None or (not hint.startswith("[") and hint not in names):
        close = difflib.get_close_matches(key, names, n=1)
        hint = close[0] if close else None
    known = f"; expected one of {names}"
    return f"unknown key {key!r} in {where}" + (f"; did you mean {hint!r}?" if hint else "") + known


def _location(cls: type, where: str | None) -> str:
    """Where an unknown key is: ``<where> [decoder]``, ``<where> (top level)``, or the class name."""
    if where is None:
        return cls.__name__
    section = _section_of(cls)
    if section is None:
        return where
    return f"{where} [{section}]" if section else f"{where} (top level)"


def config_from_dict(cls: type[T], values: dict, where: str | None = None, *, allow_none: bool = True) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys and values that do not fit (:func:`check_config`).

    Parameters
    ----------
    cls : dataclass type
    values : dict
    where : str, optional
        What ``values`` come from (a file) for the error message (the table is added for a
        section of a run config); None: a stage command's options or the Python API (the message
        names the flag).
    allow_none : bool
        Accept ``None`` for any key, meaning the option was left unset (a stage command's
        ``--nsd-root``); a run config read from a file is checked with ``False``.

    Raises
    ------
    DataFormatError
        For an unknown key (the message names the key, the new name of a renamed key, and the
        known keys).
    InvalidArgumentError
        For a value of the wrong type, out of range or not one of the choices (the message names
        the key, the value and what is expected).
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        from .errors import DataFormatError

        renamed_keys = getattr(cls, "_renamed_keys", None)
        renamed = renamed_keys() if renamed_keys is not None else {}
        raise DataFormatError(_unknown_key_message(unknown[0], names, _location(cls, where), renamed))
    return cls(**_checked_values(cls, values, _Checking(where, allow_none)))
