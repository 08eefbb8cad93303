"""PixCorr, SSIM and correlation distance."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from brain2image.errors import DataFormatError
from brain2image.evaluation.metrics import (
    comparison_size,
    correlation_distance,
    pixcorr,
    pixcorr_per_item,
    resize_for_metrics,
    ssim,
    ssim_per_item,
)


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(4, 24, 24, 3), dtype=np.uint8)


def test_identical_images_score_one(images):
    assert pixcorr(images, images) == pytest.approx(1.0)
    assert ssim(images, images) == pytest.approx(1.0)


def test_pixcorr_matches_numpy_at_native_size(images):
    other = np.random.default_rng(1).integers(0, 256, size=images.shape, dtype=np.uint8)
    mixed = ((images.astype(int) + other) // 2).astype(np.uint8)
    expected = [np.corrcoef(images[i].ravel().astype(float), mixed[i].ravel().astype(float))[0, 1]
                for i in range(len(images))]
    # Real images are 24 px (< 425), so the comparison happens at 24 px: no resizing at all.
    np.testing.assert_allclose(pixcorr_per_item(images, mixed), expected, atol=1e-6)
    # Reconstructions of another size are resized to the real images' size.
    assert pixcorr_per_item(images, np.repeat(np.repeat(images, 2, 1), 2, 2)).min() > 0.9


def test_comparison_size_caps_at_real_size(images):
    assert comparison_size(images) == 24
    assert comparison_size(images, size=16) == 16
    assert resize_for_metrics(images, 16).shape == (4, 16, 16, 3)


def test_ssim_uses_field_settings(images):
    other = np.random.default_rng(2).integers(0, 256, size=images.shape, dtype=np.uint8)
    def grey(x):  # skimage's rgb2gray
        return (x / 255.0) @ np.array([0.2125, 0.7154, 0.0721])

    expected = [structural_similarity(grey(images[i]), grey(other[i]), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0) for i in range(4)]
    np.testing.assert_allclose(ssim_per_item(images, other), expected, atol=1e-5)


def test_correlation_distance():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 30))
    assert correlation_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert correlation_distance(a, -a) == pytest.approx(2.0)
    from scipy.spatial.distance import correlation
    b = rng.normal(size=(5, 30))
    assert correlation_distance(a, b) == pytest.approx(np.mean([correlation(a[i], b[i]) for i in range(5)]))


def test_bad_images_raise(images):
    with pytest.raises(DataFormatError, match="uint8"):
        pixcorr(images.astype(float), images)
    with pytest.raises(DataFormatError, match="reconstructions"):
        ssim(images, images[:2])
