"""Single-trial betas read a block of trials at a time: :class:`BetaFile`.

A :class:`BetaFile` holds ``n_trials`` trials over a spatial layout (``(X, Y, Z)`` for a volume,
``(n_columns,)`` for an array) and reads ``rows`` x ``columns`` at a time, where a column is a flat
C-order index into the spatial layout. Files are read lazily, a block of consecutive trials at a
time, never whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BetaFile", "BLOCK_TRIALS", "Opener"]

#: Trials read at once (bounds memory: a block is this many volumes).
BLOCK_TRIALS = 64

Opener = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True)
class BetaFile:
    """Single-trial betas on disk (or in memory), read a block of trials at a time.

    Attributes
    ----------
    path : Path
        The file, for messages.
    n_trials : int
    spatial_shape : tuple of int
        ``(X, Y, Z)`` for a volume, ``(n_columns,)`` for an array.
    affine : array of shape (4, 4) or None
        The volume's voxel-to-world affine, when the file has one (NIfTI).
    trials_last : bool
        Whether the trial axis is the last (NIfTI, GLMsingle) or the first (``.npy``/``.h5`` arrays).
    opener : callable
        Returns a context manager yielding the array-like (sliceable without reading it whole).
    """

    path: Path
    n_trials: int
    spatial_shape: tuple[int, ...]
    affine: np.ndarray | None
    trials_last: bool
    opener: Opener

    @property
    def is_volume(self) -> bool:
        """Whether the betas are a volume (X, Y, Z)."""
        return len(self.spatial_shape) == 3

    @property
    def n_columns(self) -> int:
        """Spatial elements: X * Y * Z, or the array's columns."""
        return int(np.prod(self.spatial_shape))

    def _block(self, data: Any, lo: int, hi: int) -> np.ndarray:
        """Trials ``lo:hi`` as (hi - lo, n_columns)."""
        if self.trials_last:
            block = np.asarray(data[..., lo:hi])
            return block.reshape(self.n_columns, hi - lo).T
        return np.asarray(data[lo:hi]).reshape(hi - lo, self.n_columns)

    def read(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The betas of trials ``rows`` at ``columns``.

        Parameters
        ----------
        rows : array of shape (n_rows,), int
            0-based trial indices, increasing.
        columns : array of shape (n_voxels,), int
            Flat C-order indices into :attr:`spatial_shape`.

        Returns
        -------
        array of shape (n_rows, n_voxels), float32
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, np.asarray(columns).size), dtype=np.float32)
        with self.opener() as data:
            start = 0
            while start < rows.size:
                lo = int(rows[start])
                stop = int(np.searchsorted(rows, lo + BLOCK_TRIALS, side="left"))
                hi = int(rows[stop - 1]) + 1
                block = self._block(data, lo, hi)
                out[start:stop] = block[rows[start:stop] - lo][:, columns]
                start = stop
        return out

    def read_all_columns(self, row: int) -> np.ndarray:
        """Trial ``row`` at every column, shape (n_columns,), float32."""
        return self.read(np.array([row]), np.arange(self.n_columns))[0]
