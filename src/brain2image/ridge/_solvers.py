r"""Ridge regression on single-trial rows whose targets are given once per image.

Model, for a row of inputs ``x`` (n_features,)::

    pred = ((x - x_mean) / x_std) @ coef + intercept

``x_mean`` and ``x_std`` are the per-feature mean and standard deviation of the training rows
(zero-variance features get ``x_std = 1``, so they standardise to 0 and never give NaN),
``coef`` (n_features, n_targets) the ridge weights and ``intercept`` (n_targets,) the training
mean of the targets: targets are centred before the fit and their mean added back. Objective
per target: ``||y - X_s w - b||^2 + alpha ||w||^2`` summed over rows.

Repeated trials. Rows repeat images (NSD shows each image up to 3 times) and targets can be
wide (77 x 768 = 59,136 values per image), so targets come once per image, ``Y_unique``
(n_images, n_targets), with ``row_image`` (n_rows,) naming each row's image;
``Y_unique[row_image]`` is never built. With the thin SVD ``X_c = U S V^T`` of the centred rows
and ``G`` the sparse row-to-image indicator (:class:`RepeatedRows`)::

    X_c^T Y = (G^T X_c)^T Y_unique
    coef(alpha) = V diag(1 / (s^2 + alpha)) V^T X_c^T Y

so one decomposition per fold (and one for the refit) serves every alpha of the grid, each
costing one small product per chunk of ``target_chunk`` target columns. ``V`` and ``S^2`` come
by default from the float64 eigendecomposition of the smaller Gram matrix (``solver="eigh"``,
several times faster than a direct SVD on CPU); ``solver="svd"`` runs the backend's SVD.

Cost at NSD scale (25,000 rows, 5,000 voxels, 6,400 targets). The rows are standardised block
by block where they are used (:data:`ROW_BLOCK` rows at a time; no standardised or float64 copy
of all rows). With no more features than training rows, the float64 Gram matrix of all rows is
built once and a fold's is that minus its validation rows' Gram, centred with the fold's mean
(``X_c^T X_c = X^T X - n m m^T``): ``2 n p^2`` instead of ``(K + 1) n p^2`` multiply-adds. The
eigendecompositions (LAPACK's are memory-bound and poorly threaded) run two at a time side by
side on numpy, each with half the BLAS threads; each fold's errors are computed as soon as its
decomposition is ready. With the targets in one chunk, ``X^T Y`` of all rows is computed once
and each fold subtracts its validation rows' share (:class:`_Projector`). Numerics stay those
of float64 decompositions and ``dtype`` products.

Cross-validation. Alpha is chosen per target by K-fold cross-validation over a grid, folds
grouped by image (:func:`grouped_folds`): all repeats of an image fall in the same fold, so a
validation image is never seen in training (repeats in both would make CV optimistic and
favour small alphas). Each fold centres its own training rows and targets; squared errors are
summed over single-trial validation rows and pooled over folds; the alpha with the smallest
pooled error wins (ties: the smallest alpha), then the model is refit on all rows.

Alpha scale. The penalty acts on ``X_s^T X_s``, whose diagonal is ``n_rows`` (unit-variance
features), so ``alpha / n_rows`` is the per-row penalty. The default grid 1, 10, ..., 1e6 spans
``alpha / n_rows`` from ~4e-5 to ~40 for ~27,000 NSD training trials.

Backends. Every function takes ``bk``, a himalaya backend module resolved explicitly by
:func:`brain2image.ridge.backend.get_backend`; no global backend is read or set.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypedDict

import numpy as np
import scipy.linalg
import scipy.sparse
from sklearn.model_selection import GroupKFold, KFold
from threadpoolctl import threadpool_info, threadpool_limits
from tqdm import tqdm

from ..errors import InvalidArgumentError
from .backend import BackendLike, get_backend

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_TARGET_CHUNK",
    "SOLVERS",
    "RidgeResult",
    "RepeatedRows",
    "Decomposition",
    "check_rows",
    "check_alphas",
    "check_target_chunk",
    "target_slices",
    "repeated_rows",
    "grouped_folds",
    "standardize_stats",
    "standardize",
    "decompose",
    "solve_chunk",
    "cv_errors",
    "select_alphas",
    "refit",
    "fit_ridge",
    "fit_ridge_cv",
    "predict_ridge",
]

logger = logging.getLogger(__name__)

#: Default alpha grid (after feature standardisation): 1, 10, ..., 1e6.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(10.0 ** k for k in range(0, 7))
#: Default number of target columns solved at a time.
DEFAULT_TARGET_CHUNK = 8192
#: Decompositions of the training rows (see :func:`decompose`).
SOLVERS = ("eigh", "svd")
#: Rows standardised (and converted to float64 for the Gram matrix) at a time.
ROW_BLOCK = 2048


class RidgeResult(TypedDict, total=False):
    """What :func:`fit_ridge` and :func:`fit_ridge_cv` return (CV keys only from the latter)."""

    coef: np.ndarray            # (n_features, n_targets)
    intercept: np.ndarray       # (n_targets,)
    alphas: np.ndarray          # (n_targets,) alpha of each target
    x_mean: np.ndarray          # (n_features,)
    x_std: np.ndarray           # (n_features,)
    cv_scores: np.ndarray       # (n_targets,) pooled validation R^2 at the chosen alpha
    cv_scores_grid: np.ndarray  # (n_alphas, n_targets)
    alpha_grid: np.ndarray      # (n_alphas,)


# ----------------------------------------------------------------------------- checks
def check_rows(X: Any, Y_unique: Any, row_image: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate the rows, the per-image targets and the row-to-image map.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    Y_unique : array-like of shape (n_images, n_targets)
    row_image : int array of shape (n_rows,) or None
        Image of each row; ``None`` means one row per image (``arange(n_rows)``).

    Returns
    -------
    X : ndarray of shape (n_rows, n_features)
    row_image : int64 ndarray of shape (n_rows,)
    """
    if np.ndim(X) != 2:
        raise InvalidArgumentError(f"X must be 2-D (n_rows, n_features), got shape {np.shape(X)}")
    if len(Y_unique.shape) != 2:
        raise InvalidArgumentError(f"Y_unique must be 2-D (n_images, n_targets), got shape {Y_unique.shape}")
    n_rows, n_images = np.shape(X)[0], Y_unique.shape[0]
    if row_image is None:
        if n_rows != n_images:
            raise InvalidArgumentError(f"without row_image, X and Y need the same number of rows "
                                       f"(got {n_rows} and {n_images})")
        row_image = np.arange(n_rows)
    row_image = np.asarray(row_image)
    if row_image.shape != (n_rows,) or not np.issubdtype(row_image.dtype, np.integer):
        raise InvalidArgumentError(f"row_image must be an integer array of shape ({n_rows},), "
                                   f"got {row_image.dtype} {row_image.shape}")
    if n_rows and (row_image.min() < 0 or row_image.max() >= n_images):
        raise InvalidArgumentError(f"row_image values must lie in [0, {n_images}), got "
                                   f"[{row_image.min()}, {row_image.max()}]")
    return np.asarray(X), row_image.astype(np.int64)


