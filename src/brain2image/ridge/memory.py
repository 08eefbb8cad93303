r"""How many ridge targets are solved at a time: the config's value, or what the free GPU memory holds.

Decoders (``[decoder] target_chunk``, targets = feature values) and encoding models
(``[encoding] target_chunk``, targets = voxels) solve their targets in chunks; a chunk's arrays
grow linearly with its width, the rest (decompositions, kernels) does not. So, on the GPU
(backend ``torch_cuda``)::

    chunk = floor(max(free * SAFETY - fixed, free * SAFETY * MIN_SHARE) / per_target)
            clipped to [1, n_targets]

``free`` is ``torch.cuda.mem_get_info()`` of the current CUDA device (the run's, through
:func:`brain2image.devices.device_scope`), ``SAFETY`` leaves half of it to the allocator's slack,
the temporaries of the fixed part and the rest of the process, and ``fixed`` / ``per_target`` are
upper bounds of the bytes the solver holds (:func:`decoder_bytes`, :func:`encoding_bytes`). The
chunks get at least ``MIN_SHARE`` of the usable memory even when the bound of the fixed part
exceeds it (its parts do not all coexist; a chunk of one target would not save them, only make
the fit thousands of times slower; if memory does run out, the error names the option). The
config's ``target_chunk`` caps the result (``[decoder] target_chunk`` is 8,192 by default,
``[encoding] target_chunk`` unset: no cap). On the CPU backends the config's value is used as it
is (unset: 8,192 decoder targets, every voxel of an encoding model), so the numbers of a CPU run
never depend on the machine.
"""

from __future__ import annotations

import logging

import numpy as np

from ..devices import free_memory
from ._solvers import DEFAULT_TARGET_CHUNK
from .backend import BackendLike, backend_name

__all__ = ["SAFETY", "MIN_SHARE", "chunk_for_memory", "decoder_bytes", "encoding_bytes", "decoder_target_chunk",
           "encoding_target_chunk"]

logger = logging.getLogger(__name__)

#: Share of the free GPU memory the solver may take.
SAFETY = 0.5
#: Least share of that memory left to the chunks, whatever the bound of the fixed part.
MIN_SHARE = 0.25


