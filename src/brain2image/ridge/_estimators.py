"""sklearn-style estimators over the ridge core (:mod:`brain2image.ridge._solvers`).

``__init__`` only stores its arguments; ``fit`` validates them, calls the solver functions
and stores the learned state in attributes ending in ``_``; ``predict`` applies
:func:`~brain2image.ridge._solvers.predict_ridge`. Targets may have any shape per image,
``(n_images, *target_shape)``: they are fitted flattened and predicted in that shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._solvers import DEFAULT_ALPHAS, DEFAULT_TARGET_CHUNK, RidgeResult, fit_ridge, fit_ridge_cv, predict_ridge
from .backend import BackendLike

__all__ = ["ImageRidge", "ImageRidgeCV"]


def _flat_targets(Y_unique: Any) -> tuple[Any, tuple[int, ...]]:
    """``Y_unique`` as (n_images, n_targets), and one image's target shape.

    Two-dimensional targets pass as given (any array-like sliceable as ``Y[:, a:b]``).
    """
    shape = tuple(int(n) for n in np.shape(Y_unique)[1:])
    if len(shape) == 1:
        return Y_unique, shape
    Y_unique = np.asarray(Y_unique)
    return Y_unique.reshape(len(Y_unique), -1), shape


class _FittedRidge:
    """Learned state and prediction shared by the estimators."""

    coef_: np.ndarray
    intercept_: np.ndarray
    alphas_: np.ndarray
    x_mean_: np.ndarray
    x_std_: np.ndarray
    n_features_in_: int
    target_shape_: tuple[int, ...]

    def _store(self, result: RidgeResult, target_shape: tuple[int, ...]) -> None:
        self.coef_ = result["coef"]
        self.intercept_ = result["intercept"]
        self.alphas_ = result["alphas"]
        self.x_mean_ = result["x_mean"]
        self.x_std_ = result["x_std"]
        self.n_features_in_ = int(self.coef_.shape[0])
        self.target_shape_ = target_shape

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows, *target_shape_) (``(n_rows, n_targets)`` for targets fitted as a matrix)
        """
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit first")
        pred = predict_ridge(X, self.coef_, self.intercept_, self.x_mean_, self.x_std_,
                             getattr(self, "target_chunk", None))
        return pred.reshape((len(pred),) + self.target_shape_)


class ImageRidge(_FittedRidge):
    """Ridge with a fixed alpha on single-trial rows whose targets are given once per image.

    Parameters
    ----------
    alpha : float or array of shape (n_targets,)
        Penalty after feature standardisation.
    target_chunk : int or None
        Targets solved at a time (``None``: all).
    backend : str or module
        himalaya backend, used explicitly.
    dtype : {"float32", "float64"}
    solver : {"eigh", "svd"}
    progress : bool

    Attributes
    ----------
    coef_ : ndarray of shape (n_features, n_targets)
    intercept_ : ndarray of shape (n_targets,)
    alphas_ : ndarray of shape (n_targets,)
    x_mean_, x_std_ : ndarrays of shape (n_features,)
    n_features_in_ : int
    target_shape_ : tuple of int
        Shape of one image's targets (``Y_unique.shape[1:]`` at fit time).
    """

    def __init__(self, alpha: float | np.ndarray = 1.0, target_chunk: int | None = DEFAULT_TARGET_CHUNK,
                 backend: BackendLike = "numpy", dtype: str = "float32", solver: str = "eigh",
                 progress: bool = False) -> None:
        self.alpha = alpha
        self.target_chunk = target_chunk
        self.backend = backend
        self.dtype = dtype
        self.solver = solver
        self.progress = progress

    def fit(self, X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None = None) -> ImageRidge:
        """Fit on rows ``X`` (n_rows, n_features) and targets ``Y_unique`` (n_images, *target_shape).

        ``row_image`` (n_rows,) maps rows to images (default: one row per image).
        """
        Y_flat, target_shape = _flat_targets(Y_unique)
        self._store(fit_ridge(X, Y_flat, row_image, alpha=self.alpha, target_chunk=self.target_chunk,
                              backend=self.backend, dtype=self.dtype, solver=self.solver,
                              progress=self.progress), target_shape)
        return self


