"""Encoding models, noise ceiling, variance partitioning, and the file-level analysis."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from prepared_writer import write_prepared
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from brain2image.encoding.analysis import EncodingConfig, default_pairs, encode_arrays, run_encoding_analysis
from brain2image.encoding.models import fit_space, prepare_space, reduce_trials
from brain2image.encoding.noise_ceiling import nc_fraction, noise_ceiling, signed_r2
from brain2image.encoding.partition import partition_variance
from brain2image.formats.feature_store import FeatureStore
from brain2image.stats import pearson_columns


def _problem(seed=0, n_images=100, n_test=30, repeats=2, dims=(8, 200), n_a=12, n_b=12, noise=1.0):
    """Voxels A driven by space 1 (few dims), voxels B by space 2 (many dims)."""
    rng = np.random.default_rng(seed)
    n_all = n_images + n_test
    X1 = rng.standard_normal((n_all, dims[0])).astype(np.float32)
    X2 = rng.standard_normal((n_all, dims[1])).astype(np.float32)
    signal = np.concatenate([X1 @ rng.standard_normal((dims[0], n_a)) / np.sqrt(dims[0]),
                             X2 @ rng.standard_normal((dims[1], n_b)) / np.sqrt(dims[1]) * 1.5], axis=1)
    train_index = np.repeat(np.arange(n_images), repeats)
    rng.shuffle(train_index)
    Y_train = signal[train_index] + noise * rng.standard_normal((len(train_index), n_a + n_b))
    test_index = np.arange(n_images, n_all)
    Y_test = signal[test_index] + noise / np.sqrt(3) * rng.standard_normal((n_test, n_a + n_b))
    return {"s1": X1, "s2": X2}, train_index, Y_train.astype(np.float32), test_index, Y_test.astype(np.float32)


def test_noise_ceiling_formula():
    assert noise_ceiling(np.array([1.0]), 3)[0] == pytest.approx(75.0)
    assert noise_ceiling(np.array([0.0]), 3)[0] == 0.0
    assert noise_ceiling(np.array([2.0]), 1)[0] == pytest.approx(80.0)
    # Unequal repetitions use mean(1/n): (1/3 + 1/3 + 1 + 1) / 4 = 2/3 → 100 / (1 + 2/3) = 60.
    assert noise_ceiling(np.array([1.0]), np.array([3, 3, 1, 1]))[0] == pytest.approx(60.0)
    assert signed_r2(np.array([-0.5, 0.5]))[0] == pytest.approx(-0.25)
    frac = nc_fraction(np.array([0.5, 0.5]), np.array([50.0, 0.0]))
    assert frac[0] == pytest.approx(0.5) and np.isnan(frac[1])


def test_partition_arithmetic():
    part = partition_variance(np.array([0.6]), np.array([0.3]), np.array([0.7]))
    assert part["unique_a"][0] == pytest.approx(0.49 - 0.09)
    assert part["unique_b"][0] == pytest.approx(0.49 - 0.36)
    assert part["shared"][0] == pytest.approx(0.36 + 0.09 - 0.49)


def test_reduce_trials_means_and_counts():
    Y = np.arange(12, dtype=np.float32).reshape(6, 2)
    design = reduce_trials(np.array([2, 0, 2, 1, 2, 0]), Y)
    np.testing.assert_array_equal(design.rows, [0, 1, 2])
    np.testing.assert_array_equal(design.counts, [2, 1, 3])
    offset = Y.mean(axis=0)
    ybar0 = (Y[1] + Y[5]) / 2
    np.testing.assert_allclose(design.y[0], np.sqrt(2) * (ybar0 - offset), rtol=1e-6)
    np.testing.assert_allclose(design.y_offset, offset, rtol=1e-6)


@pytest.mark.parametrize("kernel", [False, True])
def test_unique_image_ridge_equals_single_trial_ridge(kernel):
    features, train_index, Y_train, test_index, Y_test = _problem(dims=(8, 30), n_images=60, repeats=3)
    X = features["s2"]
    alpha = 3.0
    design = reduce_trials(train_index, Y_train)
    space = prepare_space(X, design, test_index, kernel=kernel)
    assert space.kind == ("kernel" if kernel else "primal")
    pred, alphas = fit_space(space, design, alphas=[alpha], n_folds=3)
    # Reference: sklearn Ridge on every single-trial row, features standardised over trials.
    scaler = StandardScaler().fit(X[train_index])
    scale = 1 / np.sqrt(X.shape[1])
    ref = Ridge(alpha=alpha).fit(scaler.transform(X[train_index]) * scale, Y_train)
    expected = ref.predict(scaler.transform(X[test_index]) * scale)
    np.testing.assert_allclose(pred, expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(alphas, alpha)


def test_pearson_columns_matches_corrcoef():
    rng = np.random.default_rng(1)
    Y, P = rng.standard_normal((20, 3)), rng.standard_normal((20, 3))
    expected = [np.corrcoef(Y[:, j], P[:, j])[0, 1] for j in range(3)]
    np.testing.assert_allclose(pearson_columns(Y, P, fill=0.0), expected)


def test_encoding_recovers_driving_space_and_unique_variance():
    features, train_index, Y_train, test_index, Y_test = _problem()
    ncsnr = np.full(Y_train.shape[1], 1.5)
    res = encode_arrays(features, train_index, Y_train, test_index, Y_test, ncsnr=ncsnr,
                        config=EncodingConfig(cv_folds=3, banded_n_iter=8), partition_pairs=[("s1", "s2")])
    a, b = slice(0, 12), slice(12, 24)
    r1, r2 = res.spaces["s1"]["r"], res.spaces["s2"]["r"]
    assert r1[a].mean() > r2[a].mean() + 0.3
    assert r2[b].mean() > r1[b].mean() + 0.3
    part = res.partitions["s1|s2"]
    assert part["unique_a"][a].mean() > 0.1 and part["unique_b"][b].mean() > 0.1
    assert part["unique_a"][a].mean() > part["unique_b"][a].mean()
    assert part["unique_b"][b].mean() > part["unique_a"][b].mean()
    np.testing.assert_allclose(res.noise_ceiling, noise_ceiling(ncsnr, 3))
    np.testing.assert_allclose(res.spaces["s1"]["nc_fraction"], signed_r2(r1) / (res.noise_ceiling / 100))
    assert res.spaces["s1"]["alpha"].shape == (24,)


def test_default_pairs():
    assert default_pairs(["z", "c", "zc_0.75", "zc_0.25", "zc_0.5", "unet_mid_block_s0.5_t0"]) == [
        ("z", "c"), ("zc_0.25", "zc_0.5"), ("zc_0.5", "zc_0.75")]


def _write_prepared(path, train_ids, Y_train, test_ids, Y_test, ijk, shape, affine, ncsnr, early):
    rois = {"nsdgeneral": {"train": Y_train, "test": Y_test, "ijk": ijk, "ncsnr": ncsnr}}
    for name, mask in (("early", early), ("ventral", ~early)):
        rois[name] = {"train": Y_train[:, mask], "test": Y_test[:, mask], "ijk": ijk[mask]}
    write_prepared(path, train_ids, test_ids, rois, attrs={"volume_shape": shape, "affine": affine})


def _write_store(path, ids, values, feature):
    store = FeatureStore.create(path, ids, values.shape[1:], {"feature": feature, "model": "fake", "resolution": 0,
                                                              "seed": 0})
    store.write(ids, values)
    return store.finalize()


def test_run_encoding_analysis_writes_results_and_maps(tmp_path):
    import nibabel as nib

    features, train_index, Y_train, test_index, Y_test = _problem(n_images=80, n_test=20, dims=(6, 150))
    n_vox = Y_train.shape[1]
    ids = np.arange(100) * 7 + 3  # 73k ids of feature rows 0..99
    shape = (6, 5, 4)
    ijk = np.stack(np.unravel_index(np.random.default_rng(0).permutation(120)[:n_vox], shape), axis=1).astype(np.int32)
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = [-10, -20, 5]
    early = np.arange(n_vox) < 12
    prepared = tmp_path / "prepared_subj01.h5"
    _write_prepared(prepared, ids[train_index], Y_train, ids[test_index], Y_test, ijk, shape, affine,
                    np.full(n_vox, 1.0, np.float32), early)
    stores = {"z": _write_store(tmp_path / "z.h5", ids, features["s1"].reshape(100, 2, 3), "z"),
              "c": _write_store(tmp_path / "c.h5", ids, features["s2"], "c")}
    res = run_encoding_analysis(prepared, stores, tmp_path / "out",
                                config=EncodingConfig(cv_folds=3, banded_n_iter=5))
    out = tmp_path / "out" / "encoding"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_voxels"] == {"all": n_vox, "early": 12, "ventral": 12}
    assert summary["mean_r"]["z"]["early"] == pytest.approx(float(res.spaces["z"]["r"][early].mean()))
    assert summary["mean_r"]["z"]["early"] > summary["mean_r"]["c"]["early"]
    assert summary["mean_r"]["c"]["ventral"] > summary["mean_r"]["z"]["ventral"]
    with h5py.File(out / "results.h5", "r") as f:
        np.testing.assert_allclose(f["spaces/c/r"][()], res.spaces["c"]["r"], rtol=1e-6)
        assert set(f["spaces/z"]) == {"r", "r2", "alpha", "nc_fraction"}
        assert f["partitions/z__c"].attrs["a"] == "z"
        np.testing.assert_array_equal(f["voxels/ijk"][()], ijk)
    img = nib.load(out / "maps" / "r_z.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    data = img.get_fdata()
    np.testing.assert_allclose(data[ijk[:, 0], ijk[:, 1], ijk[:, 2]], res.spaces["z"]["r"], rtol=1e-6)
    assert (out / "maps" / "r_c.png").stat().st_size > 1000
    assert (out / "maps" / "unique_z_vs_c.nii.gz").exists()
    assert (out / "roi_summary.png").exists()


def test_missing_roi_is_a_clear_error(tmp_path):
    from brain2image.errors import DataFormatError

    features, train_index, Y_train, test_index, Y_test = _problem(n_images=20, n_test=5, dims=(3, 4), n_a=2, n_b=2)
    prepared = tmp_path / "p.h5"
    _write_prepared(prepared, train_index, Y_train, test_index, Y_test,
                    np.zeros((4, 3), np.int32) + np.arange(4)[:, None], (5, 5, 5), np.eye(4), np.ones(4, np.float32),
                    np.array([1, 1, 0, 0], bool))
    with pytest.raises(DataFormatError, match="no ROI '/rois/V1'"):
        run_encoding_analysis(prepared, {}, tmp_path / "o", rois="V1")


def test_encode_command(tmp_path):
    from brain2image.cli import main

    features, train_index, Y_train, test_index, Y_test = _problem(n_images=40, n_test=10, dims=(4, 60), n_a=3, n_b=3)
    ids = np.arange(50)
    ijk = np.stack(np.unravel_index(np.arange(6), (3, 2, 1)), axis=1).astype(np.int32)
    prepared = tmp_path / "p.h5"
    _write_prepared(prepared, train_index, Y_train, test_index, Y_test, ijk, (3, 2, 1), np.eye(4),
                    np.ones(6, np.float32), np.arange(6) < 3)
    z = _write_store(tmp_path / "z.h5", ids, features["s1"], "z")
    c = _write_store(tmp_path / "c.h5", ids, features["s2"], "c")
    assert main(["encode", "--prepared", str(prepared), "--features", f"z={z}", "--features", f"c={c}",
                 "--out", str(tmp_path / "out"), "--no-maps", "--cv-folds", "3", "--banded-n-iter", "3"]) == 0
    summary = json.loads((tmp_path / "out" / "encoding" / "summary.json").read_text())
    assert set(summary["mean_r"]) == {"z", "c"}
    assert "z|c" in summary["partitions"]
