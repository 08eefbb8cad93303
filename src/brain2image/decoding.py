"""Ridge decoders from ROI voxels to latent-diffusion features (z, c), on himalaya backends.

The model of one decoder is, for a row of voxel responses ``x`` (n_voxels,)::

    pred = ((x - x_mean) / x_std) @ coef + intercept

with ``x_mean``, ``x_std`` the per-voxel mean and standard deviation over the training rows
(zero-variance voxels get ``x_std = 1``, so their standardised value is 0 and they never
produce NaN), ``coef`` (n_voxels, n_targets) the ridge weights and ``intercept``
(n_targets,) the training mean of the targets (the targets are centred before the fit and
their mean added back, so a constant offset in the features is recovered — unlike the
reference code's ``fit_intercept=False`` on uncentred targets).

Regularisation is chosen per target by K-fold cross-validation over a grid of ``alphas``.
Folds are grouped by image: all single-trial rows of an image fall in the same fold, so a
validation image is never seen in training (otherwise repeats make CV optimistic and favour
small alphas).

Memory and speed. Training rows repeat images (NSD shows each image up to 3 times) and
the c targets are 77 x 768 = 59,136 values, so the targets are given once per image,
``Y_unique`` (n_images, n_targets), with ``row_image`` (n_rows,) mapping each row to its
image. ``Y_unique[row_image]`` is never built for all targets: with the thin SVD
``X_c = U S V^T`` of the (centred, standardised) training rows,

    X_c^T Y = (G^T X_c)^T Y_unique,           G = row-to-image indicator (sparse)
    coef(alpha) = V diag(1 / (s^2 + alpha)) V^T X_c^T Y

so one SVD per fold (and one for the final refit) is applied to chunks of ``target_chunk``
target columns, each alpha of the grid costing one small matrix product per chunk. ``V`` and
``S`` come by default from the float64 eigendecomposition of the smaller Gram matrix (several
times faster than a direct SVD on CPU); ``solver="svd"`` uses the backend's SVD instead.

Backends: every function takes ``backend`` (a himalaya backend name or module, imported
directly; ``himalaya.backend.set_backend`` is never called here).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse
from sklearn.model_selection import GroupKFold
from tqdm import tqdm

from . import __version__
from ._io import atomic_path
from .config import DecoderConfig, config_from_dict, config_to_json
from .errors import DataFormatError, MissingFileError
from .formats.prepared import PreparedData

__all__ = [
    "standardize_stats",
    "fit_ridge",
    "fit_ridge_cv",
    "predict_ridge",
    "pearson_per_target",
    "RidgeDecoder",
    "DecoderFile",
    "decoder_filename",
    "fit_decoder_from_files",
    "load_decoder",
]

logger = logging.getLogger(__name__)

_BACKENDS = ("numpy", "torch", "torch_cuda", "cupy", "torch_mps")


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def _get_backend(backend: str | types.ModuleType) -> types.ModuleType:
    """The himalaya backend module named ``backend``, without touching himalaya's global state."""
    if isinstance(backend, types.ModuleType):
        return backend
    if backend not in _BACKENDS:
        raise ValueError(f"unknown himalaya backend {backend!r}; expected one of {list(_BACKENDS)}")
    return importlib.import_module(f"himalaya.backend.{backend}")


