"""The stage registry: every stage, in pipeline order.

The built-in stages register themselves (``@register_stage``) when their modules are imported
(the package's ``__init__`` imports them all); :data:`BUILTIN_MODULES` lists them in pipeline
order, which is their order in the registry whatever the import order. Other packages add stages through the
``brain2image.stages`` entry-point group (the entry point names a module whose import registers
its stages, or a :class:`~brain2image.stages.base.Stage` subclass); code can also call
:func:`register_stage` directly (``after=`` / ``before=`` place the stage).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib.metadata import entry_points
from typing import Any, TypeVar

from ..config import RUN_SECTIONS, RunConfig
from ..errors import DataFormatError, InvalidArgumentError
from .base import Stage

__all__ = ["BUILTIN_MODULES", "ENTRY_POINT_GROUP", "load_builtin_stages", "register_stage", "unregister_stage",
           "pipeline_stages", "get_stage", "stage_names", "check_stage_settings", "replaced_by"]

logger = logging.getLogger(__name__)

#: Modules of the built-in stages, in pipeline order.
BUILTIN_MODULES = ("prepare", "features", "fit", "transfer", "reconstruct", "evaluate", "encode", "brain_correlation",
                   "report")
#: Entry-point group of stages from other packages.
ENTRY_POINT_GROUP = "brain2image.stages"

S = TypeVar("S", bound=type[Stage])

_STAGES: list[Stage] = []
_loaded = False


def _builtin_rank(stage_cls: type[Stage]) -> int | None:
    """Index in :data:`BUILTIN_MODULES` of a built-in stage's module (``None`` for other stages)."""
    module = stage_cls.__module__.rpartition(".")
    if module[0] != __package__ or module[2] not in BUILTIN_MODULES:
        return None
    return BUILTIN_MODULES.index(module[2])


def _position(stage_cls: type[Stage], after: str | None, before: str | None) -> int:
    """Where a new stage goes in the registry.

    Built-ins by :data:`BUILTIN_MODULES` (whatever the import order), others after / before their
    anchor, or last.
    """
    rank = _builtin_rank(stage_cls)
    if rank is not None:
        ranks = [_builtin_rank(type(s)) for s in _STAGES]
        later = [i for i, r in enumerate(ranks) if r is not None and r > rank]
        return later[0] if later else len(_STAGES)
    names = [s.name for s in _STAGES]
    anchor = after if after is not None else before
    if anchor is None:
        return len(_STAGES)
    if anchor not in names:
        raise InvalidArgumentError(f"cannot place a stage relative to {anchor!r}: no such stage; "
                                   f"expected one of {names}")
    return names.index(anchor) + (1 if after is not None else 0)


def register_stage(cls: S | None = None, *, after: str | None = None, before: str | None = None) -> Any:
    """Register a :class:`Stage` subclass (a class decorator, with or without arguments).

    Parameters
    ----------
    cls : Stage subclass
    after, before : str, optional
        Name of the stage it runs after (or before); default: last.

    Returns
    -------
    The class, unchanged.

    Raises
    ------
    InvalidArgumentError
        For a class without a ``name``, a name already taken, or an unknown anchor.
    """
    def decorate(stage_cls: S) -> S:
        if after is not None or before is not None:
            _load()
        if not stage_cls.name:
            raise InvalidArgumentError(f"{stage_cls.__name__}: a stage needs a class attribute 'name'")
        if stage_cls.name in stage_names(load=False):
            raise InvalidArgumentError(f"a stage named {stage_cls.name!r} is already registered")
        _STAGES.insert(_position(stage_cls, after, before), stage_cls())
        return stage_cls

    return decorate if cls is None else decorate(cls)


def unregister_stage(name: str) -> None:
    """Remove a registered stage (tests, plug-ins replacing a stage)."""
    _STAGES[:] = [s for s in _STAGES if s.name != name]


def load_builtin_stages() -> None:
    """Import the built-in stage modules (each registers its stage in its pipeline place)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def _load() -> None:
    """Register the built-in stages and the stages of installed plug-ins (entry points), once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    load_builtin_stages()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Stage) and loaded.name not in stage_names(load=False):
            register_stage(loaded)


def pipeline_stages() -> list[Stage]:
    """Every registered stage, in pipeline order."""
    _load()
    return list(_STAGES)


def stage_names(load: bool = True) -> list[str]:
    """Names of the registered stages, in pipeline order."""
    if load:
        _load()
    return [s.name for s in _STAGES]


def get_stage(name: str) -> Stage:
    """The registered stage ``name`` (``-`` and ``_`` are the same).

    Raises
    ------
    InvalidArgumentError
        When no stage has that name (the message lists them).
    """
    wanted = name.replace("-", "_")
    for stage in pipeline_stages():
        if stage.name == wanted:
            return stage
    raise InvalidArgumentError(f"no stage named {name!r}; expected one of {stage_names()}")


def replaced_by(name: str, config: RunConfig) -> str | None:
    """The enabled stage that replaces stage ``name`` with ``config`` (:attr:`Stage.replaces`), if any.

    ``transfer`` (a ``[transfer]`` table) replaces ``fit``: it writes the decoder files instead.
    """
    for stage in pipeline_stages():
        if name in stage.replaces and stage.enabled(config):
            return stage.name
    return None


def check_stage_settings(config: RunConfig) -> None:
    """Check the run config's tables of registered stages' own settings (``config.stage_settings``).

    Raises
    ------
    DataFormatError
        For a table no stage owns (the message suggests the closest table name) or an unknown key.
    """
    owners = {s.name: s for s in pipeline_stages() if s.settings_class is not None}
    for name in config.stage_settings:
        if name not in owners:
            known = sorted([*RUN_SECTIONS, *owners])
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise DataFormatError(f"unknown table [{name}] in the run config{hint}; expected one of {known}")
        owners[name].settings(config)
