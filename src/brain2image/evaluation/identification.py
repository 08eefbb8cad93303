"""Two-way identification, in the two definitions the field uses (named apart).

Both start from Pearson correlations between the features of real images and of
reconstructions, computed for all pairs at once by :func:`brain2image.stats.pearson_matrix`
(one matrix product of row-z-scored features, float64, chunked over rows).

- :func:`two_way_identification` — MindEye / Brain-Diffuser (one reconstruction per image):
  ``r[i, j] = corr(real_i, pred_j)``; for each prediction j the share of real images i ≠ j
  with ``r[i, j] < r[j, j]``; mean over j.
- :func:`takagi_identification` — Takagi & Nishimoto (K samples per image):
  ``m[i, j] = mean_k corr(g_i, s_j^k)``; accuracy_i = mean over j ≠ i of
  ``[m[i, i] > m[i, j]]``; mean over i.

Rows with zero variance (a constant image or feature vector) are given z-scores of 0, so
their correlation with everything is 0 rather than NaN.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataFormatError
from ..stats import DEFAULT_ROW_CHUNK, pearson_matrix

__all__ = [
    "two_way_identification",
    "two_way_identification_per_item",
    "two_way_from_corr",
    "takagi_identification",
    "takagi_identification_per_item",
    "takagi_from_mean_corr",
    "mean_sample_corr",
]

#: Rows of the second operand z-scored (in float64) at a time by :func:`~brain2image.stats.pearson_matrix`.
DEFAULT_CHUNK = DEFAULT_ROW_CHUNK


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataFormatError(f"{name}: expected an array of shape (n_items, n_features), got {x.shape}")
    return x


def two_way_from_corr(r: np.ndarray) -> np.ndarray:
    """Per-prediction MindEye two-way identification from a correlation matrix.

    Parameters
    ----------
    r : array of shape (n_items, n_items)
        ``r[i, j] = corr(real_i, pred_j)``.

    Returns
    -------
    accuracy : array of shape (n_items,)
        For each prediction j, the share of i ≠ j with ``r[i, j] < r[j, j]``.
    """
    n = r.shape[0]
    if r.shape != (n, n) or n < 2:
        raise DataFormatError(f"two-way identification needs a square matrix with n ≥ 2, got {r.shape}")
    # The diagonal never counts: r[j, j] < r[j, j] is False.
    return np.sum(r < np.diag(r)[None, :], axis=0) / (n - 1)


def _check_pairs(real: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, pred = _as_2d(real, "real features"), _as_2d(pred, "predicted features")
    if real.shape != pred.shape:
        raise DataFormatError(
            f"two-way identification: real features {real.shape} and predicted features "
            f"{pred.shape} must have the same shape (n_items, n_features)")
    return real, pred


def two_way_identification_per_item(real_features: np.ndarray, pred_features: np.ndarray,
                                    chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """MindEye / Brain-Diffuser two-way identification of each prediction.

    Parameters
    ----------
    real_features : array of shape (n_items, n_features)
    pred_features : array of shape (n_items, n_features)
        Row j is the reconstruction of real image j.

    Returns
    -------
    accuracy : array of shape (n_items,), in [0, 1]
    """
    real, pred = _check_pairs(real_features, pred_features)
    return two_way_from_corr(pearson_matrix(real, pred, chunk_size))


def two_way_identification(real_features: np.ndarray, pred_features: np.ndarray,
                           chunk_size: int = DEFAULT_CHUNK) -> float:
    """MindEye / Brain-Diffuser two-way identification (mean of the per-item accuracies).

    See :func:`two_way_identification_per_item`. Chance is 0.5, perfect 1.0.
    """
    return float(np.mean(two_way_identification_per_item(real_features, pred_features, chunk_size)))


def takagi_from_mean_corr(mean_r: np.ndarray) -> np.ndarray:
    """Per-image Takagi identification from sample-averaged correlations.

    Parameters
    ----------
    mean_r : array of shape (n_items, n_items)
        ``mean_r[i, j] = mean_k corr(g_i, s_j^k)``.

    Returns
    -------
    accuracy : array of shape (n_items,)
        For each ground truth i, the share of j ≠ i with ``mean_r[i, i] > mean_r[i, j]``.
    """
    n = mean_r.shape[0]
    if mean_r.shape != (n, n) or n < 2:
        raise DataFormatError(
            f"Takagi identification needs a square matrix with n ≥ 2, got {mean_r.shape}")
    return np.sum(np.diag(mean_r)[:, None] > mean_r, axis=1) / (n - 1)


def mean_sample_corr(gt_features: np.ndarray, sample_features: np.ndarray,
                     chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """``m[i, j] = mean_k corr(g_i, s_j^k)`` as one matrix product.

    Parameters
    ----------
    gt_features : array of shape (n_items, n_features)
    sample_features : array of shape (n_items, n_samples, n_features)

    Returns
    -------
    mean_r : array of shape (n_items, n_items), float64
    """
    gt = _as_2d(gt_features, "ground-truth features")
    samples = np.asarray(sample_features)
    if samples.ndim != 3 or samples.shape[0] != gt.shape[0] or samples.shape[2] != gt.shape[1]:
        raise DataFormatError(
            f"Takagi identification: sample features must have shape (n_items, n_samples, "
            f"n_features) = ({gt.shape[0]}, K, {gt.shape[1]}), got {samples.shape}")
    n, k, d = samples.shape
    r = pearson_matrix(gt, samples.reshape(n * k, d), chunk_size)
    return r.reshape(n, n, k).mean(axis=2)


def takagi_identification_per_item(gt_features: np.ndarray, sample_features: np.ndarray,
                                   chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """Takagi & Nishimoto's identification accuracy of each ground-truth image.

    Parameters
    ----------
    gt_features : array of shape (n_items, n_features)
    sample_features : array of shape (n_items, n_samples, n_features)
        ``sample_features[j, k]`` is sample k generated for image j.

    Returns
    -------
    accuracy : array of shape (n_items,), in [0, 1]
    """
    return takagi_from_mean_corr(mean_sample_corr(gt_features, sample_features, chunk_size))


def takagi_identification(gt_features: np.ndarray, sample_features: np.ndarray,
                          chunk_size: int = DEFAULT_CHUNK) -> float:
    """Takagi & Nishimoto's identification accuracy (mean over ground-truth images).

    See :func:`takagi_identification_per_item`. Chance is 0.5, perfect 1.0.
    """
    return float(np.mean(takagi_identification_per_item(gt_features, sample_features, chunk_size)))