def check_alphas(alphas: Any) -> np.ndarray:
    """The alpha grid as a sorted float64 array without duplicates.

    Parameters
    ----------
    alphas : float or sequence of float
        Positive, finite.

    Returns
    -------
    ndarray of shape (n_alphas,)
    """
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(alphas > 0) or not np.all(np.isfinite(alphas)):
        raise InvalidArgumentError(f"alphas must be a non-empty list of positive finite numbers, got {alphas}")
    return np.unique(alphas)


def check_target_chunk(target_chunk: int | None, n_targets: int) -> int:
    """Targets solved at a time: ``target_chunk``, or all of them (at least 1) when ``None``.

    Parameters
    ----------
    target_chunk : int or None
    n_targets : int

    Returns
    -------
    int
    """
    if target_chunk is None:
        return max(1, int(n_targets))
    if int(target_chunk) < 1:
        raise InvalidArgumentError(f"target_chunk must be >= 1, got {target_chunk}")
    return int(target_chunk)


def _check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise InvalidArgumentError(f"unknown solver {solver!r}; expected 'eigh' or 'svd'")
    return solver


def target_slices(n_targets: int, target_chunk: int | None) -> list[slice]:
    """Consecutive column slices of at most ``target_chunk`` targets covering ``n_targets``.

    Parameters
    ----------
    n_targets : int
    target_chunk : int or None
        ``None``: one slice of every target.

    Returns
    -------
    list of slice
    """
    step = check_target_chunk(target_chunk, n_targets)
    return [slice(start, min(start + step, n_targets)) for start in range(0, n_targets, step)]


# ----------------------------------------------------------------------------- repeated trials
@dataclass(frozen=True)
class RepeatedRows:
    """Rows grouped by the image they show.

    Attributes
    ----------
    images : int ndarray of shape (n_images,)
        Distinct images of the rows, sorted.
    inverse : int ndarray of shape (n_rows,)
        Position in ``images`` of each row's image.
    counts : int ndarray of shape (n_images,)
        Rows showing each image.
    """

    images: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray

    @property
    def shares(self) -> np.ndarray:
        """Share of the rows showing each image, float64 array of shape (n_images,)."""
        return self.counts / self.counts.sum()

    def indicator(self, *, mean: bool = False, dtype: Any = np.float64) -> scipy.sparse.csr_matrix:
        """Sparse (n_images, n_rows) matrix ``G^T`` summing (or averaging) rows per image."""
        n_rows = len(self.inverse)
        data = 1.0 / self.counts[self.inverse] if mean else np.ones(n_rows, dtype=dtype)
        return scipy.sparse.csr_matrix((data, (self.inverse, np.arange(n_rows))),
                                       shape=(len(self.images), n_rows))

    def sums(self, X: np.ndarray, dtype: Any) -> np.ndarray:
        """Sum of the rows of each image, array of shape (n_images, n_columns)."""
        return np.asarray(self.indicator(dtype=dtype) @ X)

    def means(self, Y: np.ndarray) -> np.ndarray:
        """Mean of the rows of each image, float64 array of shape (n_images, n_columns)."""
        return np.asarray(self.indicator(mean=True) @ Y, dtype=np.float64)


def repeated_rows(row_image: np.ndarray) -> RepeatedRows:
    """Group rows by image (distinct images, each row's position among them, counts).

    Parameters
    ----------
    row_image : int array of shape (n_rows,)

    Returns
    -------
    RepeatedRows
    """
    images, inverse, counts = np.unique(np.asarray(row_image), return_inverse=True, return_counts=True)
    return RepeatedRows(images=images, inverse=inverse.reshape(-1), counts=counts)


# ----------------------------------------------------------------------------- folds
def _rows_of_groups(inverse: np.ndarray, n_groups: int, chosen: np.ndarray) -> np.ndarray:
    """Rows of the ``chosen`` groups, listed group by group in the order of ``chosen``."""
    position = np.full(n_groups, -1)
    position[chosen] = np.arange(len(chosen))
    rows = np.flatnonzero(position[inverse] >= 0)
    return rows[np.argsort(position[inverse[rows]], kind="stable")]


