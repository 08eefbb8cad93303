"""Reliability of single-trial betas from repeated images: NSD's ncsnr and noise ceiling.

NSD's definition (Allen et al. 2022): z-score each voxel's betas within each session; the noise
variance is the mean, over images shown at least twice, of the variance (ddof 1) across that image's
repeats; ``sigma_signal = sqrt(max(0, 1 - noise_var))`` and ``ncsnr = sigma_signal / sigma_noise``.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError
from ..stats import zscore_rows

__all__ = ["ncsnr_from_repeats", "noise_ceiling", "repeat_noise_variance"]

#: Voxels are processed in chunks of about this many float64 elements of betas.
_CHUNK_ELEMENTS = 1 << 23


def ncsnr_from_repeats(betas: np.ndarray, image_ids: np.ndarray, sessions: np.ndarray, *,
                       where: str = "the betas") -> np.ndarray:
    """NSD's noise-ceiling SNR of each voxel from repeated presentations.

    Parameters
    ----------
    betas : array of shape (n_trials, n_voxels)
        Single-trial betas.
    image_ids : array of shape (n_trials,)
        Image shown on each trial.
    sessions : array of shape (n_trials,)
        Session of each trial (betas are z-scored per voxel within each session).
    where : str
        Names the data in error messages.

    Returns
    -------
    array of shape (n_voxels,), float32
        ncsnr; 0 where the repeats vary as much as the betas (or a voxel is constant).
    """
    betas = np.asarray(betas)
    image_ids, sessions = np.asarray(image_ids), np.asarray(sessions)
    if betas.ndim != 2 or image_ids.shape != (betas.shape[0],) or sessions.shape != (betas.shape[0],):
        raise InvalidArgumentError(f"{where}: betas of shape {betas.shape} need image_ids and sessions of shape "
                                   f"({betas.shape[0] if betas.ndim else '?'},), got {image_ids.shape} and "
                                   f"{sessions.shape}; give one image id and one session per trial")
    _, image_index, counts = np.unique(image_ids, return_inverse=True, return_counts=True)
    if not np.any(counts >= 2):
        raise InvalidArgumentError(f"{where}: no image is shown more than once, so ncsnr cannot be estimated; "
                                   f"repeat some images or select ROIs by mask")
    out = np.empty(betas.shape[1], dtype=np.float32)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, betas.shape[0]))
    for start in range(0, betas.shape[1], chunk):
        block = np.asarray(betas[:, start:start + chunk], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise DataFormatError(f"{where}: betas have NaN or infinite values (voxel "
                                  f"{start + int(np.argwhere(~np.isfinite(block))[0, 1])}); mask those voxels out")
        noise = repeat_noise_variance(_zscore_by_session(block, sessions), image_index, counts)
        signal = np.sqrt(np.maximum(0.0, 1.0 - noise))
        out[start:start + chunk] = np.divide(signal, np.sqrt(noise), out=np.zeros_like(noise), where=noise > 0)
    return out


def _zscore_by_session(block: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """Z-score each column within each session (population sd; constant columns become 0)."""
    z = np.empty_like(block)
    for session in np.unique(sessions):
        rows = sessions == session
        z[rows] = zscore_rows(block[rows].T).T
    return z


def repeat_noise_variance(z: np.ndarray, image_index: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over repeated images of the variance (ddof 1) across each image's repeats.

    Parameters
    ----------
    z : array of shape (n_trials, n_voxels)
        Betas z-scored within sessions.
    image_index : array of shape (n_trials,)
        Index of each trial's image in ``counts``.
    counts : array of shape (n_images,)
        Trials per image.

    Returns
    -------
    array of shape (n_voxels,), float64
    """
    order = np.argsort(image_index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    grouped = z[order]
    means = np.add.reduceat(grouped, starts, axis=0) / counts[:, None]
    squares = np.add.reduceat((grouped - np.repeat(means, counts, axis=0)) ** 2, starts, axis=0)
    repeated = counts >= 2
    return (squares[repeated] / (counts[repeated, None] - 1)).mean(axis=0)


def noise_ceiling(ncsnr: np.ndarray, n_averaged: float | np.ndarray) -> np.ndarray:
    """Noise ceiling (percent of variance) of responses averaged over ``n`` trials: ``100 s² / (s² + 1/n)``.

    The formula is the encoding analysis' (:func:`brain2image.encoding.noise_ceiling.noise_ceiling`),
    imported when called so that this package does not load the encoding models.

    Parameters
    ----------
    ncsnr : array of shape (n_voxels,)
    n_averaged : float or array of shape (n_images,)
        Trials averaged; an array gives each image's count and uses the mean of ``1 / n``.

    Returns
    -------
    array of shape (n_voxels,), float64 in [0, 100]
    """
    from ..encoding.noise_ceiling import noise_ceiling as encoding_noise_ceiling

    if np.any(np.asarray(n_averaged, dtype=np.float64) <= 0):
        raise InvalidArgumentError(f"noise_ceiling: n_averaged must be positive, got {n_averaged!r}")
    return encoding_noise_ceiling(ncsnr, n_averaged)
