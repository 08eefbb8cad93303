"""Ridge maps from a new subject's voxels to a reference subject's, and their composition with a decoder.

Every map here is affine, so a chain of them is one linear decoder of the new subject's raw betas:
``pred = x @ coef + intercept`` (:class:`RawDecoder`). An alignment map ``A`` (fitted on
standardised new voxels, alpha per reference voxel by cross-validation over images) followed by a
reference decoder ``W`` (fitted on the reference's standardised voxels) composes to
``coef = (A / s_new[:, None] / s_ref) @ W`` and an intercept; the references' decoders combine as a
weighted mean of theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import DecoderConfig
from ..ridge import BackendLike, ImageRidgeCV

__all__ = ["AlignmentMap", "RawDecoder", "fit_alignment", "compose", "combine", "from_standardised"]

#: Target columns composed at a time (bounds the memory of ``M @ W`` to the output plus one block).
COMPOSE_CHUNK = 8192


@dataclass(frozen=True)
class RawDecoder:
    """An affine decoder of raw betas: ``x @ coef + intercept`` (coef: (n_voxels, n_targets))."""

    coef: np.ndarray
    intercept: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of shape (n_rows, n_targets), float32."""
        return (np.asarray(X, np.float32) @ self.coef + self.intercept).astype(np.float32, copy=False)


@dataclass(frozen=True)
class AlignmentMap:
    """A fitted ridge map from the new subject's voxels to a reference's.

    Attributes
    ----------
    coef : ndarray (n_new_voxels, n_ref_voxels)
        On standardised new voxels (``x_mean``, ``x_std``).
    intercept : ndarray (n_ref_voxels,)
    x_mean, x_std : ndarray (n_new_voxels,)
    cv_r2 : float
        Mean over reference voxels of the pooled cross-validated R^2 at each voxel's alpha.
    median_alpha : float
    n_images : int
        Images the map was fitted on.
    """

    coef: np.ndarray
    intercept: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    cv_r2: float
    median_alpha: float
    n_images: int


def fit_alignment(X_new: np.ndarray, X_ref: np.ndarray, config: DecoderConfig, *, backend: BackendLike,
                  progress: bool = False) -> AlignmentMap:
    """Ridge from the new subject's image-averaged voxels to the reference's (same images, same order).

    Parameters
    ----------
    X_new : ndarray (n_images, n_new_voxels)
    X_ref : ndarray (n_images, n_ref_voxels)
    config : DecoderConfig
        ``alphas``, ``cv_folds`` (over images), ``target_chunk``, ``ridge_dtype``.
    backend : str or module
        himalaya backend (resolved).
    progress : bool
    """
    folds = max(2, min(config.cv_folds, len(X_new)))
    ridge = ImageRidgeCV(alphas=config.alphas, n_folds=folds, target_chunk=config.target_chunk, backend=backend,
                         dtype=config.ridge_dtype, progress=progress)
    ridge.fit(np.asarray(X_new, np.float32), np.asarray(X_ref, np.float32))
    scores = np.asarray(ridge.cv_scores_, np.float64)
    return AlignmentMap(coef=np.asarray(ridge.coef_, np.float64), intercept=np.asarray(ridge.intercept_, np.float64),
                        x_mean=np.asarray(ridge.x_mean_, np.float64), x_std=np.asarray(ridge.x_std_, np.float64),
                        cv_r2=float(np.nanmean(scores)) if np.any(np.isfinite(scores)) else float("nan"),
                        median_alpha=float(np.median(ridge.alphas_)), n_images=len(X_new))


def from_standardised(coef: np.ndarray, intercept: np.ndarray, x_mean: np.ndarray, x_std: np.ndarray) -> RawDecoder:
    """A decoder fitted on standardised voxels (``((x - x_mean) / x_std) @ coef + intercept``) on raw betas."""
    coef = np.asarray(coef, np.float64) / np.asarray(x_std, np.float64)[:, None]
    return RawDecoder(coef.astype(np.float32),
                      (np.asarray(intercept, np.float64) - np.asarray(x_mean, np.float64) @ coef).astype(np.float32))


def compose(alignment: AlignmentMap, ref_coef: np.ndarray, ref_intercept: np.ndarray, ref_mean: np.ndarray,
            ref_std: np.ndarray, *, weight: float = 1.0, into: RawDecoder | None = None) -> RawDecoder:
    """The reference decoder applied to the alignment map's output, as one decoder of the new subject's raw betas.

    Parameters
    ----------
    alignment : AlignmentMap
    ref_coef : ndarray (n_ref_voxels, n_targets)
    ref_intercept : ndarray (n_targets,)
    ref_mean, ref_std : ndarray (n_ref_voxels,)
        The reference decoder's voxel standardisation.
    weight : float
        Factor on the composed decoder.
    into : RawDecoder, optional
        Add ``weight`` times the composed decoder to this one, in place (its ``coef`` float32, its
        ``intercept`` float64), and return it: a weighted sum of references then holds one output
        in memory. Default: a new decoder.
    """
    ref_std = np.asarray(ref_std, np.float64)
    scaled = alignment.coef / ref_std[None, :]                       # new std voxels -> ref std voxels
    offset = (alignment.intercept - np.asarray(ref_mean, np.float64)) / ref_std
    offset -= (alignment.x_mean / alignment.x_std) @ scaled          # raw new voxels from here on
    M = weight * scaled / alignment.x_std[:, None]
    n_targets = ref_coef.shape[1]
    if into is None:
        into = RawDecoder(np.zeros((M.shape[0], n_targets), np.float32), np.zeros(n_targets, np.float64))
    M32 = M.astype(np.float32)  # the product in float32: twice the speed, sums of float32 weights anyway
    for start in range(0, n_targets, COMPOSE_CHUNK):
        block = np.asarray(ref_coef[:, start:start + COMPOSE_CHUNK], np.float32)
        into.coef[:, start:start + COMPOSE_CHUNK] += M32 @ block
        into.intercept[start:start + COMPOSE_CHUNK] += weight * (offset @ block.astype(np.float64))
    into.intercept[...] += weight * np.asarray(ref_intercept, np.float64)
    return into


def combine(decoders: Sequence[RawDecoder], weights: Sequence[float] | np.ndarray | None = None) -> RawDecoder:
    """The weighted mean of decoders of the same voxels and targets (equal weights by default)."""
    w = np.ones(len(decoders)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    coef = np.zeros_like(decoders[0].coef, dtype=np.float32)
    intercept = np.zeros(decoders[0].intercept.shape, np.float64)
    for weight, decoder in zip(w, decoders):
        coef += np.float32(weight) * decoder.coef
        intercept += weight * np.asarray(decoder.intercept, np.float64)
    return RawDecoder(coef, intercept.astype(np.float32))
