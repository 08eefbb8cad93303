"""NSD's ncsnr from repeated images and the noise ceiling, on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.glm import ncsnr_from_repeats, noise_ceiling


def test_ncsnr_by_hand_on_a_tiny_array():
    # One session, 4 trials: images 7, 7, 9, 9; two voxels.
    betas = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 0.0], [7.0, 2.0]])
    # Voxel 0: mean 4, population sd sqrt(5); z = [-3, -1, 1, 3] / sqrt(5).
    # Repeat variances (ddof 1): image 7 ((-3+1)^2/2)/5 = 0.4, image 9 the same: noise 0.4.
    # Voxel 1: z = [-1, 1, -1, 1]; each image's repeats differ by 2: variance 2, noise 2 > 1 -> ncsnr 0.
    ncsnr = ncsnr_from_repeats(betas, np.array([7, 7, 9, 9]), np.zeros(4))
    np.testing.assert_allclose(ncsnr, [np.sqrt(0.6) / np.sqrt(0.4), 0.0], rtol=1e-6)


def test_ncsnr_zscores_within_sessions_and_averages_over_repeated_images_only():
    # Session 2 is session 1 scaled and shifted, plus an unrepeated image (it enters session 2's z-scores only).
    one = np.array([1.0, 3.0, 5.0, 7.0])
    two = np.r_[10 * one + 100, 50.0]
    betas = np.r_[one, two][:, None]
    ids = np.array([1, 1, 2, 2, 3, 3, 4, 4, 5])
    sessions = np.array([1, 1, 1, 1, 2, 2, 2, 2, 2])
    z_one, z_two = (one - one.mean()) / one.std(), (two - two.mean()) / two.std()
    noise = np.mean([np.var(z_one[:2], ddof=1), np.var(z_one[2:], ddof=1), np.var(z_two[:2], ddof=1),
                     np.var(z_two[2:4], ddof=1)])
    np.testing.assert_allclose(ncsnr_from_repeats(betas, ids, sessions), [np.sqrt(1 - noise) / np.sqrt(noise)],
                               rtol=1e-6)


def test_ncsnr_recovers_the_true_snr_of_a_simulation():
    rng = np.random.default_rng(0)
    n_images, n_repeats, n_voxels = 10000, 3, 30
    true = np.linspace(0.3, 1.5, n_voxels)
    signal = rng.standard_normal((n_images, n_voxels)) * true
    ids = np.concatenate([rng.permutation(n_images) for _ in range(n_repeats)])
    sessions = np.repeat(np.arange(n_repeats), n_images)  # each session shows every image once
    offsets = rng.normal(0, 5, (n_repeats, n_voxels))[sessions]  # session means and scales z-scoring removes
    betas = (signal[ids] + rng.standard_normal((len(ids), n_voxels))) * rng.uniform(1, 3, n_voxels) + offsets
    estimate = ncsnr_from_repeats(betas.astype(np.float32), ids, sessions)
    assert estimate.dtype == np.float32 and estimate.shape == (n_voxels,)
    np.testing.assert_allclose(estimate, true, atol=0.05)


def test_constant_voxels_get_zero():
    betas = np.column_stack([np.ones(6), np.arange(6.0)])
    ncsnr = ncsnr_from_repeats(betas, np.array([1, 1, 2, 2, 3, 3]), np.zeros(6))
    assert ncsnr[0] == 0 and ncsnr[1] > 0


def test_no_repeated_image_is_refused_in_one_line():
    with pytest.raises(InvalidArgumentError, match="no image is shown more than once") as error:
        ncsnr_from_repeats(np.ones((4, 2)), np.arange(4), np.zeros(4), where="sub-01")
    assert "\n" not in str(error.value) and "sub-01" in str(error.value)


def test_mismatching_lengths_and_nan_are_refused():
    with pytest.raises(InvalidArgumentError, match="one image id and one session per trial"):
        ncsnr_from_repeats(np.ones((4, 2)), np.array([1, 1, 2]), np.zeros(4))
    betas = np.arange(8.0).reshape(4, 2)
    betas[2, 1] = np.nan
    with pytest.raises(DataFormatError, match="voxel 1"):
        ncsnr_from_repeats(betas, np.array([1, 1, 2, 2]), np.zeros(4))


def test_noise_ceiling_formula():
    # ncsnr 1, one trial: 100 * 1 / (1 + 1) = 50; three trials: 100 / (1 + 1/3) = 75; ncsnr 0: 0.
    np.testing.assert_allclose(noise_ceiling(np.array([1.0, 0.0]), 1), [50.0, 0.0])
    np.testing.assert_allclose(noise_ceiling(np.array([1.0]), 3), [75.0])
    # Images averaged over 1 and 3 trials: 1/n is the mean of 1 and 1/3.
    np.testing.assert_allclose(noise_ceiling(np.array([1.0]), np.array([1, 3])), [100 / (1 + 2 / 3)])
    with pytest.raises(InvalidArgumentError):
        noise_ceiling(np.array([1.0]), 0)
