"""One statistics module: Pearson correlations in one argument order, against np.corrcoef."""

from __future__ import annotations

import numpy as np
import pytest

from brain2image.errors import InvalidArgumentError
from brain2image.stats import paired_pearson, pearson_columns, pearson_matrix, zscore_rows


def test_pearson_columns_matches_corrcoef_in_true_pred_order():
    rng = np.random.default_rng(0)
    true, pred = rng.normal(size=(30, 9)), rng.normal(size=(30, 9))
    pred[:, 1] = 3 * true[:, 1] - 2
    expected = [np.corrcoef(true[:, j], pred[:, j])[0, 1] for j in range(9)]
    r = pearson_columns(true, pred)
    np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-12)
    assert r[1] == pytest.approx(1.0)
    # symmetric, and chunking changes nothing (beyond float64 rounding of the column sums)
    np.testing.assert_array_equal(pearson_columns(pred, true), r)
    np.testing.assert_allclose(pearson_columns(true, pred, chunk=2), r, rtol=1e-14, atol=1e-15)


def test_pearson_columns_constant_column_policy():
    rng = np.random.default_rng(1)
    true, pred = rng.normal(size=(12, 3)), rng.normal(size=(12, 3))
    pred[:, 0] = 5.0
    true[:, 2] = -1.0
    r_nan = pearson_columns(true, pred)
    assert np.isnan(r_nan[0]) and np.isnan(r_nan[2]) and np.isfinite(r_nan[1])
    r_zero = pearson_columns(true, pred, fill=0.0)
    assert r_zero[0] == 0.0 and r_zero[2] == 0.0 and r_zero[1] == r_nan[1]


def test_pearson_columns_shape_error():
    with pytest.raises(InvalidArgumentError, match="same shape"):
        pearson_columns(np.zeros((4, 3)), np.zeros((4, 2)))


def test_pearson_matrix_and_paired_against_corrcoef():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 25)), rng.normal(size=(9, 25))
    expected = np.corrcoef(a, b)[:6, 6:]
    np.testing.assert_allclose(pearson_matrix(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(pearson_matrix(a, b, chunk_size=4), expected, atol=1e-12)
    np.testing.assert_allclose(paired_pearson(a, b[:6]), np.diag(expected[:, :6]), atol=1e-12)
    # pearson_columns of the transposed rows is the paired correlation
    np.testing.assert_allclose(pearson_columns(a.T, b[:6].T), paired_pearson(a, b[:6]), atol=1e-12)


def test_constant_rows_and_zscore():
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 6.0]])
    z = zscore_rows(x)
    np.testing.assert_array_equal(z[0], 0.0)
    assert z[1].mean() == pytest.approx(0.0) and (z[1] ** 2).sum() == pytest.approx(3.0)
    assert pearson_matrix(x, x)[0, 1] == 0.0 and paired_pearson(x, x)[0] == 0.0
    with pytest.raises(InvalidArgumentError, match="feature dimensions"):
        pearson_matrix(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(InvalidArgumentError, match="shapes differ"):
        paired_pearson(np.zeros((2, 3)), np.zeros((3, 3)))
