"""Ridge decoders: numerics against sklearn, alpha selection, memory paths, files and CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from prepared_writer import write_prepared
from sklearn.linear_model import Ridge

from brain2image.config import DecoderConfig
from brain2image.decoding import DecoderFile, estimator_from_file, fit_decoder_from_files
from brain2image.errors import DataFormatError, MissingFileError
from brain2image.ridge import ImageRidgeCV, fit_ridge, fit_ridge_cv, predict_ridge, standardize_stats
from brain2image.stats import pearson_columns

TIGHT = dict(rtol=1e-9, atol=1e-9)     # float64 paths
LOOSE = dict(rtol=1e-3, atol=1e-4)     # float32 paths


def assert_close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), **tol)


def _repeated(rng, n_images=30, repeats=3, n_vox=12, n_targets=5):
    Y_unique = rng.normal(size=(n_images, n_targets))
    row_image = np.repeat(np.arange(n_images), repeats)
    rng.shuffle(row_image)
    X = rng.normal(size=(len(row_image), n_vox)) * rng.uniform(0.5, 3, n_vox) + rng.normal(size=n_vox)
    return X, Y_unique, row_image


def _standardise(X):
    return (X - X.mean(0)) / X.std(0)


# ------------------------------------------------------------------- numerics
@pytest.mark.parametrize("dtype,tol", [("float64", TIGHT), ("float32", LOOSE)])
def test_fixed_alpha_matches_sklearn_ridge(dtype, tol):
    rng = np.random.default_rng(0)
    X, Y_unique, row_image = _repeated(rng)
    Y_unique += np.array([3.0, -2.0, 0.0, 10.0, 0.5])
    result = fit_ridge(X, Y_unique, row_image, alpha=7.5, dtype=dtype)
    ref = Ridge(alpha=7.5).fit(_standardise(X), Y_unique[row_image])
    assert_close(result["coef"], ref.coef_.T, tol)
    assert_close(result["intercept"], ref.intercept_, tol)
    assert_close(result["x_mean"], X.mean(0), TIGHT)
    assert_close(result["x_std"], X.std(0), TIGHT)
    X_new = rng.normal(size=(4, X.shape[1]))
    assert_close(predict_ridge(X_new, result["coef"], result["intercept"], result["x_mean"],
                               result["x_std"]),
                 ref.predict((X_new - X.mean(0)) / X.std(0)), tol)


def test_per_target_fixed_alpha_matches_sklearn_per_column():
    rng = np.random.default_rng(1)
    X, Y_unique, row_image = _repeated(rng, n_targets=3)
    alphas = np.array([0.1, 10.0, 1000.0])
    result = fit_ridge(X, Y_unique, row_image, alpha=alphas, dtype="float64")
    for j, alpha in enumerate(alphas):
        ref = Ridge(alpha=alpha).fit(_standardise(X), Y_unique[row_image, j])
        assert_close(result["coef"][:, j], ref.coef_, TIGHT)
        assert_close(result["intercept"][j], ref.intercept_, TIGHT)


def test_more_voxels_than_rows_matches_sklearn():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 50))
    Y = rng.normal(size=(20, 4))
    result = fit_ridge(X, Y, alpha=3.0, dtype="float64")
    ref = Ridge(alpha=3.0).fit(_standardise(X), Y)
    assert_close(result["coef"], ref.coef_.T, dict(rtol=1e-8, atol=1e-10))
    assert_close(result["intercept"], ref.intercept_, TIGHT)


def test_zero_variance_voxel_has_no_nan_and_zero_weight():
    rng = np.random.default_rng(3)
    X, Y_unique, row_image = _repeated(rng)
    X[:, 4] = 2.5
    mean, std = standardize_stats(X)
    assert std[4] == 1.0 and mean[4] == 2.5
    result = fit_ridge_cv(X, Y_unique, row_image, alphas=[1, 100], n_folds=3, dtype="float64")
    assert np.all(np.isfinite(result["coef"]))
    assert np.allclose(result["coef"][4], 0.0, atol=1e-10)
    ref = Ridge(alpha=result["alphas"][0]).fit(
        _standardise(np.delete(X, 4, axis=1)), Y_unique[row_image, 0])
    assert_close(np.delete(result["coef"][:, 0], 4), ref.coef_, TIGHT)


def test_constant_offset_in_targets_is_recovered():
    rng = np.random.default_rng(4)
    n_images, n_vox = 60, 10
    X = rng.normal(size=(n_images, n_vox))
    W = rng.normal(size=(n_vox, 3))
    offset = np.array([50.0, -20.0, 7.0])
    Y = X @ W + offset
    dec = ImageRidgeCV(alphas=[1e4], dtype="float64").fit(X, Y)
    assert_close(dec.intercept_, Y.mean(0), TIGHT)
    # strong shrinkage: predictions collapse to the offset, they do not lose it
    X_new = rng.normal(size=(200, n_vox))
    assert_close(dec.predict(X_new).mean(0), offset, dict(rtol=0.05, atol=0.5))
    # a pure constant target is predicted exactly
    const = fit_ridge_cv(X, np.full((n_images, 2), 3.25), alphas=[1, 10], n_folds=3, dtype="float64")
    assert_close(predict_ridge(X_new, const["coef"], const["intercept"], const["x_mean"],
                               const["x_std"]), np.full((200, 2), 3.25), TIGHT)
    assert np.all(np.isnan(const["cv_scores"]))


def test_per_target_alpha_small_for_clean_large_for_noise():
    rng = np.random.default_rng(5)
    n_images, repeats, n_vox = 80, 2, 8
    row_image = np.repeat(np.arange(n_images), repeats)
    X_img = rng.normal(size=(n_images, n_vox))
    X = X_img[row_image] + 1e-3 * rng.normal(size=(n_images * repeats, n_vox))
    clean = X_img @ rng.normal(size=n_vox)          # exactly linear in the voxels
    noise = rng.normal(size=n_images)               # unrelated to the voxels
    grid = [1e-3, 1e-1, 10.0, 1e3, 1e5]
    result = fit_ridge_cv(X, np.stack([clean, noise], 1), row_image, alphas=grid, n_folds=4,
                          dtype="float64")
    assert result["alphas"][0] <= 1e-1
    assert result["alphas"][1] >= 1e3
    assert result["cv_scores"][0] > 0.99
    assert result["cv_scores"][1] < 0.05
    assert result["cv_scores_grid"].shape == (len(grid), 2)
    # the noise target's validation error only falls as alpha grows beyond the small ones
    assert result["cv_scores_grid"][-1, 1] > result["cv_scores_grid"][0, 1]


def test_row_image_equals_explicit_repetition():
    rng = np.random.default_rng(6)
    X, Y_unique, row_image = _repeated(rng, n_targets=7)
    kwargs = dict(alphas=[0.1, 10, 1000], n_folds=3, dtype="float64")
    a = fit_ridge_cv(X, Y_unique, row_image, **kwargs)
    b = fit_ridge_cv(X, Y_unique[row_image], None, groups=row_image, **kwargs)
    np.testing.assert_array_equal(a["alphas"], b["alphas"])
    assert_close(a["coef"], b["coef"], TIGHT)
    assert_close(a["intercept"], b["intercept"], TIGHT)
    assert_close(a["cv_scores_grid"], b["cv_scores_grid"], TIGHT)


def test_grouped_folds_keep_repeats_together():
    """Grouped CV must differ from row-wise CV when repeats are near-identical.

    With repeats in different folds the CV would see validation images in training.
    """
    rng = np.random.default_rng(7)
    n_images, n_vox = 40, 30
    row_image = np.repeat(np.arange(n_images), 3)
    X_img = rng.normal(size=(n_images, n_vox))
    X = X_img[row_image] + 0.01 * rng.normal(size=(len(row_image), n_vox))
    Y = rng.normal(size=(n_images, 1))  # unrelated to X: only memorisation helps
    grid = [1e-3, 1e3]
    grouped = fit_ridge_cv(X, Y, row_image, alphas=grid, n_folds=4, dtype="float64")
    by_row = fit_ridge_cv(X, Y, row_image, groups=np.arange(len(row_image)), alphas=grid,
                          n_folds=4, dtype="float64")
    assert grouped["alphas"][0] == 1e3      # honest CV: nothing to learn, shrink
    assert by_row["alphas"][0] == 1e-3      # leaky CV memorises repeats
    assert by_row["cv_scores"][0] > 0.5 > grouped["cv_scores"][0]


def test_chunked_targets_equal_unchunked():
    rng = np.random.default_rng(8)
    X, Y_unique, row_image = _repeated(rng, n_targets=11)
    kwargs = dict(alphas=[0.1, 10, 1000], n_folds=3, dtype="float64")
    full = fit_ridge_cv(X, Y_unique, row_image, target_chunk=100, **kwargs)
    chunked = fit_ridge_cv(X, Y_unique, row_image, target_chunk=3, **kwargs)
    np.testing.assert_array_equal(full["alphas"], chunked["alphas"])
    assert_close(full["coef"], chunked["coef"], TIGHT)
    assert_close(full["cv_scores_grid"], chunked["cv_scores_grid"], TIGHT)


def test_torch_backend_matches_numpy():
    rng = np.random.default_rng(9)
    X, Y_unique, row_image = _repeated(rng)
    kwargs = dict(alphas=[0.1, 10, 1000], n_folds=3, dtype="float64")
    a = fit_ridge_cv(X, Y_unique, row_image, backend="numpy", **kwargs)
    b = fit_ridge_cv(X, Y_unique, row_image, backend="torch", **kwargs)
    assert_close(a["coef"], b["coef"], TIGHT)
    np.testing.assert_array_equal(a["alphas"], b["alphas"])


def test_recovers_known_weights_on_simulated_data():
    rng = np.random.default_rng(10)
    n_images, repeats, n_vox, n_targets = 150, 2, 40, 6
    W = rng.normal(size=(n_vox, n_targets))
    row_image = np.repeat(np.arange(n_images), repeats)
    X_img = rng.normal(size=(n_images, n_vox))
    X = X_img[row_image] + 0.5 * rng.normal(size=(len(row_image), n_vox))
    Y = X_img @ W + 0.5 * rng.normal(size=(n_images, n_targets))
    dec = ImageRidgeCV(alphas=[10.0 ** k for k in range(-2, 5)], n_folds=5).fit(
        X, Y.reshape(n_images, 2, 3), row_image)
    assert dec.coef_.shape == (n_vox, n_targets) and dec.coef_.dtype == np.float32
    X_test = rng.normal(size=(50, n_vox))
    pred = dec.predict(X_test)
    assert pred.shape == (50, 2, 3)
    r = pearson_columns(X_test @ W, pred.reshape(50, -1))
    assert np.all(r > 0.9)


def test_pearson_columns_against_numpy():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(20, 7)), rng.normal(size=(20, 7))
    b[:, 0] = a[:, 0] * 2 + 1
    b[:, 6] = 4.0
    r = pearson_columns(b, a, chunk=3)
    expected = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(6)]
    assert_close(r[:6], expected, TIGHT)
    assert r[0] == pytest.approx(1.0) and np.isnan(r[6])


def test_bad_inputs_raise():
    rng = np.random.default_rng(12)
    X, Y_unique, row_image = _repeated(rng)
    with pytest.raises(ValueError, match="row_image values"):
        fit_ridge_cv(X, Y_unique, row_image + 1)
    with pytest.raises(ValueError, match="positive"):
        fit_ridge_cv(X, Y_unique, row_image, alphas=[0.0, 1.0])
    with pytest.raises(ValueError, match="n_folds"):
        fit_ridge_cv(X, Y_unique, row_image, alphas=[1, 2], n_folds=100)
    with pytest.raises(ValueError, match="backend"):
        fit_ridge_cv(X, Y_unique, row_image, backend="jax")
    with pytest.raises(ValueError, match="same number of rows"):
        fit_ridge_cv(X, Y_unique)


# ------------------------------------------------------------------- files
def _write_files(tmp_path, rng, missing_train_id=False, missing_test_id=False):
    """A tiny prepared file and feature store following docs/architecture.md."""
    n_vox, shape = 16, (2, 3, 3)
    store_ids = np.arange(0, 400, 4, dtype=np.int64)              # 100 images, sorted 73k ids
    W = rng.normal(size=(n_vox, int(np.prod(shape))))
    X_img = rng.normal(size=(len(store_ids), n_vox))
    feats = (X_img @ W + 5.0 + 0.1 * rng.normal(size=(len(store_ids), W.shape[1]))).astype(np.float32)
    test_idx = np.arange(0, 100, 10)
    train_idx = np.setdiff1d(np.arange(100), test_idx)
    train_rows = np.repeat(train_idx, 2)
    rng.shuffle(train_rows)
    train_ids = store_ids[train_rows].copy()
    test_ids = store_ids[test_idx].copy()
    if missing_train_id:
        train_ids[0] = 401
    if missing_test_id:
        test_ids[-1] = 999
    prepared = tmp_path / "prepared_subj03.h5"
    train_x = X_img[train_rows] + 0.3 * rng.normal(size=(len(train_rows), n_vox))
    write_prepared(prepared, train_ids, test_ids, {"early": {"train": train_x, "test": X_img[test_idx]}},
                   attrs={"subject": 3})
    store = tmp_path / "features_z.h5"
    with h5py.File(store, "w") as f:
        f.create_dataset("features", data=feats.reshape((-1,) + shape), chunks=(1,) + shape)
        f["ids"] = store_ids
        f["done"] = np.ones(len(store_ids), bool)
        f.attrs.update(feature="z", model="tiny", resolution=8, seed=0)
    return prepared, store, feats.reshape((-1,) + shape)[test_idx], test_ids


def test_decoder_file_round_trip(tmp_path):
    rng = np.random.default_rng(13)
    prepared, store, true_test, test_ids = _write_files(tmp_path, rng)
    config = DecoderConfig(alphas=[0.1, 1.0, 10.0, 100.0], cv_folds=3, target_chunk=5)
    out = tmp_path / "decoders" / DecoderFile.filename(3, "z", "early")
    assert out.name == "subj03_z_early.h5"
    path = fit_decoder_from_files(prepared, store, "early", "z", out, config, dtype="float64")
    assert path == out and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == [out.name]   # no temp file left
    with h5py.File(out, "r") as f:
        assert f["coef"].shape == (16, 18) and f["alphas"].shape == (18,)
        assert f["x_mean"].shape == f["x_std"].shape == (16,) and f["intercept"].shape == (18,)
        assert f["test/pred"].shape == (10, 2, 3, 3) and f["test/corr"].shape == (18,)
        coef, intercept = f["coef"][()], f["intercept"][()]
        x_mean, x_std = f["x_mean"][()], f["x_std"][()]
    loaded = DecoderFile.read(out, load_weights=True)
    np.testing.assert_array_equal(loaded.test_ids, test_ids)
    assert loaded.config == config
    assert set(loaded.alphas) <= set(config.alphas)
    # independent recomputation of the stored predictions and correlations
    with h5py.File(prepared, "r") as f:
        X_test = f["rois/early/test"][()]
    pred = ((X_test - x_mean) / x_std) @ coef + intercept
    assert_close(loaded.test_pred.reshape(10, -1), pred, dict(rtol=1e-5, atol=1e-5))
    expected_r = [np.corrcoef(pred[:, j], true_test.reshape(10, -1)[:, j])[0, 1] for j in range(18)]
    assert_close(loaded.test_corr, expected_r, dict(rtol=1e-5, atol=1e-6))
    assert np.all(loaded.test_corr > 0.8)
    assert loaded.attrs["mean_test_corr"] == pytest.approx(np.mean(expected_r), abs=1e-6)
    assert loaded.attrs["median_alpha"] == pytest.approx(np.median(loaded.alphas))
    assert loaded.attrs["fit_seconds"] >= 0 and loaded.attrs["roi"] == "early"
    assert json.loads(loaded.attrs["decoder_config"])["cv_folds"] == 3
    # the intercept kept the +5 offset of the features
    assert abs(float(np.mean(intercept)) - 5.0) < 1.0
    est = estimator_from_file(loaded)
    assert_close(est.predict(X_test), loaded.test_pred, dict(rtol=1e-5, atol=1e-5))


@pytest.mark.parametrize("which", ["train", "test"])
def test_missing_feature_id_names_both_files(tmp_path, which):
    rng = np.random.default_rng(14)
    prepared, store, _, _ = _write_files(tmp_path, rng, missing_train_id=which == "train",
                                         missing_test_id=which == "test")
    with pytest.raises(DataFormatError) as info:
        fit_decoder_from_files(prepared, store, "early", "z", tmp_path / "out.h5",
                               DecoderConfig(alphas=[1.0, 10.0], cv_folds=2))
    message = str(info.value)
    assert str(prepared) in message and str(store) in message
    assert ("401" if which == "train" else "999") in message
    assert not (tmp_path / "out.h5").exists()


def test_file_errors(tmp_path):
    rng = np.random.default_rng(15)
    prepared, store, _, _ = _write_files(tmp_path, rng)
    with pytest.raises(DataFormatError, match="rois/ventral"):
        fit_decoder_from_files(prepared, store, "ventral", "c", tmp_path / "o.h5")
    with pytest.raises(MissingFileError):
        fit_decoder_from_files(tmp_path / "nope.h5", store, "early", "z", tmp_path / "o.h5")
    with h5py.File(store, "a") as f:
        f["done"][0] = False
    with pytest.raises(DataFormatError, match="done"):
        fit_decoder_from_files(prepared, store, "early", "z", tmp_path / "o.h5",
                               DecoderConfig(alphas=[1.0], cv_folds=2))
    with pytest.raises(MissingFileError):
        DecoderFile.read(tmp_path / "o.h5")


def test_cli_fit(tmp_path, capsys):
    from brain2image.cli import main

    rng = np.random.default_rng(16)
    prepared, store, _, _ = _write_files(tmp_path, rng)
    assert main(["fit", "--prepared", str(prepared), "--features", str(store),
                 "--target", "z", "--out", str(tmp_path / "decoders"),
                 "--alphas", "1", "10", "100", "--cv-folds", "3",
                 "--target-chunk", "4", "--backend", "numpy"]) == 0
    out = tmp_path / "decoders" / "subj03_z_early.h5"
    loaded = DecoderFile.read(out)
    assert loaded.config.alphas == [1.0, 10.0, 100.0]
    assert loaded.config.cv_folds == 3 and loaded.config.target_chunk == 4
    assert loaded.attrs["target"] == "z" and loaded.attrs["backend"] == "numpy"
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(90, 12), (20, 50)])
def test_eigh_and_svd_solvers_agree(shape):
    rng = np.random.default_rng(17)
    X = rng.normal(size=shape)
    X[:, 3] = X[:, 0] + X[:, 1]           # rank-deficient columns
    Y = rng.normal(size=(shape[0], 4)) + 2.0
    kwargs = dict(alphas=[0.01, 1, 100], n_folds=3, dtype="float64")
    a = fit_ridge_cv(X, Y, solver="eigh", **kwargs)
    b = fit_ridge_cv(X, Y, solver="svd", **kwargs)
    np.testing.assert_array_equal(a["alphas"], b["alphas"])
    assert_close(a["coef"], b["coef"], dict(rtol=1e-7, atol=1e-9))
    assert_close(a["intercept"], b["intercept"], dict(rtol=1e-7, atol=1e-9))
    ref = Ridge(alpha=a["alphas"][0]).fit(_standardise(X), Y[:, 0])
    assert_close(a["coef"][:, 0], ref.coef_, dict(rtol=1e-7, atol=1e-9))


def test_backend_and_dtype_default_to_the_config(tmp_path):
    rng = np.random.default_rng(18)
    prepared, store, _, _ = _write_files(tmp_path, rng)
    config = DecoderConfig(alphas=[1.0, 10.0], cv_folds=3, backend="torch", ridge_dtype="float64")
    out = fit_decoder_from_files(prepared, store, "early", "z", tmp_path / "d.h5", config)
    attrs = DecoderFile.read(out).attrs
    assert attrs["backend"] == "torch" and attrs["dtype"] == "float64"
    out = fit_decoder_from_files(prepared, store, "early", "z", tmp_path / "e.h5", config, backend="numpy")
    assert DecoderFile.read(out).attrs["backend"] == "numpy"
