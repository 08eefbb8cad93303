"""Plug-ins found through package entry points, so the core never imports what plugs into it.

Two groups are read:

- ``brain2image.models``: named model folders, e.g. ``bundled`` (a callable returning the folder
  of a diffusers model in the bundled format);
- ``brain2image.feature_spaces``: evaluation feature spaces, e.g. ``scene`` (a callable taking
  ``device=`` and returning a feature space, see :mod:`brain2image.evaluation.feature_spaces`).

The embedded world (:mod:`brain2image.embedded`) registers its bundled model and its scene
evaluator here through ``[project.entry-points]`` in ``pyproject.toml``; any other package can
register its own the same way.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["MODELS", "FEATURE_SPACES", "plugin_names", "load_plugin"]

#: Entry-point group of named model folders.
MODELS = "brain2image.models"
#: Entry-point group of evaluation feature spaces.
FEATURE_SPACES = "brain2image.feature_spaces"


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def plugin_names(group: str) -> list[str]:
    """Sorted names registered in an entry-point ``group``."""
    return sorted(_entry_points(group))


def load_plugin(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group``.

    Raises
    ------
    InvalidArgumentError
        When nothing is registered under that name (the message lists what is).
    """
    found = _entry_points(group)
    if name not in found:
        raise InvalidArgumentError(
            f"no {group} plug-in named {name!r}; registered: {sorted(found) or 'none'} "
            "(entry points come from installed packages: reinstall brain2image with `make install`)")
    return found[name].load()