def standardize_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and standard deviation (ddof 0) of the training rows.

    Parameters
    ----------
    X : array of shape (n_rows, n_voxels)

    Returns
    -------
    x_mean, x_std : arrays of shape (n_voxels,), float64
        ``x_std`` is 1 where a voxel has zero variance (its standardised value is then 0).
    """
    X = np.asarray(X)
    x_mean = X.mean(axis=0, dtype=np.float64)
    x_std = X.std(axis=0, dtype=np.float64)
    x_std[~(x_std > 0)] = 1.0
    return x_mean, x_std


def _check_inputs(X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    if np.ndim(X) != 2:
        raise ValueError(f"X must be 2-D (n_rows, n_voxels), got shape {np.shape(X)}")
    if len(Y_unique.shape) != 2:
        raise ValueError(f"Y_unique must be 2-D (n_images, n_targets), got shape {Y_unique.shape}")
    n_rows, n_images = X.shape[0], Y_unique.shape[0]
    if row_image is None:
        if n_rows != n_images:
            raise ValueError(f"without row_image, X and Y need the same number of rows "
                             f"(got {n_rows} and {n_images})")
        row_image = np.arange(n_rows)
    row_image = np.asarray(row_image)
    if row_image.shape != (n_rows,) or not np.issubdtype(row_image.dtype, np.integer):
        raise ValueError(f"row_image must be an integer array of shape ({n_rows},), "
                         f"got {row_image.dtype} {row_image.shape}")
    if n_rows and (row_image.min() < 0 or row_image.max() >= n_images):
        raise ValueError(f"row_image values must lie in [0, {n_images}), got "
                         f"[{row_image.min()}, {row_image.max()}]")
    return np.asarray(X), row_image.astype(np.int64)


def _check_alphas(alphas: Any) -> np.ndarray:
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(alphas > 0) or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alphas must be a non-empty list of positive finite numbers, got {alphas}")
    return np.unique(alphas)  # sorted ascending, duplicates removed


@dataclass
class _Decomposition:
    """Ridge-ready decomposition of a set of (centred, standardised) training rows."""

    mx: np.ndarray          # (n_voxels,) mean of the rows, removed before the SVD
    s2: Any                 # (k,) squared singular values, backend array
    Vt: Any                 # (k, n_voxels) backend array
    H: Any                  # (k, n_img) = V^T (G^T X_c)^T restricted to the images present
    images: np.ndarray      # (n_img,) images present in these rows
    weights: Any            # (n_img,) share of the rows showing each image (for the Y mean)


def _decompose(Xs: np.ndarray, rows: np.ndarray, row_image: np.ndarray, bk: types.ModuleType,
               dtype: str, solver: str = "eigh") -> _Decomposition:
    """Thin SVD ``X_c = U S V^T`` of the centred rows (only ``S`` and ``V`` are kept).

    ``solver="eigh"`` gets ``V`` and ``S^2`` from the eigendecomposition of the smaller Gram
    matrix (``X_c^T X_c`` or ``X_c X_c^T``) in float64, several times faster than a direct SVD
    on CPU and as accurate for the penalised problem (eigenvalues below float64 rounding of the
    largest are dropped: they carry no signal and the penalty dominates them); ``solver="svd"``
    runs the backend's SVD in ``dtype``.
    """
    Xr = Xs[rows]
    mx = Xr.mean(axis=0, dtype=np.float64)
    Xc = (Xr - mx).astype(dtype, copy=False)
    del Xr
    images, inverse, counts = np.unique(row_image[rows], return_inverse=True, return_counts=True)
    G_T = scipy.sparse.csr_matrix(
        (np.ones(len(rows), dtype=dtype), (inverse, np.arange(len(rows)))),
        shape=(len(images), len(rows)))
    Xg = np.asarray(G_T @ Xc)                                   # (n_img, n_voxels)
    if solver == "svd":
        _, s, Vt = bk.svd(bk.asarray(Xc, dtype=dtype), full_matrices=False)
        s2 = s * s
    elif solver == "eigh":
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
        else:                                                    # V = X_c^T U / s
            Vt = bk.matmul(bk.transpose(evecs), X64) / bk.sqrt(s2)[:, None]
        del X64, evecs
        s2, Vt = bk.asarray(s2, dtype=dtype), bk.asarray(Vt, dtype=dtype)
    else:
        raise ValueError(f"unknown solver {solver!r}; expected 'eigh' or 'svd'")
    del Xc
    H = bk.matmul(Vt, bk.asarray(Xg.T, dtype=dtype))             # (k, n_img)
    return _Decomposition(mx=mx, s2=s2, Vt=Vt, H=H, images=images,
                          weights=bk.asarray(counts / counts.sum(), dtype=dtype))


def _chunk(Y_unique: Any, start: int, stop: int, images: np.ndarray | None = None) -> np.ndarray:
    block = np.asarray(Y_unique[:, start:stop])
    return block if images is None else block[images]


def _solve_chunk(dec: _Decomposition, Yc: Any, alphas: Any, bk: types.ModuleType, dtype: str
                 ) -> tuple[Any, Any]:
    """Weights (n_voxels, n_chunk) and intercept (n_chunk,) for per-target ``alphas``."""
    B = bk.matmul(dec.H, Yc)                                     # (k, n_chunk)
    coef = bk.matmul(bk.transpose(dec.Vt), B / (dec.s2[:, None] + alphas[None, :]))
    y_mean = bk.matmul(dec.weights, Yc)
    return coef, y_mean - bk.matmul(bk.asarray(dec.mx, dtype=dtype), coef)


# ---------------------------------------------------------------------------------------
# functional core
# ---------------------------------------------------------------------------------------
def _refit(Xs: np.ndarray, Y_unique: Any, row_image: np.ndarray, alpha_per_target: np.ndarray,
           target_chunk: int, bk: types.ModuleType, dtype: str, progress: bool,
           solver: str = "eigh") -> tuple[np.ndarray, np.ndarray]:
    n_targets = Y_unique.shape[1]
    dec = _decompose(Xs, np.arange(Xs.shape[0]), row_image, bk, dtype, solver)
    coef = np.empty((Xs.shape[1], n_targets), dtype=np.float32 if dtype == "float32" else np.float64)
    intercept = np.empty(n_targets, dtype=coef.dtype)
    for start in tqdm(range(0, n_targets, target_chunk), desc="ridge refit", disable=not progress):
        stop = min(start + target_chunk, n_targets)
        Yc = bk.asarray(_chunk(Y_unique, start, stop, dec.images), dtype=dtype)
        w, b = _solve_chunk(dec, Yc, bk.asarray(alpha_per_target[start:stop], dtype=dtype), bk,
                            dtype)
        coef[:, start:stop] = bk.to_numpy(w)
        intercept[start:stop] = bk.to_numpy(b)
    return coef, intercept


def fit_ridge(X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None = None, *,
              alpha: float | np.ndarray = 1.0, target_chunk: int = 8192,
              backend: str | types.ModuleType = "numpy", dtype: str = "float32",
              solver: str = "eigh", progress: bool = False) -> dict[str, np.ndarray]:
    """Ridge regression with a fixed alpha (scalar or one per target), with intercept.

    Parameters
    ----------
    X : array of shape (n_rows, n_voxels)
        Training rows (single trials), not yet standardised.
    Y_unique : array-like of shape (n_images, n_targets)
        Targets of each image (numpy array or anything sliceable as ``Y[:, a:b]``).
    row_image : int array of shape (n_rows,), optional
        Image (row of ``Y_unique``) of each training row; default: row i is image i.
    alpha : float or array of shape (n_targets,)
        Penalty on the squared weights of the standardised voxels.
    target_chunk : int
        Targets solved at a time.
    backend : str or module
        himalaya backend (``"numpy"``, ``"torch"``, ``"torch_cuda"``, ...).
    dtype : str
        ``"float32"`` (default) or ``"float64"`` for the products with the targets.
    solver : str
        ``"eigh"`` (default: V and S^2 from the float64 eigendecomposition of the smaller Gram
        matrix) or ``"svd"`` (the backend's SVD of the rows in ``dtype``); same solution.
    progress : bool

    Returns
    -------
    dict with ``coef`` (n_voxels, n_targets), ``intercept`` (n_targets,), ``x_mean``,
    ``x_std`` (n_voxels,), ``alphas`` (n_targets,).
    """
    X, row_image = _check_inputs(X, Y_unique, row_image)
    bk = _get_backend(backend)
    n_targets = Y_unique.shape[1]
    alpha_per_target = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_targets,)).copy()
    if not np.all(alpha_per_target > 0):
        raise ValueError("alpha must be positive")
    x_mean, x_std = standardize_stats(X)
    Xs = ((X - x_mean) / x_std).astype(dtype)
    coef, intercept = _refit(Xs, Y_unique, row_image, alpha_per_target, target_chunk, bk, dtype,
                             progress, solver)
    return {"coef": coef, "intercept": intercept, "x_mean": x_mean, "x_std": x_std,
            "alphas": alpha_per_target}


def fit_ridge_cv(X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None = None, *,
                 alphas: Any = tuple(10.0 ** k for k in range(0, 7)), n_folds: int = 5,
                 groups: np.ndarray | None = None, target_chunk: int = 8192,
                 backend: str | types.ModuleType = "numpy", dtype: str = "float32",
                 solver: str = "eigh", progress: bool = False) -> dict[str, np.ndarray]:
    """Ridge regression with per-target alpha chosen by grouped K-fold cross-validation.

    Voxels are standardised on the training rows; targets are centred (intercept fitted).
    Objective per target: ``||y - X_s w - b||^2 + alpha ||w||^2`` summed over rows.

    Alpha grid: the penalty acts on ``X_s^T X_s``, whose diagonal is ``n_rows`` (unit-variance
    voxels), so ``alpha / n_rows`` is the per-row penalty that the reference code's grid of
    1e-6..1 refers to if its loss is averaged over rows. The package default
    (``DecoderConfig.alphas`` = 1, 10, ..., 1e6) spans ``alpha / n_rows`` from ~4e-5 to ~40 for
    the ~27,000 NSD training trials: the upper part of the reference range plus stronger
    shrinkage, which noisy single-trial betas of thousands of voxels need. Targets whose chosen
    alpha sits on an edge of the grid are counted in the log.

    Folds: :class:`sklearn.model_selection.GroupKFold` over ``groups`` (default ``row_image``),
    so all repeats of an image are in the same fold. Each fold centres its training rows and
    targets itself; validation scores are summed over single-trial validation rows. The alpha
    with the smallest pooled validation squared error is chosen per target (ties: the smallest
    alpha), then the model is refit on all rows.

    Parameters
    ----------
    X : array of shape (n_rows, n_voxels)
    Y_unique : array-like of shape (n_images, n_targets)
        Sliceable as ``Y[:, a:b]`` (numpy array); only ``target_chunk`` columns are used at once.
    row_image : int array of shape (n_rows,), optional
        Row of ``Y_unique`` for each row of ``X``; default ``arange(n_rows)``.
    alphas : sequence of float
        Regularisation grid (positive), see above.
    n_folds : int
    groups : array of shape (n_rows,), optional
        CV groups; default ``row_image``.
    target_chunk : int
    backend : str or module
        himalaya backend name; never set globally.
    dtype : str
        ``"float32"`` or ``"float64"`` for the products with the targets.
    solver : str
        ``"eigh"`` or ``"svd"``, see :func:`fit_ridge`.
    progress : bool

    Returns
    -------
    dict with ``coef`` (n_voxels, n_targets), ``intercept`` (n_targets,), ``alphas``
    (n_targets,) chosen, ``x_mean``, ``x_std`` (n_voxels,), ``cv_scores`` (n_targets,) pooled
    validation R^2 at the chosen alpha (NaN for targets constant in every fold),
    ``cv_scores_grid`` (n_alphas, n_targets) and ``alpha_grid`` (n_alphas,).
    """
    X, row_image = _check_inputs(X, Y_unique, row_image)
    grid = _check_alphas(alphas)
    bk = _get_backend(backend)
    if target_chunk < 1:
        raise ValueError(f"target_chunk must be >= 1, got {target_chunk}")
    n_rows, n_targets = X.shape[0], Y_unique.shape[1]
    groups = row_image if groups is None else np.asarray(groups)
    if groups.shape != (n_rows,):
        raise ValueError(f"groups must have shape ({n_rows},), got {groups.shape}")
    n_groups = len(np.unique(groups))
    if len(grid) > 1 and (n_folds < 2 or n_groups < n_folds):
        raise ValueError(f"cross-validation needs 2 <= n_folds <= number of groups; got "
                         f"n_folds={n_folds} with {n_groups} groups (images)")

    x_mean, x_std = standardize_stats(X)
    Xs = ((X - x_mean) / x_std).astype(dtype)

    sse = np.zeros((len(grid), n_targets))
    sst = np.zeros(n_targets)
    if len(grid) > 1:
        alpha_b = bk.asarray(grid, dtype=dtype)
        folds = list(GroupKFold(n_splits=n_folds).split(Xs, groups=groups))
        for fold, (train, val) in enumerate(folds):
            dec = _decompose(Xs, train, row_image, bk, dtype, solver)
            A = bk.matmul(bk.asarray(Xs[val] - dec.mx.astype(dtype), dtype=dtype),
                          bk.transpose(dec.Vt))                      # (n_val, k)
            val_images = row_image[val]
            for start in tqdm(range(0, n_targets, target_chunk), disable=not progress,
                              desc=f"ridge CV fold {fold + 1}/{n_folds}"):
                stop = min(start + target_chunk, n_targets)
                block = _chunk(Y_unique, start, stop)
                Yc = bk.asarray(block[dec.images], dtype=dtype)
                B = bk.matmul(dec.H, Yc)                             # (k, n_chunk)
                y_mean = bk.matmul(dec.weights, Yc)
                Yval = bk.asarray(block[val_images], dtype=dtype) - y_mean[None, :]
                del block
                sst[start:stop] += bk.to_numpy(
                    ((Yval - Yval.mean(0)[None, :]) ** 2).sum(0)).astype(np.float64)
                for j in range(len(grid)):
                    pred = bk.matmul(A, B / (dec.s2[:, None] + alpha_b[j]))
                    sse[j, start:stop] += bk.to_numpy(((pred - Yval) ** 2).sum(0))
                    del pred
            del dec, A
        best = np.argmin(sse, axis=0)
    else:
        best = np.zeros(n_targets, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        grid_scores = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    if len(grid) == 1:
        grid_scores[:] = np.nan
    chosen = grid[best]
    if len(grid) > 1:
        logger.info("ridge CV: chosen alpha at the grid's lower edge for %d and upper edge "
                    "for %d of %d targets", int(np.sum(best == 0)),
                    int(np.sum(best == len(grid) - 1)), n_targets)
    coef, intercept = _refit(Xs, Y_unique, row_image, chosen, target_chunk, bk, dtype, progress,
                             solver)
    return {"coef": coef, "intercept": intercept, "alphas": chosen, "x_mean": x_mean,
            "x_std": x_std, "cv_scores": grid_scores[best, np.arange(n_targets)],
            "cv_scores_grid": grid_scores, "alpha_grid": grid}


def predict_ridge(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, x_mean: np.ndarray,
                  x_std: np.ndarray) -> np.ndarray:
    """``((X - x_mean) / x_std) @ coef + intercept``.

    Parameters
    ----------
    X : array of shape (n_rows, n_voxels)
    coef : array of shape (n_voxels, n_targets)
    intercept : array of shape (n_targets,)
    x_mean, x_std : arrays of shape (n_voxels,)

    Returns
    -------
    array of shape (n_rows, n_targets), dtype of ``coef``
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != coef.shape[0]:
        raise ValueError(f"X must have shape (n_rows, {coef.shape[0]}), got {X.shape}")
    Xs = ((X - x_mean) / x_std).astype(coef.dtype)
    return Xs @ coef + intercept.astype(coef.dtype)


def pearson_per_target(pred: np.ndarray, true: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Pearson r between the columns of ``pred`` and ``true`` (over rows).

    Parameters
    ----------
    pred, true : arrays of shape (n_rows, n_targets)
    chunk : int
        Columns computed at a time (float64).

    Returns
    -------
    array of shape (n_targets,), NaN where a column is constant.
    """
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred and true must be 2-D of the same shape, got {pred.shape} and {true.shape}")
    out = np.empty(pred.shape[1])
    for start in range(0, pred.shape[1], chunk):
        p = pred[:, start:start + chunk].astype(np.float64)
        t = true[:, start:start + chunk].astype(np.float64)
        p -= p.mean(0)
        t -= t.mean(0)
        denom = np.sqrt((p * p).sum(0) * (t * t).sum(0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (p * t).sum(0) / np.where(denom > 0, denom, 1.0)
        out[start:start + chunk] = np.where(denom > 0, r, np.nan)
    return out


# ---------------------------------------------------------------------------------------
# estimator
# ---------------------------------------------------------------------------------------
class RidgeDecoder:
    """Ridge decoder (sklearn-style) with per-target alpha chosen by grouped K-fold CV.

    Parameters
    ----------
    alphas : sequence of float
        Regularisation grid after voxel standardisation (see :func:`fit_ridge_cv`); a single
        value fits that alpha without cross-validation.
    cv_folds : int
    target_chunk : int
    backend : str
        himalaya backend name (``"numpy"``, ``"torch"``, ``"torch_cuda"``).
    dtype : str
    progress : bool

    Attributes
    ----------
    coef_ : array of shape (n_voxels, n_targets)
    intercept_ : array of shape (n_targets,)
    alphas_ : array of shape (n_targets,)
    x_mean_, x_std_ : arrays of shape (n_voxels,)
    cv_scores_ : array of shape (n_targets,)
    target_shape_ : tuple of int
        Shape of one image's targets (``Y.shape[1:]`` at fit time).
    """

    def __init__(self, alphas: Any = tuple(10.0 ** k for k in range(0, 7)), cv_folds: int = 5,
                 target_chunk: int = 8192, backend: str = "numpy", dtype: str = "float32",
                 progress: bool = False) -> None:
        self.alphas = alphas
        self.cv_folds = cv_folds
        self.target_chunk = target_chunk
        self.backend = backend
        self.dtype = dtype
        self.progress = progress

    def fit(self, X: np.ndarray, Y: np.ndarray, row_image: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> RidgeDecoder:
        """Fit on rows ``X`` (n_rows, n_voxels) and targets ``Y`` (n_images, *target_shape).

        ``row_image`` (n_rows,) maps rows to images (default: one row per image);
        ``groups`` (n_rows,) overrides the CV groups (default ``row_image``).
        """
        Y = np.asarray(Y)
        self.target_shape_ = tuple(Y.shape[1:])
        result = fit_ridge_cv(X, Y.reshape(len(Y), -1), row_image, alphas=self.alphas,
                              n_folds=self.cv_folds, groups=groups, target_chunk=self.target_chunk,
                              backend=self.backend, dtype=self.dtype, progress=self.progress)
        self.coef_ = result["coef"]
        self.intercept_ = result["intercept"]
        self.alphas_ = result["alphas"]
        self.x_mean_ = result["x_mean"]
        self.x_std_ = result["x_std"]
        self.cv_scores_ = result["cv_scores"]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets, array of shape (n_rows, *target_shape)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("RidgeDecoder is not fitted; call fit first")
        pred = predict_ridge(X, self.coef_, self.intercept_, self.x_mean_, self.x_std_)
        return pred.reshape((len(pred),) + self.target_shape_)


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------
def decoder_filename(subject: int, target: str, roi: str) -> str:
    """``subjXX_<target>_<roi>.h5`` (architecture.md, decoder files)."""
    return f"subj{int(subject):02d}_{target}_{roi}.h5"


def _read_prepared(path: Path, roi: str) -> dict[str, Any]:
    prepared = PreparedData(path)
    X_train, train_ids = prepared.train(roi)
    X_test, test_ids = prepared.test(roi)
    return {"train_ids": train_ids, "test_ids": test_ids, "X_train": X_train, "X_test": X_test,
            "subject": int(prepared.attrs.get("subject", 0))}


def _store_rows(store_path: Path, store_ids: np.ndarray, wanted: np.ndarray, prepared_path: Path,
                what: str) -> np.ndarray:
    """Row of the feature store of each wanted 73k id (clear error if any is missing)."""
    pos = np.searchsorted(store_ids, wanted)
    if len(store_ids):
        missing = (pos >= len(store_ids)) | (store_ids[np.minimum(pos, len(store_ids) - 1)] != wanted)
    else:
        missing = np.ones(len(wanted), dtype=bool)
    if np.any(missing):
        bad = np.unique(wanted[missing])
        raise DataFormatError(
            f"feature store {store_path} (field 'ids') lacks {len(bad)} {what} 73k id(s) of prepared "
            f"file {prepared_path}, e.g. {bad[:5].tolist()}; expected every id to have features")
    return pos


def _read_feature_rows(ds: h5py.Dataset, rows: np.ndarray, block_bytes: int = 256 * 2**20
                       ) -> np.ndarray:
    """``ds[rows]`` flattened to (len(rows), n_targets) float32, read in contiguous row blocks."""
    n_targets = int(np.prod(ds.shape[1:]))
    out = np.empty((len(rows), n_targets), dtype=np.float32)
    order = np.argsort(rows)
    sorted_rows = rows[order]
    block = max(1, block_bytes // max(1, n_targets * 4))
    i = 0
    while i < len(sorted_rows):
        lo = sorted_rows[i]
        j = np.searchsorted(sorted_rows, lo + block, side="left")
        slab = ds[lo:sorted_rows[j - 1] + 1].reshape(-1, n_targets)
        out[order[i:j]] = slab[sorted_rows[i:j] - lo]
        i = j
    return out


def fit_decoder_from_files(prepared_path: str | Path, feature_store_path: str | Path, roi: str,
                           target_name: str, out_path: str | Path,
                           config: DecoderConfig | None = None, *,
                           backend: str = "numpy", dtype: str = "float32",
                           progress: bool = False) -> Path:
    """Fit one decoder from a prepared file and a feature store; write the decoder file.

    Reads ``/rois/<roi>/train`` (single trials) with ``/train/ids`` and the repeat-averaged
    ``/rois/<roi>/test`` with ``/test/ids``; aligns rows to the feature store by 73k id; fits
    :func:`fit_ridge_cv`; predicts the test images and scores each target by Pearson r
    against the true test features. The feature rows needed are read once, in row blocks,
    as float32 (n_images x n_targets; ~2 GB for 9,000 images of c).

    Parameters
    ----------
    prepared_path : path
        ``prepared_subjXX.h5``.
    feature_store_path : path
        Feature store HDF5 (``features`` (n_images, *target_shape), ``ids`` sorted).
    roi : str
        ROI key of the prepared file (``"early"``, ``"ventral"``).
    target_name : str
        Name of the feature (``"z"``, ``"c"``), stored as an attribute.
    out_path : path
        Decoder file to write (atomically), usually ``decoders/subjXX_<target>_<roi>.h5``.
    config : DecoderConfig, optional
        ``alphas``, ``cv_folds`` and ``target_chunk`` are used; stored as JSON.
    backend : str
        himalaya backend name.
    dtype : str
    progress : bool

    Returns
    -------
    Path of the decoder file. Layout: ``alphas`` (n_targets,), ``coef`` (n_voxels, n_targets),
    ``x_mean``, ``x_std`` (n_voxels,), ``intercept`` (n_targets,), ``cv_score`` (n_targets,),
    ``test/ids``, ``test/pred`` (n_test, *target_shape), ``test/corr`` (n_targets,); attrs
    ``decoder_config`` (JSON), ``roi``, ``target``, ``subject``, ``target_shape``,
    ``mean_test_corr``, ``median_alpha``, ``fit_seconds``, sources and versions.
    """
    config = DecoderConfig() if config is None else config
    prepared_path, store_path, out_path = Path(prepared_path), Path(feature_store_path), Path(out_path)
    prep = _read_prepared(prepared_path, roi)
    if not store_path.is_file():
        raise MissingFileError(f"feature store not found: {store_path}")
    with h5py.File(store_path, "r") as f:
        for key in ("features", "ids"):
            if key not in f:
                raise DataFormatError(f"{store_path}: missing dataset /{key} (feature store layout)")
        ds = f["features"]
        store_ids = f["ids"][()].astype(np.int64)
        if len(store_ids) != ds.shape[0]:
            raise DataFormatError(f"{store_path}: /ids has {len(store_ids)} entries but /features has "
                                  f"{ds.shape[0]} rows; expected equal")
        if np.any(np.diff(store_ids) <= 0):
            raise DataFormatError(f"{store_path}: /ids must be strictly increasing 73k ids")
        target_shape = tuple(int(n) for n in ds.shape[1:])
        train_images, row_image = np.unique(prep["train_ids"], return_inverse=True)
        train_rows = _store_rows(store_path, store_ids, train_images, prepared_path, "training")
        test_rows = _store_rows(store_path, store_ids, prep["test_ids"], prepared_path, "test")
        if "done" in f:
            done = f["done"][()].astype(bool)
            if not (done[train_rows].all() and done[test_rows].all()):
                raise DataFormatError(f"{store_path}: field 'done' is False for some needed images; "
                                      "expected a complete feature store (finish `brain2image features`)")
        feature_attrs = {k: f.attrs[k] for k in ("feature", "model", "resolution", "seed")
                         if k in f.attrs}
        Y_train = _read_feature_rows(ds, train_rows)
        Y_test = _read_feature_rows(ds, test_rows)

    t0 = time.perf_counter()
    result = fit_ridge_cv(prep["X_train"], Y_train, row_image.ravel(), alphas=config.alphas,
                          n_folds=config.cv_folds, target_chunk=config.target_chunk,
                          backend=backend, dtype=dtype, progress=progress)
    fit_seconds = time.perf_counter() - t0
    del Y_train
    pred = predict_ridge(prep["X_test"], result["coef"], result["intercept"], result["x_mean"],
                         result["x_std"])
    corr = pearson_per_target(pred, Y_test)
    mean_corr = float(np.nanmean(corr)) if np.any(np.isfinite(corr)) else float("nan")
    logger.info("decoder %s from %s: %d train rows (%d images), %d voxels, %d targets, "
                "mean test r = %.3f, fit %.1f s", target_name, roi, len(row_image.ravel()),
                len(train_images), result["coef"].shape[0], result["coef"].shape[1], mean_corr,
                fit_seconds)

    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("alphas", data=result["alphas"])
        f.create_dataset("coef", data=result["coef"].astype(np.float32))
        f.create_dataset("x_mean", data=result["x_mean"])
        f.create_dataset("x_std", data=result["x_std"])
        f.create_dataset("intercept", data=result["intercept"].astype(np.float32))
        f.create_dataset("cv_score", data=result["cv_scores"])
        f.create_dataset("test/ids", data=prep["test_ids"])
        f.create_dataset("test/pred", data=pred.astype(np.float32).reshape((len(pred),) + target_shape))
        f.create_dataset("test/corr", data=corr)
        f.attrs.update({
            "decoder_config": config_to_json(config),
            "alpha_grid": result["alpha_grid"],
            "roi": roi,
            "target": target_name,
            "subject": prep["subject"],
            "target_shape": np.asarray(target_shape, dtype=np.int64),
            "n_train_rows": len(row_image.ravel()),
            "n_train_images": len(train_images),
            "mean_test_corr": mean_corr,
            "median_alpha": float(np.median(result["alphas"])),
            "fit_seconds": fit_seconds,
            "backend": backend if isinstance(backend, str) else backend.name,
            "dtype": dtype,
            "prepared_file": str(prepared_path.resolve()),
            "feature_store": str(store_path.resolve()),
            "feature_attrs": json.dumps({k: (v.item() if hasattr(v, "item") else str(v))
                                         for k, v in feature_attrs.items()}),
            "brain2image_version": __version__,
        })
    return out_path


@dataclass
class DecoderFile:
    """Contents of a decoder file (see :func:`fit_decoder_from_files`).

    ``coef``, ``intercept``, ``x_mean`` and ``x_std`` are loaded only with ``load_weights=True``.
    """

    path: Path
    test_ids: np.ndarray                  # (n_test,)
    test_pred: np.ndarray                 # (n_test, *target_shape)
    test_corr: np.ndarray                 # (n_targets,)
    alphas: np.ndarray                    # (n_targets,)
    cv_score: np.ndarray                  # (n_targets,)
    config: DecoderConfig
    attrs: dict[str, Any] = field(default_factory=dict)
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None

    def estimator(self) -> RidgeDecoder:
        """A fitted :class:`RidgeDecoder` (needs ``load_weights=True``)."""
        if self.coef is None:
            raise ValueError(f"{self.path}: loaded without weights; use load_decoder(..., load_weights=True)")
        dec = RidgeDecoder(alphas=self.config.alphas, cv_folds=self.config.cv_folds,
                           target_chunk=self.config.target_chunk)
        dec.coef_, dec.intercept_ = self.coef, self.intercept
        dec.x_mean_, dec.x_std_ = self.x_mean, self.x_std
        dec.alphas_, dec.cv_scores_ = self.alphas, self.cv_score
        dec.target_shape_ = tuple(int(n) for n in self.attrs["target_shape"])
        return dec


def load_decoder(path: str | Path, load_weights: bool = False) -> DecoderFile:
    """Read a decoder file written by :func:`fit_decoder_from_files`.

    Parameters
    ----------
    path : path
    load_weights : bool
        Also read ``coef`` (n_voxels, n_targets; large for c), ``intercept``, ``x_mean``, ``x_std``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"decoder file not found: {path}")
    with h5py.File(path, "r") as f:
        for key in ("alphas", "test/ids", "test/pred", "test/corr"):
            if key not in f:
                raise DataFormatError(f"{path}: missing dataset /{key} (decoder file layout)")
        if "decoder_config" not in f.attrs:
            raise DataFormatError(f"{path}: missing attribute 'decoder_config' (JSON DecoderConfig)")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        out = DecoderFile(
            path=path, test_ids=f["test/ids"][()], test_pred=f["test/pred"][()],
            test_corr=f["test/corr"][()], alphas=f["alphas"][()],
            cv_score=f["cv_score"][()] if "cv_score" in f else np.full(f["alphas"].shape, np.nan),
            config=config_from_dict(DecoderConfig, json.loads(attrs["decoder_config"])), attrs=attrs)
        if load_weights:
            out.coef, out.intercept = f["coef"][()], f["intercept"][()]
            out.x_mean, out.x_std = f["x_mean"][()], f["x_std"][()]
    return out
