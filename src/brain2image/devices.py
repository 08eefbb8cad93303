"""The run's one torch device: checked once, then used by every stage (docs/devices.md).

``device`` (a run config's top-level key, ``--device`` of the stage commands) names where the
LDM, the ridge decoders and encoding models (backend ``auto``) and the evaluation's feature
networks run. :func:`check_device` refuses a device this machine lacks before any stage runs;
:func:`device_scope` makes a CUDA device the current one, so that libraries that allocate on
``"cuda"`` (himalaya's ``torch_cuda`` backend) use the run's GPU; :func:`free_memory` gives the
free bytes the memory sizing (:mod:`brain2image.ridge.memory`) reads; :func:`is_out_of_memory`
recognises the errors the stage runner turns into :class:`~brain2image.errors.ResourceError`.

torch is imported only when a device other than ``"cpu"`` is named.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from .errors import InvalidArgumentError

__all__ = ["DEVICE_TYPES", "device_type", "cuda_unavailable", "check_device", "device_scope", "free_memory",
           "is_out_of_memory"]

#: Device types a run may name.
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda", "mps")

#: Messages of out-of-memory errors raised as plain ``RuntimeError`` by CUDA libraries.
_OOM_MESSAGES = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUSOLVER_STATUS_ALLOC_FAILED")


def device_type(device: str) -> str:
    """``"cuda"`` for ``"cuda:1"``, ``"cpu"`` for ``"cpu"`` (the text before ``:``; torch not imported)."""
    return str(device).partition(":")[0].strip().lower()


def cuda_unavailable() -> str | None:
    """``None`` when torch sees a CUDA GPU, else why not (``CUDA is not available on this machine (...)``)."""
    import torch

    if torch.cuda.is_available():
        return None
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return f"CUDA is not available on this machine (torch {torch.__version__} {built}; no GPU visible)"


def check_device(device: str, option: str = "device") -> str:
    """Refuse a device that is not a torch device or that this machine lacks.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    option : str
        The config key named in the message.

    Returns
    -------
    str
        ``device``, unchanged.

    Raises
    ------
    InvalidArgumentError
        When ``device`` does not parse, or names CUDA (or MPS) where it is not available, or a
        CUDA index this machine does not have.
    """
    if device == "cpu":
        return device
    import torch

    expected = "expected 'cpu', 'cuda', 'cuda:N' or 'mps'"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(f"{option} = {device!r}: not a torch device; {expected}") from None
    if parsed.type not in DEVICE_TYPES:
        raise InvalidArgumentError(f"{option} = {device!r}: device type {parsed.type!r} is not supported; {expected}")
    if parsed.type == "cuda":
        missing = cuda_unavailable()
        if missing is not None:
            raise InvalidArgumentError(f"{option} = {device!r}: {missing}; use {option} = 'cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise InvalidArgumentError(f"{option} = {device!r}: this machine has {count} CUDA device(s); expected "
                                       f"an index below {count} ('cuda:0' .. 'cuda:{count - 1}')")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError(f"{option} = {device!r}: MPS is not available on this machine; use "
                                   f"{option} = 'cpu'")
    return device


@contextlib.contextmanager
def device_scope(device: str) -> Iterator[None]:
    """Make a CUDA ``device`` (``"cuda:1"``) the current CUDA device inside the block.

    Code that allocates on ``"cuda"`` without an index (himalaya's ``torch_cuda`` backend) then
    uses the run's GPU. Any other device: nothing changes.
    """
    if device_type(device) != "cuda":
        yield
        return
    import torch

    index = torch.device(device).index
    with torch.cuda.device(index) if index is not None else contextlib.nullcontext():
        yield


def free_memory(device: str) -> int | None:
    """Free bytes of a CUDA ``device`` (``torch.cuda.mem_get_info``); ``None`` for any other device."""
    if device_type(device) != "cuda":
        return None
    import torch

    return int(torch.cuda.mem_get_info(torch.device(device))[0])


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` reports exhausted memory: ``MemoryError`` (host) or a CUDA out-of-memory error."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _OOM_MESSAGES)