class ImageRidgeCV(_FittedRidge):
    """Ridge with per-target alpha chosen by K-fold cross-validation grouped by image.

    Parameters
    ----------
    alphas : sequence of float
        Grid after feature standardisation; a single value is fitted without CV.
    n_folds : int
    target_chunk : int or None
    backend : str or module
        himalaya backend, used explicitly.
    dtype : {"float32", "float64"}
    solver : {"eigh", "svd"}
    progress : bool
    one_block_shortcut : bool
        Let a fit whose targets are one chunk use the cheaper product order
        (:func:`~brain2image.ridge.fit_ridge_cv`); ``False`` for a part of a larger fit.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features, n_targets)
    intercept_ : ndarray of shape (n_targets,)
    alphas_ : ndarray of shape (n_targets,)
        Chosen alpha of each target.
    x_mean_, x_std_ : ndarrays of shape (n_features,)
    cv_scores_ : ndarray of shape (n_targets,)
        Pooled validation R^2 at the chosen alpha.
    cv_scores_grid_ : ndarray of shape (n_alphas, n_targets)
    alpha_grid_ : ndarray of shape (n_alphas,)
    n_features_in_ : int
    target_shape_ : tuple of int
        Shape of one image's targets (``Y_unique.shape[1:]`` at fit time).
    """

    def __init__(self, alphas: Any = DEFAULT_ALPHAS, n_folds: int = 5,
                 target_chunk: int | None = DEFAULT_TARGET_CHUNK, backend: BackendLike = "numpy",
                 dtype: str = "float32", solver: str = "eigh", progress: bool = False,
                 one_block_shortcut: bool = True) -> None:
        self.alphas = alphas
        self.n_folds = n_folds
        self.one_block_shortcut = one_block_shortcut
        self.target_chunk = target_chunk
        self.backend = backend
        self.dtype = dtype
        self.solver = solver
        self.progress = progress

    def fit(self, X: np.ndarray, Y_unique: Any, row_image: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> ImageRidgeCV:
        """Fit on rows ``X`` (n_rows, n_features) and targets ``Y_unique`` (n_images, *target_shape).

        ``row_image`` (n_rows,) maps rows to images (default: one row per image); ``groups``
        (n_rows,) overrides the CV groups (default ``row_image``).
        """
        Y_flat, target_shape = _flat_targets(Y_unique)
        result = fit_ridge_cv(X, Y_flat, row_image, alphas=self.alphas, n_folds=self.n_folds,
                              groups=groups, target_chunk=self.target_chunk, backend=self.backend,
                              dtype=self.dtype, solver=self.solver, progress=self.progress,
                              one_block_shortcut=self.one_block_shortcut)
        self._store(result, target_shape)
        self.cv_scores_ = result["cv_scores"]
        self.cv_scores_grid_ = result["cv_scores_grid"]
        self.alpha_grid_ = result["alpha_grid"]
        return self

    @classmethod
    def from_fitted(cls, result: RidgeResult, target_shape: tuple[int, ...] | None = None,
                    **params: Any) -> ImageRidgeCV:
        """A fitted estimator from stored weights (a decoder file's), without fitting.

        Parameters
        ----------
        result : RidgeResult
            ``coef``, ``intercept``, ``alphas``, ``x_mean``, ``x_std`` and ``cv_scores`` (``None``
            when not stored); the grid keys are optional.
        target_shape : tuple of int, optional
            One image's target shape (default: ``(n_targets,)``).
        **params
            Constructor arguments (``alphas``, ``n_folds``, ``target_chunk``, ...).

        Returns
        -------
        ImageRidgeCV
        """
        out = cls(**params)
        out._store(result, tuple(target_shape) if target_shape is not None else (int(result["coef"].shape[1]),))
        out.cv_scores_ = result["cv_scores"]
        for key in ("cv_scores_grid", "alpha_grid"):
            if key in result:
                setattr(out, f"{key}_", result[key])
        return out
