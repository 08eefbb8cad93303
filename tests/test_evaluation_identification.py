"""Two-way identification (MindEye and Takagi definitions) against hand-computed cases and loops."""

import numpy as np
import pytest

from brain2image.errors import DataFormatError
from brain2image.evaluation.identification import (
    takagi_identification,
    takagi_identification_per_item,
    two_way_identification,
    two_way_identification_per_item,
)
from brain2image.stats import paired_pearson, pearson_matrix

# Permutations of (1, 2, 3): centred they are vectors of -1, 0, 1 and corr(a, b) = a_c · b_c / 2.
P1, P2, P3, P4, P5, P6 = (np.array(p, float) for p in
                          [(1, 2, 3), (3, 2, 1), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2)])


def reference_two_way(real, pred):
    """Direct transcription of the MindEye loop: np.corrcoef per pair."""
    n = len(real)
    out = []
    for j in range(n):
        own = np.corrcoef(real[j], pred[j])[0, 1]
        out.append(sum(np.corrcoef(real[i], pred[j])[0, 1] < own for i in range(n) if i != j) / (n - 1))
    return np.array(out)


def reference_takagi(gt, samples):
    """Direct transcription of Takagi & Nishimoto's loop."""
    n, k = samples.shape[:2]
    out = []
    for i in range(n):
        own = np.mean([np.corrcoef(gt[i], samples[i, m])[0, 1] for m in range(k)])
        wins = [own > np.mean([np.corrcoef(gt[i], samples[j, m])[0, 1] for m in range(k)])
                for j in range(n) if j != i]
        out.append(np.mean(wins))
    return np.array(out)


def test_pearson_matrix_matches_corrcoef_and_chunks():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 30)), rng.normal(size=(11, 30))
    expected = np.corrcoef(a, b)[:7, 7:]
    np.testing.assert_allclose(pearson_matrix(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(pearson_matrix(a, b, chunk_size=3), expected, atol=1e-12)
    np.testing.assert_allclose(paired_pearson(a, b[:7]), np.diag(expected[:, :7]), atol=1e-12)


def test_constant_rows_correlate_zero():
    a = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    r = pearson_matrix(a, a)
    assert r[0, 0] == 0 and r[0, 1] == 0 and r[1, 1] == pytest.approx(1.0)


def test_two_way_hand_computed_3x3():
    real = np.stack([P1, P3, P4])
    pred = np.stack([P3, P3, P6])
    # r[:, 0] = (.5, 1, -.5): pred 0 beats only real 2 → 1/2; pred 1: (.5, 1, -.5) → 1;
    # pred 2: r[:, 2] = (-.5, -1, .5) → 1.
    np.testing.assert_allclose(two_way_identification_per_item(real, pred), [0.5, 1.0, 1.0])
    assert two_way_identification(real, pred) == pytest.approx(5 / 6)


def test_takagi_hand_computed_3x3():
    gt = np.stack([P1, P3, P4])
    samples = np.stack([np.stack([P1, P3]), np.stack([P5, P2]), np.stack([P6, P4])])
    # mean_k r: row 0 = (.75, -.75, 0) → 1; row 1 = (.75, 0, -.75) → 1/2; row 2 = (0, -.75, .75) → 1.
    np.testing.assert_allclose(takagi_identification_per_item(gt, samples), [1.0, 0.5, 1.0])
    assert takagi_identification(gt, samples) == pytest.approx(5 / 6)


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(50, 20))
    assert two_way_identification(real, real) == 1.0
    samples = real[:, None, :] + 0.01 * rng.normal(size=(50, 3, 20))
    assert takagi_identification(real, samples) == 1.0


def test_shuffled_predictions_score_chance():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 64))
    pred = real + rng.normal(size=real.shape)
    shuffled = pred[rng.permutation(400)]
    assert two_way_identification(real, pred) > 0.95
    assert abs(two_way_identification(real, shuffled) - 0.5) < 0.05
    samples = (real[:, None, :] + rng.normal(size=(400, 3, 64)))[rng.permutation(400)]
    assert abs(takagi_identification(real, samples) - 0.5) < 0.05


def test_agrees_with_nested_loop_reference():
    rng = np.random.default_rng(3)
    n, k, d = 25, 4, 40
    gt = rng.normal(size=(n, d))
    samples = 0.6 * gt[:, None, :] + rng.normal(size=(n, k, d))
    np.testing.assert_allclose(two_way_identification_per_item(gt, samples[:, 0]),
                               reference_two_way(gt, samples[:, 0]), atol=1e-12)
    np.testing.assert_allclose(takagi_identification_per_item(gt, samples, chunk_size=7),
                               reference_takagi(gt, samples), atol=1e-12)


def test_shape_errors_are_clear():
    with pytest.raises(DataFormatError, match="same shape"):
        two_way_identification(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(DataFormatError, match="n_samples"):
        takagi_identification(np.zeros((3, 4)), np.zeros((3, 4)))
