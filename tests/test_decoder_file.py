"""The decoder file format: one class writes, reads, validates and summarises its own file."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from brain2image.config import DecoderConfig
from brain2image.decoding import estimator_from_file
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.formats.decoder_file import DecoderFile
from brain2image.ridge import ImageRidgeCV

N_VOX, SHAPE, N_TEST = 7, (2, 3), 5


def _contents(seed=0, corr=None):
    rng = np.random.default_rng(seed)
    n_targets = int(np.prod(SHAPE))
    config = DecoderConfig(alphas=[1.0, 10.0, 100.0], cv_folds=3, target_chunk=4)
    return DecoderFile(
        test_ids=np.arange(N_TEST, dtype=np.int64) * 3, test_pred=rng.normal(size=(N_TEST, *SHAPE)),
        test_corr=rng.uniform(-0.2, 0.9, n_targets) if corr is None else corr,
        alphas=rng.choice(config.alphas, n_targets), cv_score=rng.uniform(0, 1, n_targets), config=config,
        coef=rng.normal(size=(N_VOX, n_targets)), intercept=rng.normal(size=n_targets),
        x_mean=rng.normal(size=N_VOX), x_std=rng.uniform(0.5, 2, N_VOX),
        attrs={"roi": "early", "target": "z", "subject": 3, "alpha_grid": np.array(config.alphas),
               "mean_test_corr": 123.0})


def test_filename():
    assert DecoderFile.filename(3, "z", "early") == "subj03_z_early.h5"


def test_round_trip(tmp_path):
    contents = _contents()
    path = contents.write(tmp_path / "decoders" / DecoderFile.filename(3, "z", "early"))
    assert [p.name for p in path.parent.iterdir()] == [path.name]           # written atomically
    full = DecoderFile.read(path, load_weights=True)
    for key in ("test_ids", "alphas", "cv_score", "test_corr", "x_mean", "x_std"):
        np.testing.assert_array_equal(getattr(full, key), getattr(contents, key))
    for key in ("coef", "intercept", "test_pred"):                          # stored as float32
        assert getattr(full, key).dtype == np.float32
        np.testing.assert_array_equal(getattr(full, key), getattr(contents, key).astype(np.float32))
    assert full.config == contents.config and full.path == path and full.target_shape == SHAPE
    assert full.attrs["roi"] == "early" and full.attrs["subject"] == 3
    np.testing.assert_array_equal(full.attrs["target_shape"], SHAPE)
    assert full.attrs["mean_test_corr"] == pytest.approx(np.mean(contents.test_corr))   # computed, not copied
    assert full.attrs["median_alpha"] == pytest.approx(np.median(contents.alphas))
    assert json.loads(full.attrs["decoder_config"])["cv_folds"] == 3
    light = DecoderFile.read(path)
    assert light.coef is None and light.x_mean is None and light.n_voxels == N_VOX
    # a file read with its weights writes back to the same contents
    again = DecoderFile.read(full.write(tmp_path / "copy.h5"), load_weights=True)
    np.testing.assert_array_equal(again.coef, full.coef)
    assert again.attrs["mean_test_corr"] == full.attrs["mean_test_corr"]


def test_summary(tmp_path):
    corr = np.array([0.05, 0.2, np.nan, 0.5, -0.1, 0.3])
    light = DecoderFile.read(_contents(corr=corr).write(tmp_path / "d.h5"))
    finite = corr[np.isfinite(corr)]
    assert light.summary() == {"n_voxels": N_VOX, "n_targets": 6, "mean_r": pytest.approx(finite.mean()),
                               "median_r": pytest.approx(np.median(finite)), "frac_r_above_0.1": 0.6,
                               "median_alpha": pytest.approx(np.median(light.alphas))}
    nothing = _contents(corr=np.full(6, np.nan)).summary()                    # no warning, NaN scores
    assert np.isnan(nothing["mean_r"]) and np.isnan(nothing["frac_r_above_0.1"])


def test_estimator_from_file(tmp_path):
    contents = _contents()
    full = DecoderFile.read(contents.write(tmp_path / "d.h5"), load_weights=True)
    est = estimator_from_file(full)
    assert isinstance(est, ImageRidgeCV) and est.target_shape_ == SHAPE
    X = np.random.default_rng(1).normal(size=(4, N_VOX))
    expected = ((X - contents.x_mean) / contents.x_std).astype(np.float32) @ full.coef + full.intercept
    np.testing.assert_allclose(est.predict(X), expected.reshape(4, *SHAPE), rtol=1e-6)
    with pytest.raises(InvalidArgumentError, match="load_weights=True"):
        estimator_from_file(DecoderFile.read(tmp_path / "d.h5"))


@pytest.mark.parametrize("field,load_weights", [("test/corr", False), ("alphas", False), ("coef", True),
                                                ("x_std", True)])
def test_missing_dataset_names_file_and_field(tmp_path, field, load_weights):
    path = _contents().write(tmp_path / "d.h5")
    with h5py.File(path, "a") as f:
        del f[field]
    with pytest.raises(DataFormatError) as info:
        DecoderFile.read(path, load_weights=load_weights)
    assert str(path) in str(info.value) and f"'/{field}'" in str(info.value)


def test_weights_are_only_required_with_load_weights(tmp_path):
    path = _contents().write(tmp_path / "d.h5")
    with h5py.File(path, "a") as f:
        del f["coef"]
    assert DecoderFile.read(path).coef is None


def test_inconsistent_shape_and_config_errors(tmp_path):
    path = _contents().write(tmp_path / "d.h5")
    with h5py.File(path, "a") as f:
        del f["test/corr"]
        f["test/corr"] = np.zeros(5)
    with pytest.raises(DataFormatError, match=r"field 'test/corr' has shape \(5,\); expected \(6,\)"):
        DecoderFile.read(path)
    path = _contents().write(tmp_path / "e.h5")
    with h5py.File(path, "a") as f:
        del f.attrs["decoder_config"]
    with pytest.raises(DataFormatError, match="decoder_config"):
        DecoderFile.read(path)
    with pytest.raises(MissingFileError):
        DecoderFile.read(tmp_path / "absent.h5")


def test_write_needs_weights_and_consistent_shapes(tmp_path):
    contents = _contents()
    contents.coef = None
    with pytest.raises(InvalidArgumentError, match="coef"):
        contents.write(tmp_path / "d.h5")
    contents = _contents()
    contents.alphas = contents.alphas[:-1]
    with pytest.raises(InvalidArgumentError, match="'alphas'"):
        contents.write(tmp_path / "d.h5")
    assert not list(tmp_path.iterdir())


def test_predictions_only(tmp_path):
    path = tmp_path / "minimal.h5"
    with h5py.File(path, "w") as f:
        f["test/ids"] = np.array([4, 8])
        f["test/pred"] = np.ones((2, 3), dtype=np.float64)
    assert DecoderFile.is_decoder_file(path)
    ids, pred = DecoderFile.read_predictions(path)
    assert ids.dtype == np.int64 and pred.dtype == np.float32 and pred.shape == (2, 3)
    assert not DecoderFile.is_decoder_file(tmp_path / "absent.h5")
    with pytest.raises(DataFormatError, match="alphas"):
        DecoderFile.read(path)
