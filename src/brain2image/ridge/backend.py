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

A config names its backend ``"auto"`` (the default of ``[decoder] backend`` and ``[encoding]
backend``) or explicitly; :func:`resolve_backend` turns that into a backend for the run's device:
``torch_cuda`` on a CUDA device, ``numpy`` on the CPU (docs/devices.md).
"""

from __future__ import annotations

import contextlib
import importlib
import types
from collections.abc import Iterator

from ..config import BACKEND_CHOICES
from ..devices import check_device, cuda_unavailable, device_type
from ..errors import InvalidArgumentError

__all__ = ["BACKENDS", "BACKEND_CHOICES", "BackendLike", "backend_name", "get_backend", "himalaya_backend",
           "resolve_backend"]

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


def resolve_backend(backend: BackendLike, device: str = "cpu", option: str = "backend") -> BackendLike:
    """The backend a config's ``backend`` value means on ``device``.

    Parameters
    ----------
    backend : str or module
        ``"auto"``: ``"torch_cuda"`` when ``device`` is a CUDA device, else ``"numpy"``; a name
        from :data:`BACKENDS` or a module is used as given.
    device : str
        The run's torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    option : str
        The config key named in error messages (``"[decoder] backend"``).

    Returns
    -------
    str or module
        A name from :data:`BACKENDS`, or ``backend`` itself when it is a module.

    Raises
    ------
    InvalidArgumentError
        For an unknown name, ``torch_cuda`` with a device that is not CUDA, or a CUDA device this
        machine lacks.
    """
    if isinstance(backend, types.ModuleType):
        return backend
    if backend == "auto":
        if device_type(device) == "cuda":
            check_device(device)
            return "torch_cuda"
        return "numpy"
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"{option} = {backend!r}: unknown backend; expected one of {list(BACKEND_CHOICES)}")
    name = str(backend)
    if name == "torch_cuda":
        if device_type(device) != "cuda":
            raise InvalidArgumentError(f"{option} = 'torch_cuda' runs on the GPU but device = {device!r}; expected "
                                       f"device = 'cuda' (or {option} = 'auto', 'numpy' or 'torch')")
        check_device(device)
    return name


def _check_available(name: str) -> None:
    """Refuse ``torch_cuda`` without CUDA (himalaya's own import error, or skip under pytest, otherwise)."""
    missing = cuda_unavailable() if name == "torch_cuda" else None
    if missing is not None:
        raise InvalidArgumentError(f"backend 'torch_cuda': {missing}; expected backend 'numpy' or 'torch'")


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
        If the name is unknown, or is ``torch_cuda`` without CUDA.
    """
    if isinstance(backend, types.ModuleType):
        return backend
    name = backend_name(backend)
    _check_available(name)
    return importlib.import_module(f"himalaya.backend.{name}")


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
    _check_available(name)
    previous = get_global().name
    module = set_backend(name, on_error="raise")
    try:
        yield module
    finally:
        set_backend(previous, on_error="raise")
