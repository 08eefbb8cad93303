"""The registry of data sources, by kind (``[source] kind`` of a run config).

Sources register through the ``brain2image.sources`` entry-point group: the entry point names a
callable that takes the run's :class:`~brain2image.config.SourceConfig` and returns a
:class:`~brain2image.sources.base.DataSource` (NSD's is ``nsd =
"brain2image.sources.nsd.source:NSDSource"`` in ``pyproject.toml``). Code can also call
:func:`register_source` (tests, a source defined in a script).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from .base import DataSource, StimulusSource

if TYPE_CHECKING:
    from ..config import RunConfig, SourceConfig

__all__ = ["ENTRY_POINT_GROUP", "SourceFactory", "register_source", "unregister_source", "source_kinds",
           "get_source", "source_of", "stimuli_of", "stimuli_of_record"]

#: Entry-point group of data sources.
ENTRY_POINT_GROUP = "brain2image.sources"

#: What a source registers: the run's source config -> the source.
SourceFactory = Callable[["SourceConfig"], DataSource]

_SOURCES: dict[str, SourceFactory] = {}
_loaded = False


def _load() -> None:
    """Register the sources of installed packages (entry points), once; code registrations are kept."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _SOURCES.setdefault(entry.name, entry.load())


def register_source(kind: str, factory: SourceFactory) -> SourceFactory:
    """Register ``factory`` as the source of ``kind``.

    Raises
    ------
    InvalidArgumentError
        When ``kind`` is already registered.
    """
    _load()
    if kind in _SOURCES:
        raise InvalidArgumentError(f"a data source of kind {kind!r} is already registered")
    _SOURCES[kind] = factory
    return factory


def unregister_source(kind: str) -> None:
    """Remove a registered source (tests, a plug-in replacing one)."""
    _SOURCES.pop(kind, None)


def source_kinds() -> list[str]:
    """The registered kinds, sorted."""
    _load()
    return sorted(_SOURCES)


def get_source(config: SourceConfig) -> DataSource:
    """The source ``config.kind`` made from ``config``.

    Raises
    ------
    InvalidArgumentError
        When no source of that kind is registered (the message lists the registered kinds).
    """
    _load()
    factory = _SOURCES.get(config.kind)
    if factory is None:
        raise InvalidArgumentError(
            f"[source] kind = {config.kind!r}: no such data source; expected one of {source_kinds()} "
            "(sources come from the brain2image.sources entry points of installed packages)")
    return factory(config)


def source_of(config: RunConfig | SourceConfig) -> DataSource:
    """The data source of a run config (its ``source``), or of a source config."""
    from ..config import RunConfig

    return get_source(config.source if isinstance(config, RunConfig) else config)


def stimuli_of(config: RunConfig | SourceConfig) -> StimulusSource:
    """The stimuli of a run config's source (or of a source config's)."""
    return source_of(config).stimuli()


def stimuli_of_record(record: Mapping[str, Any]) -> StimulusSource | None:
    """The stimuli named by a saved run config (``run_config.json``, old or new), or None without a source.

    A run folder's config holds ``nsd_root`` (every folder written so far) or a ``source`` table; its
    ``plugins`` are imported first (a source a plug-in registers).
    """
    from ..config import SourceConfig
    from ..plugins import import_plugins

    import_plugins(record.get("plugins") or [])
    table = record.get("source")
    if isinstance(table, Mapping):
        known = {f.name for f in dataclasses.fields(SourceConfig)}
        return stimuli_of(SourceConfig(**{key: value for key, value in table.items() if key in known}))
    if record.get("nsd_root"):
        return stimuli_of(SourceConfig(root=str(record["nsd_root"])))
    return None
