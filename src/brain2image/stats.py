"""Pearson correlations, with one argument order everywhere: ``(true, pred)`` or ``(a, b)``.

- :func:`pearson_columns` — r of each column (target, voxel) over rows: decoder test scores,
  encoding model scores.
- :func:`pearson_matrix` — r of every row of ``a`` with every row of ``b`` (identification).
- :func:`paired_pearson` — r of row i of ``a`` with row i of ``b`` (PixCorr, distances).

All compute in float64, in chunks so large arrays never need a full float64 copy.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["average_repeats", "DEFAULT_ROW_CHUNK", "DEFAULT_COLUMN_CHUNK", "zscore_rows", "pearson_columns",
           "pearson_matrix", "paired_pearson"]

#: Rows of the second operand z-scored at a time by :func:`pearson_matrix`.
DEFAULT_ROW_CHUNK = 1024
#: Columns correlated at a time by :func:`pearson_columns`.
DEFAULT_COLUMN_CHUNK = 8192


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidArgumentError(f"{name}: expected an array of shape (n_items, n_features), got {x.shape}")
    return x


def pearson_columns(true: np.ndarray, pred: np.ndarray, *, fill: float = np.nan,
                    chunk: int = DEFAULT_COLUMN_CHUNK) -> np.ndarray:
    """Pearson r between matching columns of ``true`` and ``pred``, over rows.

    Parameters
    ----------
    true : array of shape (n_rows, n_columns)
        Observed values (test features, voxel responses).
    pred : array of shape (n_rows, n_columns)
        Predictions.
    fill : float
        r reported where a column of either array is constant (``NaN`` by default; ``0.0`` keeps
        means and maps finite).
    chunk : int
        Columns converted to float64 at a time.

    Returns
    -------
    r : float64 ndarray of shape (n_columns,)
    """
    true, pred = np.asarray(true), np.asarray(pred)
    if pred.shape != true.shape or pred.ndim != 2:
        raise InvalidArgumentError(f"pearson_columns: true and pred must be 2-D of the same shape, "
                                   f"got {true.shape} and {pred.shape}")
    out = np.empty(pred.shape[1])
    for start in range(0, pred.shape[1], chunk):
        # One contiguous row per column: each column's sums run alike whatever the columns beside it,
        # so a column's r does not depend on how many columns are scored together.
        p = np.ascontiguousarray(pred[:, start:start + chunk].T, dtype=np.float64)
        t = np.ascontiguousarray(true[:, start:start + chunk].T, dtype=np.float64)
        p -= p.mean(1, keepdims=True)
        t -= t.mean(1, keepdims=True)
        denom = np.sqrt((p * p).sum(1) * (t * t).sum(1))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (p * t).sum(1) / np.where(denom > 0, denom, 1.0)
        out[start:start + chunk] = np.where(denom > 0, r, fill)
    return out


def zscore_rows(x: np.ndarray) -> np.ndarray:
    """Z-score each row in float64 (population sd); constant rows become 0.

    Parameters
    ----------
    x : array of shape (n_rows, n_features)

    Returns
    -------
    z : float64 ndarray of shape (n_rows, n_features)
        Each row of mean 0 and ``sum(z**2) == n_features`` (or all 0).
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=1, keepdims=True)
    sd = np.sqrt(np.mean(centred**2, axis=1, keepdims=True))
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def pearson_matrix(a: np.ndarray, b: np.ndarray, chunk_size: int = DEFAULT_ROW_CHUNK) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with every row of ``b``.

    Rows with zero variance correlate 0 with everything (not NaN).

    Parameters
    ----------
    a : array of shape (n_a, n_features)
    b : array of shape (n_b, n_features)
    chunk_size : int
        Rows of ``b`` converted to float64 at a time (bounds the memory to
        ``(n_a + chunk_size) * n_features`` float64 values).

    Returns
    -------
    r : float64 ndarray of shape (n_a, n_b)
        ``r[i, j] = corr(a[i], b[j])``.
    """
    a, b = _as_2d(a, "pearson_matrix a"), _as_2d(b, "pearson_matrix b")
    if a.shape[1] != b.shape[1]:
        raise InvalidArgumentError(f"pearson_matrix: feature dimensions differ ({a.shape[1]} and {b.shape[1]})")
    d = a.shape[1]
    za = zscore_rows(a)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    for start in range(0, b.shape[0], chunk_size):
        zb = zscore_rows(b[start:start + chunk_size])
        out[:, start:start + chunk_size] = za @ zb.T / d
    return out


def paired_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of row i of ``a`` with row i of ``b`` (0 for a constant row).

    Parameters
    ----------
    a, b : arrays of shape (n_items, n_features)

    Returns
    -------
    r : float64 ndarray of shape (n_items,)
    """
    a, b = _as_2d(a, "paired_pearson a"), _as_2d(b, "paired_pearson b")
    if a.shape != b.shape:
        raise InvalidArgumentError(f"paired_pearson: shapes differ ({a.shape} and {b.shape})")
    return np.einsum("ij,ij->i", zscore_rows(a), zscore_rows(b)) / a.shape[1]


def average_repeats(x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average rows that share an id.

    Parameters
    ----------
    x : ndarray of shape (n_trials, n_voxels)
    ids : ndarray of shape (n_trials,)

    Returns
    -------
    mean : ndarray of shape (n_unique, n_voxels) float32
    unique_ids : ndarray of shape (n_unique,), sorted
    counts : ndarray of shape (n_unique,)
    """
    unique_ids, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    if unique_ids.size == 0:
        return np.zeros((0,) + x.shape[1:], dtype=np.float32), unique_ids, counts
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    return (sums / counts[:, None]).astype(np.float32), unique_ids, counts
