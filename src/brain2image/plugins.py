"""Plug-ins found through package entry points, so the core never imports what plugs into it.

Two groups are read:

- ``brain2image.models``: named model folders, e.g. ``bundled`` (a callable returning the folder
  of a diffusers model in the bundled format);
- ``brain2image.feature_spaces``: evaluation feature spaces, e.g. ``scene`` (a callable taking
  ``device=`` and returning a feature space, see :mod:`brain2image.evaluation.feature_spaces`).

The embedded world (:mod:`brain2image.embedded`) registers its bundled model and its scene
evaluator here through ``[project.entry-points]`` in ``pyproject.toml``; any other package can
register its own the same way.

A run config can also name modules to import before anything else (``plugins = ["my_lab.sources"]``):
:func:`import_plugins` imports them, so a module that registers a data source, a decoder target, a
reconstruction method or a stage in code (``register_source``, ``register_target``,
``register_method``, ``register_stage``) works without an installed entry point, in the run's
process and in every cluster worker (docs/extending.md).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["MODELS", "FEATURE_SPACES", "PLUGINS_KEY", "plugin_names", "load_plugin", "import_plugins"]

#: Entry-point group of named model folders.
MODELS = "brain2image.models"
#: Entry-point group of evaluation feature spaces.
FEATURE_SPACES = "brain2image.feature_spaces"
#: The run-config key listing modules to import first (:func:`import_plugins`).
PLUGINS_KEY = "plugins"


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


def import_plugins(names: Sequence[str], where: str | None = None) -> None:
    """Import the modules of a run config's ``plugins`` list, in order (each registers what it defines).

    A module already imported is not imported again, so calling this in every process of a run
    (the driver, each cluster worker) registers each plug-in once per process.

    Parameters
    ----------
    names : sequence of str
        Importable module names (``"my_lab.sources"``): installed, or on ``sys.path`` / ``PYTHONPATH``.
    where : str, optional
        What the list comes from (a file), for the message.

    Raises
    ------
    InvalidArgumentError
        One line naming the key and the module, when a module cannot be imported (or its import fails).
    """
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # a missing module, or an error raised by the module's own code
            detail = " ".join(str(error).split())
            raise InvalidArgumentError(
                f"{where + ': ' if where else ''}{PLUGINS_KEY} = {json.dumps(list(names))}: cannot import module "
                f"{name!r} ({type(error).__name__}: {detail}); expected an importable module (installed, or "
                "on PYTHONPATH on every machine of the run)") from error
