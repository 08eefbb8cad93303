"""Noise ceiling from NSD's ncsnr, and accuracy as a fraction of it.

NSD's formula (Allen et al. 2022): for responses averaged over ``n`` trials,
``NC = 100 * ncsnr**2 / (ncsnr**2 + 1/n)`` (percent of variance explainable). When images
have different numbers of repetitions, ``1/n`` is replaced by the mean of ``1/n_k`` over
the test images (NSD's ``(A/3 + B/2 + C/1) / (A + B + C)``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["noise_ceiling", "signed_r2", "nc_fraction"]


def noise_ceiling(ncsnr: np.ndarray, n_trials: float | np.ndarray = 3) -> np.ndarray:
    """Noise ceiling in percent of variance for trial-averaged responses.

    Parameters
    ----------
    ncsnr : array of shape (n_voxels,)
        Noise-ceiling SNR of each voxel (``/rois/<key>/ncsnr`` of the prepared file).
    n_trials : float or array of shape (n_images,)
        Trials averaged per test image (3 for NSD test averages); an array gives each
        test image's repetition count and uses the mean of ``1 / n``.

    Returns
    -------
    array of shape (n_voxels,), float64 in [0, 100]
    """
    ncsnr = np.asarray(ncsnr, dtype=np.float64)
    n = np.asarray(n_trials, dtype=np.float64)
    if np.any(n <= 0):
        raise ValueError(f"n_trials must be positive, got {n_trials!r}")
    inv_n = float(np.mean(1.0 / n))
    snr2 = ncsnr**2
    return 100.0 * snr2 / (snr2 + inv_n)


def signed_r2(r: np.ndarray) -> np.ndarray:
    """Signed explained variance ``r * |r|`` (keeps below-chance voxels negative).

    Parameters
    ----------
    r : array of shape (n_voxels,)

    Returns
    -------
    array of shape (n_voxels,)
    """
    r = np.asarray(r, dtype=np.float64)
    return r * np.abs(r)


def nc_fraction(r: np.ndarray, nc_percent: np.ndarray) -> np.ndarray:
    """Accuracy as a fraction of the noise ceiling: ``signed_r2(r) / (NC / 100)``.

    Voxels with a zero ceiling get NaN.

    Parameters
    ----------
    r : array of shape (n_voxels,)
    nc_percent : array of shape (n_voxels,)
        Output of :func:`noise_ceiling`.

    Returns
    -------
    array of shape (n_voxels,)
    """
    nc = np.asarray(nc_percent, dtype=np.float64) / 100.0
    out = np.full(nc.shape, np.nan)
    ok = nc > 0
    out[ok] = signed_r2(r)[ok] / nc[ok]
    return out
