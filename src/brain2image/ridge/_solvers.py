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
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import scipy.sparse
from sklearn.model_selection import GroupKFold, KFold
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
    x_std = X.std(axis=0, dtype=np.float64)
    x_std[~(x_std > 0)] = 1.0
    return x_mean, x_std


def standardize(X: np.ndarray, x_mean: np.ndarray, x_std: np.ndarray, dtype: Any) -> np.ndarray:
    """``((X - x_mean) / x_std)`` cast to ``dtype``; array of shape (n_rows, n_features)."""
    return ((np.asarray(X) - x_mean) / x_std).astype(dtype)


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


def _gram_spectrum(Xc: np.ndarray, bk: types.ModuleType, dtype: str) -> tuple[Any, Any]:
    """``S^2`` and ``V^T`` of ``Xc`` from the float64 eigendecomposition of its smaller Gram matrix.

    Eigenvalues below float64 rounding of the largest are dropped: they carry no signal and
    the penalty dominates them.
    """
    X64 = bk.asarray(Xc, dtype="float64")
    n, p = Xc.shape
    gram = bk.matmul(bk.transpose(X64), X64) if n >= p else bk.matmul(X64, bk.transpose(X64))
    evals, evecs = bk.eigh(gram)
    del gram
    keep = bk.to_numpy(evals) > float(bk.to_numpy(evals).max(initial=0.0)) * max(n, p) * 1e-15
    keep_idx = np.flatnonzero(keep)
    s2 = evals[keep_idx] if keep_idx.size else evals[:0]
    evecs = evecs[:, keep_idx]
    if n >= p:
        Vt = bk.transpose(evecs)
    else:                                                        # V = X_c^T U / s
        Vt = bk.matmul(bk.transpose(evecs), X64) / bk.sqrt(s2)[:, None]
    del X64, evecs
    return bk.asarray(s2, dtype=dtype), bk.asarray(Vt, dtype=dtype)


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
        ``"eigh"``: see :func:`_gram_spectrum`; ``"svd"``: the backend's SVD in ``dtype``.

    Returns
    -------
    Decomposition
    """
    _check_solver(solver)
    Xr = Xs[rows]
    mx = Xr.mean(axis=0, dtype=np.float64)
    Xc = (Xr - mx).astype(dtype, copy=False)
    del Xr
    repeats = repeated_rows(row_image[rows])
    Xg = repeats.sums(Xc, dtype)                                 # (n_img, n_features)
    if solver == "svd":
        _, s, Vt = bk.svd(bk.asarray(Xc, dtype=dtype), full_matrices=False)
        s2 = s * s
    else:
        s2, Vt = _gram_spectrum(Xc, bk, dtype)
    del Xc
    H = bk.matmul(Vt, bk.asarray(Xg.T, dtype=dtype))             # (k, n_img)
    return Decomposition(mx=mx, s2=s2, Vt=Vt, H=H, images=repeats.images,
                         weights=bk.asarray(repeats.shares, dtype=dtype))


def _columns(Y_unique: Any, columns: slice, images: np.ndarray | None = None) -> np.ndarray:
    block = np.asarray(Y_unique[:, columns])
    return block if images is None else block[images]


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


# ----------------------------------------------------------------------------- cross-validation
def _chunk_errors(dec: Decomposition, A: Any, block: np.ndarray, val_images: np.ndarray, grid: Any,
                  bk: types.ModuleType, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Validation squared errors (n_alphas, n_chunk) and total sum of squares (n_chunk,)."""
    Yc = bk.asarray(block[dec.images], dtype=dtype)
    B = bk.matmul(dec.H, Yc)                                     # (k, n_chunk)
    y_mean = bk.matmul(dec.weights, Yc)
    Yval = bk.asarray(block[val_images], dtype=dtype) - y_mean[None, :]
    sst = bk.to_numpy(((Yval - Yval.mean(0)[None, :]) ** 2).sum(0)).astype(np.float64)
    sse = np.empty((len(grid), block.shape[1]))
    for j in range(len(grid)):
        pred = bk.matmul(A, B / (dec.s2[:, None] + grid[j]))
        sse[j] = bk.to_numpy(((pred - Yval) ** 2).sum(0))
        del pred
    return sse, sst


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
    n_targets = Y_unique.shape[1]
    sse, sst = np.zeros((len(grid), n_targets)), np.zeros(n_targets)
    alpha_b = bk.asarray(grid, dtype=dtype)
    for fold, (train, val) in enumerate(folds):
        dec = decompose(Xs, train, row_image, bk, dtype, solver)
        A = bk.matmul(bk.asarray(Xs[val] - dec.mx.astype(dtype), dtype=dtype),
                      bk.transpose(dec.Vt))                      # (n_val, k)
        for columns in tqdm(target_slices(n_targets, target_chunk), disable=not progress,
                            desc=f"ridge CV fold {fold + 1}/{len(folds)}"):
            chunk_sse, chunk_sst = _chunk_errors(dec, A, _columns(Y_unique, columns), row_image[val],
                                                 alpha_b, bk, dtype)
            sse[:, columns] += chunk_sse
            sst[columns] += chunk_sst
        del dec, A
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
    n_targets = Y_unique.shape[1]
    dec = decompose(Xs, np.arange(Xs.shape[0]), row_image, bk, dtype, solver)
    coef = np.empty((Xs.shape[1], n_targets), dtype=np.float32 if dtype == "float32" else np.float64)
    intercept = np.empty(n_targets, dtype=coef.dtype)
    for columns in tqdm(target_slices(n_targets, target_chunk), desc="ridge refit", disable=not progress):
        Yc = bk.asarray(_columns(Y_unique, columns, dec.images), dtype=dtype)
        w, b = solve_chunk(dec, Yc, bk.asarray(alpha_per_target[columns], dtype=dtype), bk, dtype)
        coef[:, columns] = bk.to_numpy(w)
        intercept[columns] = bk.to_numpy(b)
    return coef, intercept


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
    Xs = standardize(X, x_mean, x_std, dtype)
    coef, intercept = refit(Xs, Y_unique, row_image, alpha_per_target, check_target_chunk(target_chunk, n_targets),
                            bk, dtype, _check_solver(solver), progress)
    return {"coef": coef, "intercept": intercept, "x_mean": x_mean, "x_std": x_std,
            "alphas": alpha_per_target}


