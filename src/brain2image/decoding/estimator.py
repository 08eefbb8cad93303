"""The decoder estimator: ridge from ROI voxels to one latent-diffusion feature (z or c).

A thin wrapper of :class:`brain2image.ridge.ImageRidgeCV` (per-target alpha by K-fold CV
grouped by image, voxels standardised, intercept fitted, repeated trials never materialised)
that accepts targets of any shape per image, ``(n_images, *target_shape)``, and predicts in
that shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidArgumentError
from ..ridge import DEFAULT_ALPHAS, DEFAULT_TARGET_CHUNK, BackendLike, ImageRidgeCV, predict_ridge

if TYPE_CHECKING:
    from ..formats.decoder_file import DecoderFile

__all__ = ["RidgeDecoder"]


class RidgeDecoder:
    """Ridge decoder (sklearn-style) with per-target alpha chosen by grouped K-fold CV.

    Parameters
    ----------
    alphas : sequence of float
        Regularisation grid after voxel standardisation (see
        :func:`brain2image.ridge.fit_ridge_cv`); a single value is fitted without CV.
    cv_folds : int
    target_chunk : int
        Targets solved at a time.
    backend : str or module
        himalaya backend (``"numpy"``, ``"torch"``, ``"torch_cuda"``), used explicitly.
    dtype : {"float32", "float64"}
    progress : bool

    Attributes
    ----------
    coef_ : ndarray of shape (n_voxels, n_targets)
    intercept_ : ndarray of shape (n_targets,)
    alphas_ : ndarray of shape (n_targets,)
    x_mean_, x_std_ : ndarrays of shape (n_voxels,)
    cv_scores_ : ndarray of shape (n_targets,)
    target_shape_ : tuple of int
        Shape of one image's targets (``Y.shape[1:]`` at fit time).
    """

    def __init__(self, alphas: Any = DEFAULT_ALPHAS, cv_folds: int = 5, target_chunk: int = DEFAULT_TARGET_CHUNK,
                 backend: BackendLike = "numpy", dtype: str = "float32", progress: bool = False) -> None:
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
        ridge = ImageRidgeCV(alphas=self.alphas, n_folds=self.cv_folds, target_chunk=self.target_chunk,
                             backend=self.backend, dtype=self.dtype, progress=self.progress)
        ridge.fit(X, Y.reshape(len(Y), -1), row_image, groups)
        self.target_shape_ = tuple(Y.shape[1:])
        self.coef_, self.intercept_, self.alphas_ = ridge.coef_, ridge.intercept_, ridge.alphas_
        self.x_mean_, self.x_std_, self.cv_scores_ = ridge.x_mean_, ridge.x_std_, ridge.cv_scores_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets, ndarray of shape (n_rows, *target_shape)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("RidgeDecoder is not fitted; call fit first")
        pred = predict_ridge(X, self.coef_, self.intercept_, self.x_mean_, self.x_std_)
        return pred.reshape((len(pred),) + self.target_shape_)

    @classmethod
    def from_decoder_file(cls, decoder: DecoderFile) -> RidgeDecoder:
        """The fitted decoder stored in a decoder file read with ``load_weights=True``.

        Parameters
        ----------
        decoder : DecoderFile

        Returns
        -------
        RidgeDecoder
        """
        coef, intercept, x_mean, x_std = decoder.coef, decoder.intercept, decoder.x_mean, decoder.x_std
        if coef is None or intercept is None or x_mean is None or x_std is None:
            raise InvalidArgumentError(f"{decoder.path}: decoder file read without weights (field 'coef'); "
                                       "expected DecoderFile.read(..., load_weights=True)")
        config = decoder.config
        out = cls(alphas=config.alphas, cv_folds=config.cv_folds, target_chunk=config.target_chunk)
        out.coef_, out.intercept_, out.x_mean_, out.x_std_ = coef, intercept, x_mean, x_std
        out.alphas_, out.cv_scores_ = decoder.alphas, decoder.cv_score
        out.target_shape_ = decoder.target_shape
        return out
