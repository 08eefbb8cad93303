"""Low-level metrics of the MindEye / Brain-Diffuser table: PixCorr, SSIM, correlation distance.

Two-way identification lives in :mod:`brain2image.evaluation.identification` and applies to
any feature space (:func:`feature_identification` re-exports it here for the table).

Image size: the field compares images at 425 px (NSD's stimulus size). When the real images
are smaller (the simulated study's scenes are 64 px) the comparison is made at the real
images' size instead — upsampling both to 425 px adds no information and only smooths.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DataFormatError
from ..stats import paired_pearson
from .identification import two_way_identification

__all__ = [
    "DEFAULT_SIZE",
    "comparison_size",
    "resize_for_metrics",
    "pixcorr_per_item",
    "pixcorr",
    "ssim_per_item",
    "ssim",
    "feature_identification",
    "correlation_distance_per_item",
    "correlation_distance",
]

#: The size (pixels) at which the field computes PixCorr and SSIM.
DEFAULT_SIZE = 425


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataFormatError(f"{name}: expected shape (n_images, height, width, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise DataFormatError(f"{name}: expected dtype uint8, got {images.dtype}")
    return images


def comparison_size(real_images: np.ndarray, size: int = DEFAULT_SIZE) -> int:
    """The side at which images are compared: ``size``, or the real images' side when smaller."""
    real_images = _check_images(real_images, "real images")
    return int(min(size, *real_images.shape[1:3]))


def resize_for_metrics(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 images to ``size × size``, as float in [0, 1].

    The evaluation's resize (as in the field's metric code); the method's own LANCZOS resize
    of stimuli is :func:`brain2image.ldm.images.resize_images`.

    Parameters
    ----------
    images : array of shape (n_images, height, width, 3), uint8
    size : int

    Returns
    -------
    resized : array of shape (n_images, size, size, 3), float32
    """
    images = _check_images(images, "images")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(0, 1).permute(0, 2, 3, 1).numpy()


def _pairs(real: np.ndarray, recon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, recon = _check_images(real, "real images"), _check_images(recon, "reconstructions")
    if len(real) != len(recon):
        raise DataFormatError(f"{len(real)} real images but {len(recon)} reconstructions")
    return real, recon


def pixcorr_per_item(real_images: np.ndarray, recon_images: np.ndarray, size: int = DEFAULT_SIZE,
                     batch_size: int = 64) -> np.ndarray:
    """Pearson correlation over RGB pixels of each (real, reconstruction) pair.

    Parameters
    ----------
    real_images : array of shape (n_images, height, width, 3), uint8
    recon_images : array of shape (n_images, height', width', 3), uint8
    size : int
        Comparison size (see :func:`comparison_size`).
    batch_size : int
        Images resized at a time.

    Returns
    -------
    r : array of shape (n_images,), float64
    """
    real_images, recon_images = _pairs(real_images, recon_images)
    side = comparison_size(real_images, size)
    out = np.empty(len(real_images))
    for start in range(0, len(real_images), batch_size):
        stop = start + batch_size
        a = resize_for_metrics(real_images[start:stop], side).reshape(-1, side * side * 3)
        b = resize_for_metrics(recon_images[start:stop], side).reshape(-1, side * side * 3)
        out[start:stop] = paired_pearson(a, b)
    return out


def pixcorr(real_images: np.ndarray, recon_images: np.ndarray, size: int = DEFAULT_SIZE) -> float:
    """Mean PixCorr (see :func:`pixcorr_per_item`)."""
    return float(np.mean(pixcorr_per_item(real_images, recon_images, size)))


def ssim_per_item(real_images: np.ndarray, recon_images: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """SSIM of each pair on grey images, with the field's settings.

    Greyscale by :func:`skimage.color.rgb2gray`, then
    :func:`skimage.metrics.structural_similarity` with ``gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1``.

    Returns
    -------
    ssim : array of shape (n_images,), float64
    """
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    real_images, recon_images = _pairs(real_images, recon_images)
    side = comparison_size(real_images, size)
    out = np.empty(len(real_images))
    for i in range(len(real_images)):
        a = rgb2gray(resize_for_metrics(real_images[i:i + 1], side)[0]).astype(np.float64)
        b = rgb2gray(resize_for_metrics(recon_images[i:i + 1], side)[0]).astype(np.float64)
        out[i] = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1.0)
    return out


def ssim(real_images: np.ndarray, recon_images: np.ndarray, size: int = DEFAULT_SIZE) -> float:
    """Mean SSIM (see :func:`ssim_per_item`)."""
    return float(np.mean(ssim_per_item(real_images, recon_images, size)))


def feature_identification(real_features: np.ndarray, pred_features: np.ndarray) -> float:
    """Two-way identification (MindEye definition) in a feature space.

    Parameters
    ----------
    real_features, pred_features : arrays of shape (n_images, n_features)
    """
    return two_way_identification(real_features, pred_features)


def correlation_distance_per_item(real_features: np.ndarray, pred_features: np.ndarray) -> np.ndarray:
    """``1 - corr(real_i, pred_i)`` for each pair (scipy's ``correlation`` distance).

    Parameters
    ----------
    real_features, pred_features : arrays of shape (n_images, n_features)

    Returns
    -------
    distance : array of shape (n_images,), in [0, 2]
    """
    return 1.0 - paired_pearson(real_features, pred_features)


def correlation_distance(real_features: np.ndarray, pred_features: np.ndarray) -> float:
    """Mean correlation distance (the table's EffNet-B1 and SwAV columns; lower is better)."""
    return float(np.mean(correlation_distance_per_item(real_features, pred_features)))