def chunk_for_memory(n_targets: int, per_target: int, free: int, *, fixed: int = 0, cap: int | None = None,
                     safety: float = SAFETY) -> int:
    """Targets per chunk: what ``free * safety`` holds beside ``fixed``, in ``[1, n_targets]``, at most ``cap``.

    Parameters
    ----------
    n_targets : int
    per_target : int
        Bytes one more target column adds.
    free : int
        Free bytes of the device.
    fixed : int
        Bytes held whatever the chunk (decompositions, kernels).
    cap : int, optional
        The config's ``target_chunk``: never more than this.
    safety : float
        Share of ``free`` the solver may use.

    Returns
    -------
    int
        ``floor(max(free * safety - fixed, free * safety * MIN_SHARE) / per_target)``, clipped.
    """
    usable = free * safety
    budget = max(usable - fixed, usable * MIN_SHARE)
    chunk = int(budget // max(per_target, 1))
    chunk = max(1, min(chunk, n_targets))
    return min(chunk, cap) if cap is not None else chunk


def decoder_bytes(n_rows: int, n_images: int, n_features: int, dtype: str = "float32") -> tuple[int, int]:
    """``(fixed, per_target)`` bytes of a decoder fit (:mod:`brain2image.ridge._solvers`) on the device.

    With ``m = min(n_rows, n_features)`` and ``s`` the itemsize of ``dtype``: while the chunks
    are solved, the decomposition of the rows stays on the device, ``V^T``, ``H`` and a validation
    fold's projection (``fixed = s (m n_features + 2 n_rows m)``); a target column holds its
    targets, a validation fold's targets, predictions and errors, two projections and its
    weights: ``s (n_images + 3 n_rows + 2 m + n_features)`` (validation rows bounded by all rows).
    The float64 peak of the decomposition itself comes before the chunks and does not depend on
    them.
    """
    s, m = np.dtype(dtype).itemsize, min(n_rows, n_features)
    return s * (m * n_features + 2 * n_rows * m), s * (n_images + 3 * n_rows + 2 * m + n_features)


def encoding_bytes(n_unique: int, n_test: int, n_voxels: int, *, n_kernels: int = 1, n_alphas: int = 9,
                   n_folds: int = 5, dtype: str = "float32") -> tuple[int, int]:
    """``(fixed, per_voxel)`` bytes of a himalaya encoding fit (ridge, kernel or banded ridge) on the device.

    With ``n`` unique training images and ``s`` the itemsize: the fixed part is the kernels, the
    weighted kernel and its eigenvectors and the per-alpha resolution matrices
    (``s (n_kernels + 2 + n_alphas) n^2``; a primal space has fewer features than images, so this
    bounds it too) plus the per-voxel scores of every fold and alpha, the refit weights and the
    test predictions of all voxels (``s (n_folds n_alphas + n + n_test) n_voxels``); a voxel column
    holds its predictions for every alpha and its targets: ``s ((n_alphas + 3) n + n_test)``.
    """
    s = np.dtype(dtype).itemsize
    fixed = s * ((n_kernels + 2 + n_alphas) * n_unique ** 2 + (n_folds * n_alphas + n_unique + n_test) * n_voxels)
    return fixed, s * ((n_alphas + 3) * n_unique + n_test)


def _free_gpu_bytes(free: int | None) -> int:
    """``free``, or the free bytes of the current CUDA device."""
    if free is not None:
        return int(free)
    measured = free_memory("cuda")
    return 0 if measured is None else measured


def decoder_target_chunk(target_chunk: int | None, backend: BackendLike, *, n_rows: int, n_images: int,
                         n_features: int, n_targets: int, dtype: str = "float32", free: int | None = None) -> int:
    """Targets a decoder solves at a time (``[decoder] target_chunk``).

    Parameters
    ----------
    target_chunk : int, optional
        The config's value: used as it is on the CPU backends (``None``: 8,192), a cap on
        ``torch_cuda``.
    backend : str or module
        The resolved backend (:func:`brain2image.ridge.backend.resolve_backend`).
    n_rows, n_images, n_features, n_targets : int
        Training rows (trials), images, voxels and target columns.
    dtype : str
        Float type of the solve.
    free : int, optional
        Free bytes of the GPU (default: measured with ``torch.cuda.mem_get_info``).

    Returns
    -------
    int
    """
    if backend_name(backend) != "torch_cuda":
        return DEFAULT_TARGET_CHUNK if target_chunk is None else int(target_chunk)
    fixed, per_target = decoder_bytes(n_rows, n_images, n_features, dtype)
    free = _free_gpu_bytes(free)
    chunk = chunk_for_memory(n_targets, per_target, free, fixed=fixed, cap=target_chunk)
    logger.info("decoder: %d of %d targets at a time (%.1f GiB free on the GPU)", chunk, n_targets, free / 2**30)
    return chunk


def encoding_target_chunk(target_chunk: int | None, backend: BackendLike, *, n_unique: int, n_test: int,
                          n_voxels: int, n_kernels: int = 1, n_alphas: int = 9, n_folds: int = 5,
                          dtype: str = "float32", free: int | None = None) -> int | None:
    """Voxels an encoding model solves at a time (``[encoding] target_chunk``).

    Parameters
    ----------
    target_chunk : int, optional
        The config's value: used as it is on the CPU backends (``None``: every voxel at once), a
        cap on ``torch_cuda``.
    backend : str or module
        The resolved backend.
    n_unique, n_test, n_voxels : int
        Unique training images, test images, voxels.
    n_kernels, n_alphas, n_folds : int
        Feature spaces of the model (2 for a banded pair), alphas of the grid, CV folds.
    dtype : str
    free : int, optional
        Free bytes of the GPU (default: measured).

    Returns
    -------
    int or None
    """
    if backend_name(backend) != "torch_cuda":
        return target_chunk
    fixed, per_voxel = encoding_bytes(n_unique, n_test, n_voxels, n_kernels=n_kernels, n_alphas=n_alphas,
                                      n_folds=n_folds, dtype=dtype)
    free = _free_gpu_bytes(free)
    chunk = chunk_for_memory(n_voxels, per_voxel, free, fixed=fixed, cap=target_chunk)
    logger.info("encoding: %d of %d voxels at a time (%.1f GiB free on the GPU)", chunk, n_voxels, free / 2**30)
    return chunk