def grouped_folds(groups: Any, n_folds: int, *, shuffle: bool = False,
                  random_state: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold splits of rows in which no group (image) is split between training and validation.

    Parameters
    ----------
    groups : array of shape (n_rows,)
        Group (image) of each row.
    n_folds : int
        Between 2 and the number of distinct groups.
    shuffle : bool
        ``False``: :class:`sklearn.model_selection.GroupKFold` (deterministic, folds balanced
        in rows). ``True``: :class:`sklearn.model_selection.KFold` with ``shuffle=True`` over the
        sorted distinct groups, each fold taking every row of its groups (with one row per
        group this is exactly ``KFold(n_folds, shuffle=True, random_state)`` over the rows).
    random_state : int, optional
        Seed of the shuffle.

    Returns
    -------
    list of (train, validation) int arrays of row indices
    """
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise InvalidArgumentError(f"groups must be 1-D (n_rows,), got shape {groups.shape}")
    unique, inverse = np.unique(groups, return_inverse=True)
    if n_folds < 2 or len(unique) < n_folds:
        raise InvalidArgumentError(f"cross-validation needs 2 <= n_folds <= number of groups; got "
                                   f"n_folds={n_folds} with {len(unique)} groups (images)")
    if not shuffle:
        return list(GroupKFold(n_splits=n_folds).split(np.zeros((len(groups), 1)), groups=groups))
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    inverse = inverse.reshape(-1)
    return [(_rows_of_groups(inverse, len(unique), train), _rows_of_groups(inverse, len(unique), val))
            for train, val in splitter.split(unique)]


# ----------------------------------------------------------------------------- standardisation
def standardize_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (ddof 0) of the training rows.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)

    Returns
    -------
    x_mean, x_std : float64 arrays of shape (n_features,)
        ``x_std`` is 1 where a feature has zero variance (its standardised value is then 0).
    """
    X = np.asarray(X)
    x_mean = X.mean(axis=0, dtype=np.float64)
    squares = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], ROW_BLOCK):                # no float64 copy of all rows
        centred = X[start:start + ROW_BLOCK] - x_mean
        squares += np.einsum("ij,ij->j", centred, centred)
    x_std = np.sqrt(squares / max(X.shape[0], 1))
    x_std[~(x_std > 0)] = 1.0
    return x_mean, x_std


def standardize(X: np.ndarray, x_mean: np.ndarray, x_std: np.ndarray, dtype: Any) -> np.ndarray:
    """``((X - x_mean) / x_std)`` cast to ``dtype``; array of shape (n_rows, n_features)."""
    out = np.subtract(np.asarray(X), x_mean, dtype=np.result_type(X, x_mean, x_std))
    out /= x_std
    return out.astype(dtype, copy=False)


# ----------------------------------------------------------------------------- standardised rows
@dataclass(frozen=True)
class _Rows:
    """Training rows, standardised block by block where they are used (never all at once).

    ``x_mean`` and ``x_std`` ``None``: ``X`` is already standardised.
    """

    X: np.ndarray
    x_mean: np.ndarray | None
    x_std: np.ndarray | None
    dtype: str

    @property
    def shape(self) -> tuple[int, int]:
        """(n_rows, n_features)."""
        return int(self.X.shape[0]), int(self.X.shape[1])

    def take(self, rows: np.ndarray | slice) -> np.ndarray:
        """Standardised ``rows`` in ``dtype``, array of shape (n, n_features)."""
        if self.x_mean is None or self.x_std is None:
            return np.asarray(self.X[rows], dtype=self.dtype)
        return standardize(self.X[rows], self.x_mean, self.x_std, self.dtype)

    def blocks(self, rows: np.ndarray | None) -> Iterator[np.ndarray]:
        """Standardised ``rows`` (every row when ``None``), :data:`ROW_BLOCK` at a time."""
        n = self.shape[0] if rows is None else len(rows)
        for start in range(0, n, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, n)
            yield self.take(slice(start, stop) if rows is None else rows[start:stop])


def _is_numpy(bk: types.ModuleType) -> bool:
    return getattr(bk, "name", "") == "numpy"


