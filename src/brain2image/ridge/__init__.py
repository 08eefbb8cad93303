"""One ridge core for the decoders and the encoding models.

- :mod:`~brain2image.ridge._solvers` — pure functions: reduction of repeated trials to unique
  images, folds grouped by image, target chunks, decomposition, per-chunk solve,
  cross-validation over an alpha grid, refit (:func:`fit_ridge`, :func:`fit_ridge_cv`).
- :mod:`~brain2image.ridge.backend` — himalaya backends resolved by name and passed explicitly.
- :mod:`~brain2image.ridge._estimators` — sklearn-style :class:`ImageRidge`, :class:`ImageRidgeCV`.
"""

from ._estimators import ImageRidge, ImageRidgeCV
from ._solvers import (
    DEFAULT_ALPHAS,
    DEFAULT_TARGET_CHUNK,
    SOLVERS,
    Decomposition,
    RepeatedRows,
    RidgeResult,
    check_alphas,
    check_rows,
    check_target_chunk,
    cv_errors,
    decompose,
    fit_ridge,
    fit_ridge_cv,
    grouped_folds,
    predict_ridge,
    refit,
    repeated_rows,
    select_alphas,
    solve_chunk,
    standardize,
    standardize_stats,
    target_slices,
)
from .backend import BACKENDS, BackendLike, backend_name, get_backend, himalaya_backend

__all__ = [
    "ImageRidge",
    "ImageRidgeCV",
    "DEFAULT_ALPHAS",
    "DEFAULT_TARGET_CHUNK",
    "SOLVERS",
    "Decomposition",
    "RepeatedRows",
    "RidgeResult",
    "check_alphas",
    "check_rows",
    "check_target_chunk",
    "cv_errors",
    "decompose",
    "fit_ridge",
    "fit_ridge_cv",
    "grouped_folds",
    "predict_ridge",
    "refit",
    "repeated_rows",
    "select_alphas",
    "solve_chunk",
    "standardize",
    "standardize_stats",
    "target_slices",
    "BACKENDS",
    "BackendLike",
    "backend_name",
    "get_backend",
    "himalaya_backend",
]
