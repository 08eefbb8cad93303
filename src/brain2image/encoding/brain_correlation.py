"""Brain correlation (MindEye2, arXiv 2403.11207): how brain-like the responses to an image are.

An image's features go through the subject's encoding model (:class:`~brain2image.formats.
encoding_results.EncodingModel`); the predicted voxel responses are correlated (Pearson, across
the voxels of an ROI) with the measured response to the image the subject saw, then averaged over
images and samples. The seen images' own features give the reference ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import DataFormatError
from ..formats.encoding_results import EncodingModel
from ..stats import paired_pearson

__all__ = ["predict_responses", "roi_correlations", "brain_correlation"]


def predict_responses(model: EncodingModel, features: np.ndarray) -> np.ndarray:
    """Voxel responses the encoding model predicts for each image.

    Parameters
    ----------
    model : EncodingModel
    features : array of shape (n_images, *model.feature_shape)

    Returns
    -------
    array of shape (n_images, n_voxels), float32
    """
    features = np.asarray(features)
    if tuple(features.shape[1:]) != tuple(model.feature_shape):
        raise DataFormatError(f"features have shape {features.shape[1:]} per image; the encoding model expects "
                              f"{tuple(model.feature_shape)} (features computed with other settings or model)")
    x = (features.reshape(len(features), -1).astype(np.float64) - model.feature_mean) / model.feature_scale
    return x.astype(np.float32) @ model.weights + model.intercept


def roi_correlations(predicted: np.ndarray, measured: np.ndarray,
                     masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pearson r across each ROI's voxels between each predicted row and its measured row.

    Parameters
    ----------
    predicted, measured : arrays of shape (n_rows, n_voxels)
        Row ``i`` of both belongs to one image (and sample).
    masks : mapping name -> bool array of shape (n_voxels,)

    Returns
    -------
    dict name -> array of shape (n_rows,), float64
        ``r`` per row (0 for a constant row); all NaN for an ROI of fewer than 2 voxels.
    """
    predicted, measured = np.asarray(predicted), np.asarray(measured)
    if predicted.shape != measured.shape:
        raise DataFormatError(f"predicted responses have shape {predicted.shape}, measured {measured.shape}; "
                              "expected one measured row per predicted row")
    out = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (predicted.shape[1],):
            raise DataFormatError(f"ROI mask {name!r} has shape {mask.shape}; expected ({predicted.shape[1]},)")
        if mask.sum() < 2:
            out[name] = np.full(len(predicted), np.nan)
        else:
            out[name] = paired_pearson(predicted[:, mask], measured[:, mask])
    return out


def brain_correlation(model: EncodingModel, features: np.ndarray, measured: np.ndarray,
                      masks: Mapping[str, np.ndarray], *, chunk: int = 256) -> dict[str, float | None]:
    """Mean brain correlation per ROI of images (and samples) with the responses to the seen images.

    Parameters
    ----------
    model : EncodingModel
    features : array of shape (n_images, n_samples, *model.feature_shape)
        Features of each sample of each image (``n_samples`` 1 for the seen images).
    measured : array of shape (n_images, n_voxels)
        Measured response to each seen image (test trials averaged).
    masks : mapping name -> bool array of shape (n_voxels,)
    chunk : int
        Rows (image samples) predicted at a time (bounds memory to ``chunk * n_voxels``).

    Returns
    -------
    dict name -> float or None
        Mean r over images and samples; ``None`` for an ROI of fewer than 2 voxels or no images.
    """
    features, measured = np.asarray(features), np.asarray(measured, dtype=np.float32)
    n_images, n_samples = features.shape[:2]
    if measured.shape != (n_images, model.n_voxels):
        raise DataFormatError(f"measured responses have shape {measured.shape}; expected ({n_images}, "
                              f"{model.n_voxels}) (one row per image, the encoding model's voxels)")
    rows = features.reshape(n_images * n_samples, *features.shape[2:])
    targets = np.repeat(measured, n_samples, axis=0)
    values: dict[str, list[np.ndarray]] = {name: [] for name in masks}
    for start in range(0, len(rows), chunk):
        stop = start + chunk
        for name, r in roi_correlations(predict_responses(model, rows[start:stop]), targets[start:stop],
                                        masks).items():
            values[name].append(r)
    out: dict[str, float | None] = {}
    for name, parts in values.items():
        r = np.concatenate(parts) if parts else np.zeros(0)
        out[name] = None if len(r) == 0 or np.isnan(r).all() else float(np.mean(r))
    return out
