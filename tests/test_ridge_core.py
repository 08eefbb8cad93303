"""The ridge core: solution vs sklearn, grouped folds, repeated rows, chunks, backends, estimators."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from brain2image.errors import InvalidArgumentError
from brain2image.ridge import (
    BACKENDS,
    ImageRidge,
    ImageRidgeCV,
    _solvers,
    backend_name,
    check_target_chunk,
    cv_errors,
    fit_ridge,
    fit_ridge_cv,
    get_backend,
    grouped_folds,
    himalaya_backend,
    repeated_rows,
    standardize_stats,
    target_slices,
)

TIGHT = dict(rtol=1e-9, atol=1e-9)


def _repeated(seed=0, n_images=40, repeats=3, n_features=10, n_targets=4):
    rng = np.random.default_rng(seed)
    Y_unique = rng.normal(size=(n_images, n_targets)) + rng.normal(size=n_targets) * 5
    row_image = np.repeat(np.arange(n_images), repeats)
    rng.shuffle(row_image)
    X = rng.normal(size=(len(row_image), n_features)) * rng.uniform(0.5, 3, n_features) + rng.normal(size=n_features)
    return X, Y_unique, row_image


def _standardise(X):
    return (X - X.mean(0)) / X.std(0)


# ----------------------------------------------------------------------------- solution
@pytest.mark.parametrize("shape", [(3, 10), (1, 60)])     # (repeats, n_features): tall and wide
@pytest.mark.parametrize("solver", ["eigh", "svd"])
def test_solution_matches_sklearn_ridge_on_standardised_rows(shape, solver):
    repeats, n_features = shape
    X, Y_unique, row_image = _repeated(seed=1, repeats=repeats, n_features=n_features)
    result = fit_ridge(X, Y_unique, row_image, alpha=4.0, dtype="float64", solver=solver, target_chunk=3)
    ref = Ridge(alpha=4.0).fit(_standardise(X), Y_unique[row_image])
    np.testing.assert_allclose(result["coef"], ref.coef_.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(result["intercept"], ref.intercept_, **TIGHT)
    est = ImageRidge(alpha=4.0, dtype="float64", solver=solver).fit(X, Y_unique, row_image)
    X_new = np.random.default_rng(2).normal(size=(5, n_features))
    np.testing.assert_allclose(est.predict(X_new), ref.predict((X_new - X.mean(0)) / X.std(0)),
                               rtol=1e-8, atol=1e-9)


def test_cv_estimator_equals_function_and_refits_chosen_alpha():
    X, Y_unique, row_image = _repeated(seed=3)
    kwargs = dict(alphas=[0.1, 10.0, 1000.0], dtype="float64")
    est = ImageRidgeCV(n_folds=4, **kwargs)
    assert est.fit(X, Y_unique, row_image) is est
    result = fit_ridge_cv(X, Y_unique, row_image, n_folds=4, **kwargs)
    np.testing.assert_array_equal(est.coef_, result["coef"])
    np.testing.assert_array_equal(est.alphas_, result["alphas"])
    np.testing.assert_array_equal(est.alpha_grid_, [0.1, 10.0, 1000.0])
    assert est.cv_scores_grid_.shape == (3, Y_unique.shape[1]) and est.n_features_in_ == X.shape[1]
    for j, alpha in enumerate(est.alphas_):
        ref = Ridge(alpha=alpha).fit(_standardise(X), Y_unique[row_image, j])
        np.testing.assert_allclose(est.coef_[:, j], ref.coef_, rtol=1e-8, atol=1e-10)


def test_estimator_init_only_stores_arguments():
    est = ImageRidgeCV(alphas="not checked until fit", n_folds=-1, backend="nope")
    assert est.alphas == "not checked until fit" and est.n_folds == -1 and est.backend == "nope"
    assert not any(name.endswith("_") and not name.startswith("_") for name in vars(est))
    with pytest.raises(RuntimeError, match="not fitted"):
        est.predict(np.zeros((2, 3)))


# ----------------------------------------------------------------------------- folds
@pytest.mark.parametrize("shuffle", [False, True])
def test_grouped_folds_never_split_an_image(shuffle):
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 23, size=70)
    folds = grouped_folds(groups, 5, shuffle=shuffle, random_state=0)
    assert len(folds) == 5
    seen = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(groups)))      # each row validated once
    for train, val in folds:
        assert not set(groups[train]) & set(groups[val])
        assert len(train) + len(val) == len(groups)


def test_shuffled_folds_over_one_row_per_image_are_kfold():
    groups = np.arange(3, 40, 2)                                             # sorted unique images
    ours = grouped_folds(groups, 4, shuffle=True, random_state=7)
    ref = list(KFold(4, shuffle=True, random_state=7).split(groups))
    for (a_train, a_val), (b_train, b_val) in zip(ours, ref):
        np.testing.assert_array_equal(a_train, b_train)
        np.testing.assert_array_equal(a_val, b_val)                          # same order, too


def test_grouped_folds_errors():
    with pytest.raises(InvalidArgumentError, match="n_folds"):
        grouped_folds(np.array([0, 0, 1, 1]), 3)
    with pytest.raises(InvalidArgumentError, match="n_folds"):
        grouped_folds(np.arange(5), 1)


# ----------------------------------------------------------------------------- repeated rows
def test_repeated_row_reduction_equals_materialised_rows():
    X, Y_unique, row_image = _repeated(seed=5, n_images=15, repeats=4)
    row_image = row_image[:-5]                                               # unequal repeats
    X = X[:-5]
    repeats = repeated_rows(row_image)
    np.testing.assert_array_equal(repeats.images, np.unique(row_image))
    np.testing.assert_array_equal(repeats.counts, [np.sum(row_image == i) for i in repeats.images])
    sums = repeats.sums(X, np.float64)
    np.testing.assert_allclose(sums, [X[row_image == i].sum(0) for i in repeats.images], **TIGHT)
    np.testing.assert_allclose(repeats.means(X), [X[row_image == i].mean(0) for i in repeats.images], **TIGHT)
    np.testing.assert_allclose(repeats.shares, repeats.counts / len(row_image), **TIGHT)
    # X^T Y over single-trial rows from the per-image sums
    np.testing.assert_allclose(sums.T @ Y_unique[repeats.images], X.T @ Y_unique[row_image], **TIGHT)
    # and the full fit: targets given once per image == targets repeated per row
    kwargs = dict(alphas=[0.5, 50.0], n_folds=3, dtype="float64")
    a = fit_ridge_cv(X, Y_unique, row_image, **kwargs)
    b = fit_ridge_cv(X, Y_unique[row_image], None, groups=row_image, **kwargs)
    np.testing.assert_allclose(a["coef"], b["coef"], **TIGHT)
    np.testing.assert_allclose(a["cv_scores_grid"], b["cv_scores_grid"], **TIGHT)


# ----------------------------------------------------------------------------- chunks
def test_target_slices_cover_every_target_once():
    assert target_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert target_slices(10, None) == [slice(0, 10)]
    assert check_target_chunk(None, 0) == 1
    with pytest.raises(InvalidArgumentError, match="target_chunk"):
        check_target_chunk(0, 10)


# ----------------------------------------------------------------------------- backends
def test_backend_resolution():
    assert get_backend("numpy").name == "numpy"
    module = get_backend("torch")
    assert get_backend(module) is module and backend_name(module) == "torch"
    assert set(BACKENDS) >= {"numpy", "torch", "torch_cuda"}
    with pytest.raises(InvalidArgumentError, match="unknown himalaya backend 'jax'.*'backend'"):
        get_backend("jax")
    with pytest.raises(InvalidArgumentError, match="backend"):
        fit_ridge(np.zeros((4, 2)), np.zeros((4, 1)), backend="jax")


def test_himalaya_backend_restores_the_previous_global():
    from himalaya.backend import get_backend as global_backend

    before = global_backend().name
    with himalaya_backend("torch") as bk:
        assert bk.name == "torch" and global_backend().name == "torch"
    assert global_backend().name == before
    with pytest.raises(RuntimeError, match="boom"), himalaya_backend("torch"):
        raise RuntimeError("boom")
    assert global_backend().name == before
    with pytest.raises(InvalidArgumentError):
        with himalaya_backend("jax"):
            pass
    assert global_backend().name == before


def test_encoding_fit_takes_an_explicit_backend():
    from himalaya.backend import get_backend as global_backend

    from brain2image.encoding.models import fit_space, prepare_space, reduce_trials

    rng = np.random.default_rng(6)
    features = rng.standard_normal((50, 6)).astype(np.float32)
    train_index = np.repeat(np.arange(40), 2)
    Y = (features[train_index] @ rng.standard_normal((6, 5)) + rng.standard_normal((80, 5))).astype(np.float32)
    design = reduce_trials(train_index, Y)
    space = prepare_space(features, design, np.arange(40, 50))
    before = global_backend().name
    pred_np, alpha_np = fit_space(space, design, alphas=[0.1, 1.0, 10.0], n_folds=3, backend="numpy")
    pred_torch, alpha_torch = fit_space(space, design, alphas=[0.1, 1.0, 10.0], n_folds=3, backend="torch")
    assert global_backend().name == before
    np.testing.assert_array_equal(alpha_np, alpha_torch)
    np.testing.assert_allclose(pred_np, pred_torch, rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="backend"):
        fit_space(space, design, backend="jax")


def test_unknown_solver_is_rejected():
    X, Y_unique, row_image = _repeated(seed=7)
    with pytest.raises(InvalidArgumentError, match="solver"):
        fit_ridge_cv(X, Y_unique, row_image, solver="qr")


# ----------------------------------------------------------------------------- CV paths
def _sklearn_fold_errors(Xs, Y_unique, row_image, folds, grid):
    """Pooled validation errors with the targets materialised per row, one sklearn fit per fold and alpha."""
    sse, sst = np.zeros((len(grid), Y_unique.shape[1])), np.zeros(Y_unique.shape[1])
    for train, val in folds:
        y_val = Y_unique[row_image[val]]
        sst += ((y_val - y_val.mean(0)) ** 2).sum(0)
        for j, alpha in enumerate(grid):
            pred = Ridge(alpha=alpha).fit(Xs[train], Y_unique[row_image[train]]).predict(Xs[val])
            sse[j] += ((pred - y_val) ** 2).sum(0)
    return sse, sst


@pytest.mark.parametrize("cached", [True, False])           # X^T Y from all rows once, or H per fold
@pytest.mark.parametrize("case", ["folds", "subset folds", "wide"])
def test_cv_errors_match_sklearn_fold_by_fold(monkeypatch, cached, case):
    n_features = 70 if case == "wide" else 8
    X, Y_unique, row_image = _repeated(seed=8, n_images=30, n_features=n_features, n_targets=5)
    Xs = _standardise(X)
    folds = grouped_folds(row_image, 4)
    if case == "subset folds":                               # rows left out of a fold: no Gram subtraction
        folds = [(train[5:], val[:-3]) for train, val in folds]
    monkeypatch.setattr(_solvers, "_cache_is_cheaper", lambda *args: cached)
    grid = np.array([0.3, 30.0, 3000.0])
    sse, sst = cv_errors(Xs, Y_unique, row_image, folds, grid, None, get_backend("numpy"), "float64")
    ref_sse, ref_sst = _sklearn_fold_errors(Xs, Y_unique, row_image, folds, grid)
    np.testing.assert_allclose(sse, ref_sse, rtol=1e-8)
    np.testing.assert_allclose(sst, ref_sst, rtol=1e-10)


def test_side_by_side_decompositions_and_row_blocks_change_nothing(monkeypatch):
    X, Y_unique, row_image = _repeated(seed=9, n_images=50, n_features=12, n_targets=6)
    kwargs = dict(alphas=[0.1, 10.0, 1000.0], n_folds=5, dtype="float64")
    monkeypatch.setattr(_solvers, "_parallel_plan", lambda bk, n_tasks: (1, 0))
    one_at_a_time = fit_ridge_cv(X, Y_unique, row_image, **kwargs)
    monkeypatch.setattr(_solvers, "_parallel_plan", lambda bk, n_tasks: (2, 1))
    monkeypatch.setattr(_solvers, "ROW_BLOCK", 7)            # every blockwise pass in many blocks
    side_by_side = fit_ridge_cv(X, Y_unique, row_image, **kwargs)
    np.testing.assert_array_equal(one_at_a_time["alphas"], side_by_side["alphas"])
    for key in ("coef", "intercept", "cv_scores_grid"):
        np.testing.assert_allclose(one_at_a_time[key], side_by_side[key], **TIGHT)
    x_mean, x_std = standardize_stats(X)
    np.testing.assert_allclose(x_mean, X.mean(0), **TIGHT)
    np.testing.assert_allclose(x_std, X.std(0), **TIGHT)