def _image_sums(rows: _Rows, subset: np.ndarray | None, row_image: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums per image of the standardised rows ``subset`` (every row when ``None``).

    Returns
    -------
    images : int ndarray of shape (n_img,)
        Images of these rows, sorted (rows of ``Y_unique``).
    sums : ndarray of shape (n_img, n_features), ``rows.dtype`` (accumulated in float64)
    counts : int ndarray of shape (n_img,)
    """
    subset = np.arange(rows.shape[0]) if subset is None else np.asarray(subset)
    images, inverse, counts = np.unique(row_image[subset], return_inverse=True, return_counts=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")
    position = inverse.reshape(-1)[order]
    sums = np.zeros((len(images), rows.shape[1]), dtype=rows.dtype)
    for start in range(0, len(order), ROW_BLOCK):
        at = position[start:start + ROW_BLOCK]
        first = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
        block = rows.take(subset[order[start:start + ROW_BLOCK]]).astype(np.float64)
        sums[at[first]] += np.add.reduceat(block, first, axis=0)
    return images, sums, counts


# ----------------------------------------------------------------------------- decomposition
@dataclass
class Decomposition:
    """Ridge-ready decomposition of a set of standardised training rows.

    Attributes
    ----------
    mx : float64 ndarray of shape (n_features,)
        Mean of the rows, removed before the decomposition.
    s2 : backend array of shape (k,)
        Squared singular values.
    Vt : backend array of shape (k, n_features)
        Right singular vectors.
    H : backend array of shape (k, n_img)
        ``V^T (G^T X_c)^T``: the rows' projections summed per image.
    images : int ndarray of shape (n_img,)
        Images present in these rows (rows of ``Y_unique``).
    weights : backend array of shape (n_img,)
        Share of the rows showing each image (gives the target mean).
    """

    mx: np.ndarray
    s2: Any
    Vt: Any
    H: Any
    images: np.ndarray
    weights: Any


@dataclass
class _Spectrum:
    """``S^2``, ``V^T`` and mean ``mx`` of a set of centred standardised rows (a fold, or all)."""

    mx: np.ndarray
    s2: Any
    Vt: Any


def _eigh(gram: Any, bk: types.ModuleType) -> tuple[Any, Any]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric float64 matrix, consumed."""
    if _is_numpy(bk):
        return scipy.linalg.eigh(gram, overwrite_a=True, check_finite=False)
    return bk.eigh(gram)


def _kept_spectrum(evals: Any, evecs: Any, n_rows: int, bk: types.ModuleType, dtype: str) -> tuple[Any, Any]:
    """``S^2`` and ``V^T`` in ``dtype`` from the eigenpairs of the (p, p) Gram matrix of ``n_rows`` rows.

    Eigenvalues below float64 rounding of the largest are dropped: they carry no signal and
    the penalty dominates them.
    """
    p = evecs.shape[0]
    values = bk.to_numpy(evals)
    keep = np.flatnonzero(values > float(values.max(initial=0.0)) * max(n_rows, p) * 1e-15)
    if keep.size < len(values):
        evals, evecs = evals[keep], evecs[:, keep]
    return bk.asarray(evals, dtype=dtype), bk.asarray(bk.transpose(evecs), dtype=dtype)


def _gram_spectrum(Xc: np.ndarray, bk: types.ModuleType, dtype: str) -> tuple[Any, Any]:
    """``S^2`` and ``V^T`` of ``Xc`` from the float64 eigendecomposition of its smaller Gram matrix."""
    X64 = bk.asarray(Xc, dtype="float64")
    n, p = Xc.shape
    if n >= p:
        evals, evecs = _eigh(bk.matmul(bk.transpose(X64), X64), bk)
        return _kept_spectrum(evals, evecs, n, bk, dtype)
    evals, evecs = _eigh(bk.matmul(X64, bk.transpose(X64)), bk)
    values = bk.to_numpy(evals)
    keep_idx = np.flatnonzero(values > float(values.max(initial=0.0)) * p * 1e-15)
    s2 = evals[keep_idx] if keep_idx.size else evals[:0]
    Vt = bk.matmul(bk.transpose(evecs[:, keep_idx]), X64) / bk.sqrt(s2)[:, None]    # V = X_c^T U / s
    del X64, evecs
    return bk.asarray(s2, dtype=dtype), bk.asarray(Vt, dtype=dtype)


def _gram(rows: _Rows, subset: np.ndarray | None, bk: types.ModuleType) -> tuple[Any, np.ndarray]:
    """Float64 ``X^T X`` (backend) and column sums of the standardised rows ``subset`` (all if ``None``).

    Built block by block (never a float64 copy of the rows); on numpy each block's product is
    a ``syrk`` written into one reused buffer.
    """
    gram: Any = None
    product: Any = None
    total = np.zeros(rows.shape[1])
    for block in rows.blocks(subset):
        total += block.sum(axis=0, dtype=np.float64)
        b = bk.asarray(block, dtype="float64")
        if gram is None:
            gram = bk.matmul(bk.transpose(b), b)
        elif _is_numpy(bk):
            product = np.matmul(b.T, b, out=product)
            gram += product
        else:
            gram += bk.matmul(bk.transpose(b), b)
    return gram, total


def _primal_spectrum(rows: _Rows, gram_all: Any, total_all: np.ndarray, val: np.ndarray | None,
                     bk: types.ModuleType, dtype: str) -> _Spectrum:
    """Spectrum of every row but ``val`` from the Gram matrix of all rows (``None``: every row).

    The training Gram matrix is the full one minus that of the validation rows, centred with
    the training mean: ``X_c^T X_c = X^T X - n m m^T``.
    """
    n = rows.shape[0]
    if val is None or len(val) == 0:
        gram, total, n_fit = bk.copy(gram_all), total_all, n
    else:
        gram, val_total = _gram(rows, val, bk)
        if _is_numpy(bk):
            gram = np.subtract(gram_all, gram, out=gram)
        else:
            gram = gram_all - gram
        total, n_fit = total_all - val_total, n - len(val)
    mx = total / n_fit
    m = bk.asarray(mx, dtype="float64")
    gram -= (n_fit * m)[:, None] * m[None, :]
    evals, evecs = _eigh(gram, bk)
    del gram
    s2, Vt = _kept_spectrum(evals, evecs, n_fit, bk, dtype)
    return _Spectrum(mx=mx, s2=s2, Vt=Vt)


def _rows_spectrum(rows: _Rows, fit_rows: np.ndarray, bk: types.ModuleType, dtype: str,
                   solver: str) -> _Spectrum:
    """Spectrum of the centred ``fit_rows`` from the rows themselves (SVD, or the smaller Gram matrix)."""
    Xr = rows.take(fit_rows)
    mx = Xr.mean(axis=0, dtype=np.float64)
    Xc = (Xr - mx).astype(dtype, copy=False)
    del Xr
    if solver == "svd":
        _, s, Vt = bk.svd(bk.asarray(Xc, dtype=dtype), full_matrices=False)
        return _Spectrum(mx=mx, s2=s * s, Vt=Vt)
    s2, Vt = _gram_spectrum(Xc, bk, dtype)
    return _Spectrum(mx=mx, s2=s2, Vt=Vt)


def _split_every_row(folds: list[tuple[np.ndarray, np.ndarray]], n_rows: int) -> bool:
    """Whether each fold's training and validation rows are every row, once."""
    return all(len(train) + len(val) == n_rows
               and bool(np.all(np.bincount(np.concatenate([train, val]), minlength=n_rows) == 1))
               for train, val in folds)


def _spectrum_tasks(rows: _Rows, folds: list[tuple[np.ndarray, np.ndarray]], with_all: bool,
                    bk: types.ModuleType, dtype: str, solver: str) -> list[Callable[[], _Spectrum]]:
    """One task per fold's training rows (and one for every row when ``with_all``), in that order.

    With ``solver="eigh"``, folds that split the rows in two and no more features than
    training rows in any task, the Gram matrix of all rows is built once here and each task
    subtracts its validation rows' (the eigendecomposition is the rest of its work); otherwise
    each task decomposes its own rows.
    """
    n, p = rows.shape
    fits = [np.asarray(train) for train, _ in folds] + ([np.arange(n)] if with_all else [])
    if solver == "eigh" and _split_every_row(folds, n) and all(p <= len(fit) for fit in fits):
        gram_all, total_all = _gram(rows, None, bk)
        vals: list[np.ndarray | None] = [np.asarray(val) for _, val in folds] + ([None] if with_all else [])
        return [partial(_primal_spectrum, rows, gram_all, total_all, val, bk, dtype) for val in vals]
    return [partial(_rows_spectrum, rows, fit, bk, dtype, solver) for fit in fits]


def _parallel_plan(bk: types.ModuleType, n_tasks: int) -> tuple[int, int]:
    """Decompositions run at once and BLAS threads each: 2 on numpy when BLAS has 2+ threads, else 1.

    LAPACK's symmetric eigensolver spends much of its time in memory-bound, poorly threaded
    steps, so two single-threaded (or half-threaded) decompositions side by side finish well
    before two multi-threaded ones in turn.
    """
    if not _is_numpy(bk) or n_tasks < 2:
        return 1, 0
    threads = max((int(info.get("num_threads", 1)) for info in threadpool_info()
                   if info.get("user_api") == "blas"), default=1)
    return (2, threads // 2) if threads >= 2 else (1, 0)


def _spectra(tasks: list[Callable[[], _Spectrum]], bk: types.ModuleType) -> Iterator[_Spectrum]:
    """Run the decomposition tasks, two at a time side by side where :func:`_parallel_plan` says so.

    Yields the spectra in task order; at most a pair is held at once.
    """
    workers, threads = _parallel_plan(bk, len(tasks))
    tasks = list(tasks)
    while tasks:
        group, tasks = tasks[:workers], tasks[workers:]
        if len(group) == 1:
            done = [group[0]()]
        else:
            with threadpool_limits(limits=threads, user_api="blas"), ThreadPoolExecutor(len(group)) as pool:
                done = list(pool.map(lambda task: task(), group))
        del group
        while done:
            yield done.pop(0)


def _projection(spec: _Spectrum, rows: _Rows, subset: np.ndarray | None, row_image: np.ndarray,
                bk: types.ModuleType, dtype: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """``H = V^T (G^T X_c)^T`` (k, n_img) of the rows ``subset``, their images and rows per image."""
    images, sums, counts = _image_sums(rows, subset, row_image)
    sums -= counts[:, None].astype(dtype) * spec.mx.astype(dtype)[None, :]
    H = bk.matmul(spec.Vt, bk.transpose(bk.asarray(sums, dtype=dtype)))
    return H, images, counts


def decompose(Xs: np.ndarray, rows: np.ndarray, row_image: np.ndarray, bk: types.ModuleType,
              dtype: str, solver: str = "eigh") -> Decomposition:
    """Thin SVD ``X_c = U S V^T`` of the centred ``rows`` of ``Xs`` (``S`` and ``V`` kept).

    Parameters
    ----------
    Xs : ndarray of shape (n_rows, n_features)
        Standardised rows.
    rows : int array of shape (n_fit,)
        Rows to decompose (a training fold, or all rows).
    row_image : int array of shape (n_rows,)
    bk : module
        himalaya backend.
    dtype : str
        ``"float32"`` or ``"float64"``.
    solver : {"eigh", "svd"}
        ``"eigh"``: float64 eigendecomposition of the smaller Gram matrix; ``"svd"``: the
        backend's SVD in ``dtype``.

    Returns
    -------
    Decomposition
    """
    _check_solver(solver)
    source = _Rows(Xs, None, None, dtype)
    spec = _rows_spectrum(source, np.asarray(rows), bk, dtype, solver)
    H, images, counts = _projection(spec, source, np.asarray(rows), row_image, bk, dtype)
    return Decomposition(mx=spec.mx, s2=spec.s2, Vt=spec.Vt, H=H, images=images,
                         weights=bk.asarray(counts / counts.sum(), dtype=dtype))


def _columns(Y_unique: Any, columns: slice, images: np.ndarray | None = None) -> np.ndarray:
    """The targets ``columns`` as a C-contiguous block.

    The products of a block then do not depend on the columns beside it: a part of the targets
    is solved exactly as in a fit of them all.
    """
    block = np.ascontiguousarray(Y_unique[:, columns])
    return block if images is None else _image_rows(block, images)


def _image_rows(block: np.ndarray, images: np.ndarray) -> np.ndarray:
    """``block[images]``, without a copy when ``images`` is every row in order."""
    if len(images) == len(block) and np.array_equal(images, np.arange(len(block))):
        return block
    return block[images]


def solve_chunk(dec: Decomposition, Yc: Any, alphas: Any, bk: types.ModuleType, dtype: str
                ) -> tuple[Any, Any]:
    """Ridge weights and intercept of a chunk of targets.

    Parameters
    ----------
    dec : Decomposition
    Yc : backend array of shape (n_img, n_chunk)
        Targets of ``dec.images``.
    alphas : backend array of shape (n_chunk,)
        Alpha of each target.
    bk : module
    dtype : str

    Returns
    -------
    coef : backend array of shape (n_features, n_chunk)
    intercept : backend array of shape (n_chunk,)
    """
    B = bk.matmul(dec.H, Yc)                                     # (k, n_chunk)
    coef = bk.matmul(bk.transpose(dec.Vt), B / (dec.s2[:, None] + alphas[None, :]))
    y_mean = bk.matmul(dec.weights, Yc)
    return coef, y_mean - bk.matmul(bk.asarray(dec.mx, dtype=dtype), coef)


# ----------------------------------------------------------------------------- projections
def _cache_is_cheaper(p: int, n_images: int, n_targets: int, n_folds: int) -> bool:
    """Whether ``P = S^T Y`` once beats ``H`` per decomposition (multiply-adds, ``k ~ p``).

    ``P``: ``p n_img t`` once, the folds' validation shares (``p n_img t`` in all) and one
    ``V^T`` product per decomposition; ``H``: ``p^2 n + p n t`` per decomposition over its images.
    """
    t, n_train = n_targets, n_images * (n_folds - 1) / max(n_folds, 1)
    cached = p * n_images * t * (2 if n_folds else 1) + (n_folds + 1) * p * p * t
    per_image = n_folds * n_train * (p * p + p * t) + n_images * (p * p + p * t)
    return cached < per_image


class _Projector:
    """``B = V^T X_c^T Y`` of a set of training rows for one chunk of targets.

    Two orders of the same product: ``H = V^T (G^T X_c)^T`` once per decomposition, then
    ``H Y`` per chunk; or, with the targets in one chunk, ``P = S^T Y`` of all rows once (``S``:
    per-image sums of the standardised rows), each fold's ``X^T Y`` being ``P`` minus its
    validation rows' share, then ``V^T (X^T Y - m (sum of the rows' targets)^T)``. The second
    skips building ``H`` (k x n_features x n_images per fold) and most of the product with ``Y``;
    it needs folds that split every row (``split``) and is used where :func:`_cache_is_cheaper`.
    """

    def __init__(self, rows: _Rows, row_image: np.ndarray, n_images: int, n_targets: int,
                 target_chunk: int | None, n_folds: int, split: bool, bk: types.ModuleType, dtype: str,
                 allow_cache: bool = True) -> None:
        self.rows, self.row_image, self.bk, self.dtype = rows, row_image, bk, dtype
        self.cached = (allow_cache and check_target_chunk(target_chunk, n_targets) >= n_targets and split
                       and _cache_is_cheaper(rows.shape[1], n_images, n_targets, n_folds))
        self._P: Any = None

    def _all_rows_product(self, block: np.ndarray) -> Any:
        """``S^T Y`` of every row for the targets ``block`` (n_images, n_chunk), computed once."""
        if self._P is None:
            images, sums, _ = _image_sums(self.rows, None, self.row_image)
            self._P = self.bk.matmul(self.bk.transpose(self.bk.asarray(sums, dtype=self.dtype)),
                                     self.bk.asarray(_image_rows(block, images), dtype=self.dtype))
        return self._P

    def prepare(self, spec: _Spectrum, train: np.ndarray | None, val: np.ndarray | None) -> dict[str, Any]:
        """What a fold (or every row, ``train`` ``None``) needs for :meth:`product`."""
        if not self.cached:
            H, images, _ = _projection(spec, self.rows, train, self.row_image, self.bk, self.dtype)
            return {"H": H, "images": images}
        if val is None or len(val) == 0:
            return {}
        images, sums, _ = _image_sums(self.rows, val, self.row_image)
        return {"val_images": images, "val_sums": self.bk.asarray(sums, dtype=self.dtype)}

    def product(self, spec: _Spectrum, state: dict[str, Any], block: np.ndarray, row_sum: np.ndarray) -> Any:
        """``B`` (k, n_chunk) for the targets ``block`` (n_images, n_chunk).

        ``row_sum`` (n_chunk,) is the sum of the training rows' targets.
        """
        bk, dtype = self.bk, self.dtype
        if not self.cached:
            return bk.matmul(state["H"], bk.asarray(_image_rows(block, state["images"]), dtype=dtype))
        P = self._all_rows_product(block)
        if "val_sums" in state:
            P = P - bk.matmul(bk.transpose(state["val_sums"]),
                              bk.asarray(block[state["val_images"]], dtype=dtype))
        else:
            P = bk.copy(P)
        P -= bk.asarray(spec.mx, dtype=dtype)[:, None] * bk.asarray(row_sum, dtype=dtype)[None, :]
        return bk.matmul(spec.Vt, P)


# ----------------------------------------------------------------------------- cross-validation
def _alpha_errors(s2: Any, A: Any, B: Any, Yval: Any, grid: Any, bk: types.ModuleType
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Validation squared errors (n_alphas, n_chunk) and total sum of squares (n_chunk,).

    ``A`` (n_val, k): validation rows in the training basis; ``B`` (k, n_chunk); ``Yval``
    (n_val, n_chunk): validation targets minus the training mean.
    """
    sst = bk.to_numpy(((Yval - Yval.mean(0)[None, :]) ** 2).sum(0)).astype(np.float64)
    sse = np.empty((len(grid), Yval.shape[1]))
    for j in range(len(grid)):
        pred = bk.matmul(A, B / (s2[:, None] + grid[j]))
        pred -= Yval
        pred *= pred
        sse[j] = bk.to_numpy(pred.sum(0))
        del pred
    return sse, sst


def _fold_errors(spec: _Spectrum, fold: tuple[np.ndarray, np.ndarray], rows: _Rows, Y_unique: Any,
                 row_image: np.ndarray, grid: Any, slices: list[slice], projector: _Projector,
                 out: tuple[np.ndarray, np.ndarray], desc: str, progress: bool) -> None:
    """Add one fold's validation errors of every alpha to ``out`` = (sse, sst)."""
    bk, dtype = projector.bk, projector.dtype
    train, val = fold
    A = bk.matmul(bk.asarray(rows.take(val) - spec.mx.astype(dtype), dtype=dtype), bk.transpose(spec.Vt))
    state = projector.prepare(spec, train, val)
    per_image = np.bincount(row_image[train], minlength=Y_unique.shape[0]).astype(dtype)
    for columns in tqdm(slices, disable=not progress, desc=desc):
        block = _columns(Y_unique, columns)
        row_sum = per_image @ block
        B = projector.product(spec, state, block, row_sum)
        y_mean = bk.asarray(row_sum / len(train), dtype=dtype)
        Yval = bk.asarray(block[row_image[val]], dtype=dtype) - y_mean[None, :]
        chunk_sse, chunk_sst = _alpha_errors(spec.s2, A, B, Yval, grid, bk)
        out[0][:, columns] += chunk_sse
        out[1][columns] += chunk_sst
        del B, Yval


def _cv_pass(rows: _Rows, Y_unique: Any, row_image: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
             grid: np.ndarray, target_chunk: int | None, bk: types.ModuleType, dtype: str, solver: str,
             progress: bool, with_all: bool, allow_cache: bool = True
             ) -> tuple[np.ndarray, np.ndarray, _Spectrum | None, _Projector]:
    """Pooled validation errors of every fold and alpha; with ``with_all``, also the spectrum of every row.

    The decompositions come from :func:`_spectra` (two side by side on numpy); each fold's
    errors are computed as soon as its decomposition is ready, then it is dropped.
    """
    n_targets = Y_unique.shape[1]
    slices = target_slices(n_targets, target_chunk)
    projector = _Projector(rows, row_image, Y_unique.shape[0], n_targets, target_chunk, len(folds),
                           _split_every_row(folds, rows.shape[0]), bk, dtype, allow_cache)
    out = (np.zeros((len(grid), n_targets)), np.zeros(n_targets))
    grid_b = bk.asarray(grid, dtype=dtype)
    everything = None
    for index, spec in enumerate(_spectra(_spectrum_tasks(rows, folds, with_all, bk, dtype, solver), bk)):
        if index == len(folds):
            everything = spec
            break
        _fold_errors(spec, folds[index], rows, Y_unique, row_image, grid_b, slices, projector, out,
                     f"ridge CV fold {index + 1}/{len(folds)}", progress)
        del spec
    return out[0], out[1], everything, projector


def cv_errors(Xs: np.ndarray, Y_unique: Any, row_image: np.ndarray,
              folds: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray, target_chunk: int | None,
              bk: types.ModuleType, dtype: str, solver: str = "eigh", progress: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    """Validation errors of every alpha of the grid, pooled over folds.

    Parameters
    ----------
    Xs : ndarray of shape (n_rows, n_features)
        Standardised rows.
    Y_unique : array-like of shape (n_images, n_targets)
    row_image : int array of shape (n_rows,)
    folds : list of (train, validation) row indices
    grid : ndarray of shape (n_alphas,)
    target_chunk : int or None
    bk : module
    dtype, solver : str
    progress : bool

    Returns
    -------
    sse : ndarray of shape (n_alphas, n_targets)
        Squared validation errors summed over validation rows and folds.
    sst : ndarray of shape (n_targets,)
        Validation sums of squares about each fold's validation mean, summed over folds.
    """
    sse, sst, _, _ = _cv_pass(_Rows(Xs, None, None, dtype), Y_unique, row_image, folds, grid, target_chunk,
                              bk, dtype, _check_solver(solver), progress, with_all=False)
    return sse, sst


def select_alphas(sse: np.ndarray, sst: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alpha of smallest pooled validation error per target, and validation R^2 of the grid.

    Parameters
    ----------
    sse : ndarray of shape (n_alphas, n_targets)
    sst : ndarray of shape (n_targets,)
    grid : ndarray of shape (n_alphas,)

    Returns
    -------
    best : int ndarray of shape (n_targets,)
        Index into ``grid`` (ties: the smallest alpha; 0 for a one-value grid).
    grid_scores : ndarray of shape (n_alphas, n_targets)
        ``1 - sse / sst``; NaN where ``sst`` is 0 and everywhere for a one-value grid.
    """
    best = np.argmin(sse, axis=0) if len(grid) > 1 else np.zeros(sse.shape[1], dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        grid_scores = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    if len(grid) == 1:
        grid_scores[:] = np.nan
    else:
        logger.info("ridge CV: chosen alpha at the grid's lower edge for %d and upper edge "
                    "for %d of %d targets", int(np.sum(best == 0)),
                    int(np.sum(best == len(grid) - 1)), sse.shape[1])
    return best, grid_scores


# ----------------------------------------------------------------------------- fitting
def _refit(rows: _Rows, Y_unique: Any, row_image: np.ndarray, alpha_per_target: np.ndarray,
           target_chunk: int | None, bk: types.ModuleType, dtype: str, solver: str, progress: bool,
           spec: _Spectrum | None = None, projector: _Projector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights and intercepts on every row (``spec``, ``projector``: from :func:`_cv_pass`, reused)."""
    n_rows, n_features = rows.shape
    n_targets = Y_unique.shape[1]
    if spec is None:
        spec = next(_spectra(_spectrum_tasks(rows, [], True, bk, dtype, solver), bk))
    if projector is None:
        projector = _Projector(rows, row_image, Y_unique.shape[0], n_targets, target_chunk, 0, True, bk, dtype)
    state = projector.prepare(spec, None, None)
    per_image = np.bincount(row_image, minlength=Y_unique.shape[0]).astype(dtype)
    coef = np.empty((n_features, n_targets), dtype=np.float32 if dtype == "float32" else np.float64)
    intercept = np.empty(n_targets, dtype=coef.dtype)
    mx = bk.asarray(spec.mx, dtype=dtype)
    for columns in tqdm(target_slices(n_targets, target_chunk), desc="ridge refit", disable=not progress):
        block = _columns(Y_unique, columns)
        row_sum = per_image @ block
        B = projector.product(spec, state, block, row_sum)
        alphas = bk.asarray(alpha_per_target[columns], dtype=dtype)
        w = bk.matmul(bk.transpose(spec.Vt), B / (spec.s2[:, None] + alphas[None, :]))
        coef[:, columns] = bk.to_numpy(w)
        intercept[columns] = bk.to_numpy(bk.asarray(row_sum / n_rows, dtype=dtype) - bk.matmul(mx, w))
        del B, w
    return coef, intercept


def refit(Xs: np.ndarray, Y_unique: Any, row_image: np.ndarray, alpha_per_target: np.ndarray,
          target_chunk: int | None, bk: types.ModuleType, dtype: str, solver: str = "eigh",
          progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fit on all rows with one alpha per target.

    Parameters
    ----------
    Xs : ndarray of shape (n_rows, n_features)
        Standardised rows.
    Y_unique : array-like of shape (n_images, n_targets)
    row_image : int array of shape (n_rows,)
    alpha_per_target : ndarray of shape (n_targets,)
    target_chunk : int or None
    bk : module
    dtype, solver : str
    progress : bool

    Returns
    -------
    coef : ndarray of shape (n_features, n_targets), ``dtype``
    intercept : ndarray of shape (n_targets,), ``dtype``
    """
    return _refit(_Rows(Xs, None, None, dtype), Y_unique, row_image, alpha_per_target, target_chunk, bk, dtype,
                  _check_solver(solver), progress)


def fit_ridge(X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None = None, *,
              alpha: float | np.ndarray = 1.0, target_chunk: int | None = DEFAULT_TARGET_CHUNK,
              backend: BackendLike = "numpy", dtype: str = "float32", solver: str = "eigh",
              progress: bool = False) -> RidgeResult:
    """Ridge regression with a fixed alpha (scalar or one per target), with intercept.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        Training rows (single trials), not yet standardised.
    Y_unique : array-like of shape (n_images, n_targets)
        Targets of each image (sliceable as ``Y[:, a:b]``).
    row_image : int array of shape (n_rows,), optional
        Image (row of ``Y_unique``) of each training row; default: row i is image i.
    alpha : float or array of shape (n_targets,)
        Penalty on the squared weights of the standardised features.
    target_chunk : int or None
        Targets solved at a time (``None``: all).
    backend : str or module
        himalaya backend (``"numpy"``, ``"torch"``, ``"torch_cuda"``, ...), used explicitly.
    dtype : {"float32", "float64"}
        Precision of the products with the targets.
    solver : {"eigh", "svd"}
        See :func:`decompose`; same solution.
    progress : bool
        Show progress bars.

    Returns
    -------
    RidgeResult
        ``coef`` (n_features, n_targets), ``intercept`` (n_targets,), ``x_mean``, ``x_std``
        (n_features,), ``alphas`` (n_targets,).
    """
    X, row_image = check_rows(X, Y_unique, row_image)
    bk = get_backend(backend)
    n_targets = Y_unique.shape[1]
    alpha_per_target = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_targets,)).copy()
    if not np.all(alpha_per_target > 0):
        raise InvalidArgumentError("alpha must be positive")
    x_mean, x_std = standardize_stats(X)
    coef, intercept = _refit(_Rows(X, x_mean, x_std, dtype), Y_unique, row_image, alpha_per_target,
                             check_target_chunk(target_chunk, n_targets), bk, dtype, _check_solver(solver), progress)
    return {"coef": coef, "intercept": intercept, "x_mean": x_mean, "x_std": x_std,
            "alphas": alpha_per_target}


def fit_ridge_cv(X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None = None, *,
                 alphas: Any = DEFAULT_ALPHAS, n_folds: int = 5, groups: np.ndarray | None = None,
                 target_chunk: int | None = DEFAULT_TARGET_CHUNK, backend: BackendLike = "numpy",
                 dtype: str = "float32", solver: str = "eigh", progress: bool = False,
                 one_block_shortcut: bool = True) -> RidgeResult:
    """Ridge regression with per-target alpha chosen by grouped K-fold cross-validation.

    See the module docstring for the model, the folds and the alpha scale.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        Training rows, not yet standardised.
    Y_unique : array-like of shape (n_images, n_targets)
        Sliceable as ``Y[:, a:b]``; only ``target_chunk`` columns are used at once.
    row_image : int array of shape (n_rows,), optional
        Row of ``Y_unique`` for each row of ``X``; default ``arange(n_rows)``.
    alphas : sequence of float
        Regularisation grid (positive); one value fits it without cross-validation.
    n_folds : int
        Folds of :func:`grouped_folds` (``shuffle=False``).
    groups : array of shape (n_rows,), optional
        CV groups; default ``row_image``.
    target_chunk : int or None
    backend : str or module
        himalaya backend, used explicitly (never set globally).
    dtype : {"float32", "float64"}
    solver : {"eigh", "svd"}
    progress : bool
    one_block_shortcut : bool
        With every target in one chunk, compute the products in the cheaper order where it is
        cheaper (:class:`_Projector`). ``False``: the per-chunk order of a fit of more targets
        than one chunk, which a part of such a fit uses to equal it bit for bit.

    Returns
    -------
    RidgeResult
        ``coef`` (n_features, n_targets), ``intercept`` (n_targets,), ``alphas`` (n_targets,)
        chosen, ``x_mean``, ``x_std`` (n_features,), ``cv_scores`` (n_targets,) pooled validation
        R^2 at the chosen alpha (NaN for targets constant in every fold), ``cv_scores_grid``
        (n_alphas, n_targets) and ``alpha_grid`` (n_alphas,).
    """
    X, row_image = check_rows(X, Y_unique, row_image)
    grid = check_alphas(alphas)
    bk = get_backend(backend)
    n_targets = Y_unique.shape[1]
    target_chunk = check_target_chunk(target_chunk, n_targets)
    _check_solver(solver)
    groups = row_image if groups is None else np.asarray(groups)
    if groups.shape != (X.shape[0],):
        raise InvalidArgumentError(f"groups must have shape ({X.shape[0]},), got {groups.shape}")
    folds = grouped_folds(groups, n_folds) if len(grid) > 1 else []
    x_mean, x_std = standardize_stats(X)
    rows = _Rows(X, x_mean, x_std, dtype)
    sse, sst, everything, projector = _cv_pass(rows, Y_unique, row_image, folds, grid, target_chunk, bk, dtype,
                                               solver, progress, with_all=True, allow_cache=one_block_shortcut)
    best, grid_scores = select_alphas(sse, sst, grid)
    chosen = grid[best]
    coef, intercept = _refit(rows, Y_unique, row_image, chosen, target_chunk, bk, dtype, solver, progress,
                             spec=everything, projector=projector)
    return {"coef": coef, "intercept": intercept, "alphas": chosen, "x_mean": x_mean,
            "x_std": x_std, "cv_scores": grid_scores[best, np.arange(n_targets)],
            "cv_scores_grid": grid_scores, "alpha_grid": grid}


def predict_ridge(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, x_mean: np.ndarray,
                  x_std: np.ndarray, target_chunk: int | None = None) -> np.ndarray:
    """``((X - x_mean) / x_std) @ coef + intercept``.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    coef : array of shape (n_features, n_targets)
    intercept : array of shape (n_targets,)
    x_mean, x_std : arrays of shape (n_features,)
    target_chunk : int, optional
        Multiply ``target_chunk`` columns of ``coef`` at a time (the blocks the fit solved), so
        that a column's prediction is computed alike in a fit of every target and in a fit of a
        part made of whole blocks (:mod:`brain2image.decoding.parts`).

    Returns
    -------
    ndarray of shape (n_rows, n_targets), dtype of ``coef``
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != coef.shape[0]:
        raise InvalidArgumentError(f"X must have shape (n_rows, {coef.shape[0]}), got {X.shape}")
    Xs, offset = standardize(X, x_mean, x_std, coef.dtype), intercept.astype(coef.dtype)
    if target_chunk is None or target_chunk >= coef.shape[1]:
        return Xs @ coef + offset
    out = np.empty((len(Xs), coef.shape[1]), dtype=coef.dtype)
    for start in range(0, coef.shape[1], target_chunk):
        block = slice(start, start + target_chunk)
        out[:, block] = Xs @ np.ascontiguousarray(coef[:, block]) + offset[block]
    return out