def fit_ridge_cv(X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None = None, *,
                 alphas: Any = DEFAULT_ALPHAS, n_folds: int = 5, groups: np.ndarray | None = None,
                 target_chunk: int | None = DEFAULT_TARGET_CHUNK, backend: BackendLike = "numpy",
                 dtype: str = "float32", solver: str = "eigh", progress: bool = False) -> RidgeResult:
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
    Xs = standardize(X, x_mean, x_std, dtype)
    sse, sst = cv_errors(Xs, Y_unique, row_image, folds, grid, target_chunk, bk, dtype, solver, progress)
    best, grid_scores = select_alphas(sse, sst, grid)
    chosen = grid[best]
    coef, intercept = refit(Xs, Y_unique, row_image, chosen, target_chunk, bk, dtype, solver, progress)
    return {"coef": coef, "intercept": intercept, "alphas": chosen, "x_mean": x_mean,
            "x_std": x_std, "cv_scores": grid_scores[best, np.arange(n_targets)],
            "cv_scores_grid": grid_scores, "alpha_grid": grid}


def predict_ridge(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, x_mean: np.ndarray,
                  x_std: np.ndarray) -> np.ndarray:
    """``((X - x_mean) / x_std) @ coef + intercept``.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    coef : array of shape (n_features, n_targets)
    intercept : array of shape (n_targets,)
    x_mean, x_std : arrays of shape (n_features,)

    Returns
    -------
    ndarray of shape (n_rows, n_targets), dtype of ``coef``
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != coef.shape[0]:
        raise InvalidArgumentError(f"X must have shape (n_rows, {coef.shape[0]}), got {X.shape}")
    return standardize(X, x_mean, x_std, coef.dtype) @ coef + intercept.astype(coef.dtype)
