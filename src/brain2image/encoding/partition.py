"""Variance partitioning between two feature spaces from single-space and joint models.

All quantities use signed r² = ``r * |r|`` of test-set predictions (per voxel), so a voxel a
model predicts below chance counts as negative variance instead of a spurious positive one.
"""

from __future__ import annotations

import numpy as np

from .noise_ceiling import signed_r2

__all__ = ["partition_variance"]


def partition_variance(r_a: np.ndarray, r_b: np.ndarray, r_joint: np.ndarray) -> dict[str, np.ndarray]:
    """Unique and shared variance of spaces a and b, per voxel.

    Parameters
    ----------
    r_a, r_b : arrays of shape (n_voxels,)
        Test Pearson r of the single-space models.
    r_joint : array of shape (n_voxels,)
        Test Pearson r of the joint (banded ridge) model.

    Returns
    -------
    dict of arrays of shape (n_voxels,)
        ``r2_a``, ``r2_b``, ``r2_joint`` (signed), ``unique_a = r2_joint - r2_b``,
        ``unique_b = r2_joint - r2_a``, ``shared = r2_a + r2_b - r2_joint``.
    """
    r2_a, r2_b, r2_joint = signed_r2(r_a), signed_r2(r_b), signed_r2(r_joint)
    return {"r2_a": r2_a, "r2_b": r2_b, "r2_joint": r2_joint, "unique_a": r2_joint - r2_b,
            "unique_b": r2_joint - r2_a, "shared": r2_a + r2_b - r2_joint}
