"""Explicit himalaya backends: resolved by name, never installed globally by library code.

The ridge core (:mod:`brain2image.ridge._solvers`) takes the backend module as an argument
and calls its array functions (``asarray``, ``matmul``, ``eigh``, ``svd``, ``to_numpy``, ...)
directly, so two fits on two backends can run in the same process without interfering.

himalaya's own estimators (``RidgeCV``, ``KernelRidgeCV``, ``MultipleKernelRidgeCV``, used
by the encoding models for their kernel and banded solvers) have no backend argument: they
read himalaya's process-wide backend (``himalaya.backend.get_backend()``) on every call. For
them, and only for them, :func:`himalaya_backend` sets that global for the duration of a
``with`` block and restores the previous one afterwards, even on error. It is the one place
in the package that calls ``himalaya.backend.set_backend``; it is not thread-safe (two
threads fitting himalaya estimators on different backends would race on the global).
"""

from __future__ import annotations

import contextlib
import importlib
import types
from collections.abc import Iterator

from ..errors import InvalidArgumentError

__all__ = ["BACKENDS", "BackendLike", "backend_name", "get_backend", "himalaya_backend"]

#: himalaya backend names accepted by the ridge core.
BACKENDS: tuple[str, ...] = ("numpy", "torch", "torch_cuda", "cupy", "torch_mps")

#: A backend name from :data:`BACKENDS` or an already imported himalaya backend module.
BackendLike = str | types.ModuleType


def backend_name(backend: BackendLike) -> str:
    """The name of a backend given by name or module.

    Parameters
    ----------
    backend : str or module
        A name from :data:`BACKENDS` or a himalaya backend module (which has a ``name``).

    Returns
    -------
    str

    Raises
    ------
    InvalidArgumentError
        If the name is not one of :data:`BACKENDS`.
    """
    name = backend.name if isinstance(backend, types.ModuleType) else backend
    if name not in BACKENDS:
        raise InvalidArgumentError(f"unknown himalaya backend {name!r} (argument 'backend'); "
                                   f"expected one of {list(BACKENDS)}")
    return name


def get_backend(backend: BackendLike) -> types.ModuleType:
    """The himalaya backend module ``backend``, imported directly (no global state touched).

    Parameters
    ----------
    backend : str or module
        A name from :data:`BACKENDS`, or a backend module (returned unchanged).

    Returns
    -------
    module
        ``himalaya.backend.<name>``.

    Raises
    ------
    InvalidArgumentError
        If the name is unknown.
    """
    if isinstance(backend, types.ModuleType):
        return backend
    return importlib.import_module(f"himalaya.backend.{backend_name(backend)}")


@contextlib.contextmanager
def himalaya_backend(backend: BackendLike) -> Iterator[types.ModuleType]:
    """Run himalaya's estimators on ``backend`` inside a ``with`` block.

    himalaya's sklearn-style estimators look their backend up in a module-level global, so
    this is the one helper that sets it (``himalaya.backend.set_backend``, raising on error)
    and puts the previous backend back on exit, whatever happens in the block.

    Parameters
    ----------
    backend : str or module
        A name from :data:`BACKENDS` or a backend module.

    Yields
    ------
    module
        The backend module (for its ``to_numpy``).
    """
    from himalaya.backend import get_backend as get_global
    from himalaya.backend import set_backend

    name = backend_name(backend)
    previous = get_global().name
    module = set_backend(name, on_error="raise")
    try:
        yield module
    finally:
        set_backend(previous, on_error="raise")
