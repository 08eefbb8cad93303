"""Brain correlation (MindEye2): the core on constructed data, the kept z model, and the stage in a tiny run."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
from ldm_dummy import single_torch_thread
from study_fixtures import tiny_study

from brain2image.cli import main
from brain2image.config import (
    BrainCorrelationConfig,
    DecoderConfig,
    ReconstructionConfig,
    ReportConfig,
    run_config_from_dict,
)
from brain2image.encoding.analysis import EncodingConfig, encode_arrays
from brain2image.encoding.brain_correlation import brain_correlation, predict_responses, roi_correlations
from brain2image.encoding.outputs import summary_masks, write_results
from brain2image.errors import DataFormatError, MissingFileError
from brain2image.formats.encoding_results import EncodingModel, read_encoding_model
from brain2image.formats.feature_store import FeatureStore
from brain2image.formats.prepared import PreparedData
from brain2image.pipeline import EncodingOptions, RunConfig, run_pipeline
from brain2image.stages import StageContext, get_stage

SHAPE = (2, 3, 3)


def _model(rng: np.random.Generator, n_voxels: int = 40) -> EncodingModel:
    n_features = int(np.prod(SHAPE))
    return EncodingModel(weights=rng.normal(size=(n_features, n_voxels)).astype(np.float32),
                         intercept=rng.normal(size=n_voxels).astype(np.float32),
                         feature_mean=rng.normal(size=n_features), feature_scale=rng.uniform(0.5, 2, n_features),
                         voxel_keys=np.arange(n_voxels), feature_shape=SHAPE)


# ---------------------------------------------------------------------------------- the core
def test_a_perfect_encoding_model_gives_r_1_and_noise_lowers_it():
    rng = np.random.default_rng(0)
    model = _model(rng)
    features = rng.normal(size=(12, *SHAPE))
    exact = predict_responses(model, features)
    masks = {"a": np.arange(40) < 20, "b": np.arange(40) >= 20}
    perfect = brain_correlation(model, features[:, None], exact, masks, chunk=5)
    assert perfect == pytest.approx({"a": 1.0, "b": 1.0}, abs=1e-5)
    scale = exact.std()
    noisy = [brain_correlation(model, features[:, None], exact + s * scale * rng.normal(size=exact.shape), masks)
             for s in (0.3, 1.0, 3.0)]
    for roi in masks:
        values = [n[roi] for n in noisy]
        assert 1.0 > values[0] > values[1] > values[2], (roi, values)


def test_samples_are_averaged_and_prediction_matches_the_standardised_formula():
    rng = np.random.default_rng(1)
    model = _model(rng, n_voxels=10)
    features = rng.normal(size=(4, 3, *SHAPE))
    x = (features.reshape(12, -1) - model.feature_mean) / model.feature_scale
    np.testing.assert_allclose(predict_responses(model, features.reshape(12, *SHAPE)),
                               x @ model.weights + model.intercept, rtol=1e-4, atol=1e-4)
    measured = rng.normal(size=(4, 10))
    masks = {"all": np.ones(10, bool)}
    expected = np.mean([np.corrcoef(predict_responses(model, features[i, s][None])[0], measured[i])[0, 1]
                        for i in range(4) for s in range(3)])
    assert brain_correlation(model, features, measured, masks)["all"] == pytest.approx(expected, abs=1e-5)


def test_roi_masking_uses_only_the_roi_voxels():
    rng = np.random.default_rng(2)
    predicted = rng.normal(size=(6, 30))
    measured = rng.normal(size=(6, 30))
    inside = np.zeros(30, bool)
    inside[5:15] = True
    measured[:, inside] = 2 * predicted[:, inside] + 1  # exact on the ROI, unrelated elsewhere
    r = roi_correlations(predicted, measured, {"roi": inside, "rest": ~inside, "one": np.eye(30, dtype=bool)[0]})
    np.testing.assert_allclose(r["roi"], 1.0, atol=1e-12)
    reference = [np.corrcoef(predicted[i, ~inside], measured[i, ~inside])[0, 1] for i in range(6)]
    np.testing.assert_allclose(r["rest"], reference, atol=1e-12)
    assert np.isnan(r["one"]).all()
    model = EncodingModel(np.eye(30, dtype=np.float32), np.zeros(30, np.float32), np.zeros(30), np.ones(30),
                          np.arange(30), (30,))
    out = brain_correlation(model, predicted[:, None], measured, {"roi": inside, "one": np.eye(30, dtype=bool)[0]})
    assert out["roi"] == pytest.approx(1.0) and out["one"] is None


def test_bad_shapes_are_data_format_errors():
    rng = np.random.default_rng(3)
    model = _model(rng)
    with pytest.raises(DataFormatError, match="expects"):
        predict_responses(model, rng.normal(size=(2, 4, 4)))
    with pytest.raises(DataFormatError, match="measured responses have shape"):
        brain_correlation(model, rng.normal(size=(3, 1, *SHAPE)), rng.normal(size=(3, 7)), {})


# ---------------------------------------------------------------------------------- the kept z model
def _encoding_problem(rng: np.random.Generator):
    n_images, n_voxels = 70, 25
    features = {"z": rng.normal(size=(n_images, *SHAPE)).astype(np.float32),
                "c": rng.normal(size=(n_images, 40)).astype(np.float32)}
    train_index = np.repeat(np.arange(60), 2)
    weights = rng.normal(size=(int(np.prod(SHAPE)), n_voxels))
    clean = features["z"].reshape(n_images, -1) @ weights
    Y_train = (clean[train_index] + rng.normal(size=(120, n_voxels))).astype(np.float32)
    Y_test = (clean[60:] + 0.3 * rng.normal(size=(10, n_voxels))).astype(np.float32)
    return features, train_index, Y_train, np.arange(60, 70), Y_test


@pytest.mark.parametrize("pairs", [[], [["z", "c"]]], ids=["primal", "kernel"])
def test_the_z_model_round_trips_through_the_results_file(tmp_path, pairs):
    rng = np.random.default_rng(4)
    features, train_index, Y_train, test_index, Y_test = _encoding_problem(rng)
    config = EncodingConfig(alphas=[0.1, 10.0, 1000.0], cv_folds=3, maps=False)
    plain = encode_arrays(features, train_index, Y_train, test_index, Y_test, config=config, partition_pairs=pairs)
    keys = np.arange(100, 125)
    kept = encode_arrays(features, train_index, Y_train, test_index, Y_test, config=config, partition_pairs=pairs,
                         keep_models=("z", "not_a_space"), voxel_keys=keys)
    assert set(kept.models) == {"z"} and plain.models == {}
    for name in features:  # keeping the model changes no score
        for key, values in plain.spaces[name].items():
            np.testing.assert_array_equal(kept.spaces[name][key], values)
    write_results(kept, tmp_path / "results.h5", attrs={"roi": "nsdgeneral"})
    model = read_encoding_model(tmp_path / "results.h5")
    assert model.weights.shape == (int(np.prod(SHAPE)), 25) and model.feature_shape == SHAPE
    assert model.roi == "nsdgeneral" and model.form == ("kernel" if pairs else "primal")
    np.testing.assert_array_equal(model.voxel_keys, keys)
    for field in ("weights", "intercept", "feature_mean", "feature_scale"):
        np.testing.assert_allclose(getattr(model, field), getattr(kept.models["z"], field), rtol=1e-6)
    # The kept model predicts the test images as the fit did: same test r per voxel.
    pred = predict_responses(model, features["z"][test_index])
    r = [np.corrcoef(pred[:, v], Y_test[:, v])[0, 1] for v in range(25)]
    np.testing.assert_allclose(r, kept.spaces["z"]["r"], atol=1e-4)


def test_results_without_a_z_model_are_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match="results.h5 not found; run `brain2image encode`"):
        read_encoding_model(tmp_path / "results.h5")
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.create_dataset("spaces/z/r", data=np.zeros(3))
    with pytest.raises(DataFormatError, match=r"old.h5: no fitted model '/models/z'.*brain2image encode") as error:
        read_encoding_model(tmp_path / "old.h5")
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------- the stage in a run
def test_brain_correlation_table_is_a_run_config_section():
    assert get_stage("brain_correlation").settings_class is None
    assert RunConfig(nsd_root="n", out_dir="o").brain_correlation == BrainCorrelationConfig(batch_size=16)
    config = run_config_from_dict({"nsd_root": "n", "out_dir": "o", "brain_correlation": {"batch_size": 4}})
    assert config.brain_correlation.batch_size == 4 and config.stage_settings == {}
    with pytest.raises(DataFormatError, match="batch_sise"):
        run_config_from_dict({"nsd_root": "n", "out_dir": "o", "brain_correlation": {"batch_sise": 4}})


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    with single_torch_thread():
        root = tmp_path_factory.mktemp("brain_correlation")
        study, model_dir = tiny_study(root, n_images=260)
        config = RunConfig(
            nsd_root=str(study.nsd_root), out_dir=str(root / "run"), model=str(model_dir),
            decoder=DecoderConfig(alphas=[1.0, 100.0, 10000.0], cv_folds=3),
            reconstruction=ReconstructionConfig(num_inference_steps=4, n_samples=2, methods=("z_only", "oracle")),
            encoding=EncodingOptions(enabled=True, maps=False, cv_folds=3, partition_pairs=[],
                                     alphas=[1.0, 100.0, 10000.0]),
            report=ReportConfig(n_images=2))
        run_pipeline(config, progress=False)
        yield root / "run", config


def test_run_writes_brain_correlation_json(small_run):
    run, _ = small_run
    record = json.loads((run / "brain_correlation.json").read_text())
    assert list(record) == ["space", "rois", "methods", "n_images", "n_samples"]
    assert record["space"] == "z" and record["rois"] == ["early", "ventral"]
    assert (record["n_images"], record["n_samples"]) == (8, 2)
    assert sorted(record["methods"]) == ["oracle", "seen", "z_only"]
    for method, values in record["methods"].items():
        assert list(values) == ["early", "ventral"], method
        assert all(-1 <= v <= 1 for v in values.values()), (method, values)
    assert json.loads((run / "timings.json").read_text())["brain_correlation"] >= 0


def test_seen_beats_a_shuffled_control(small_run):
    run, _ = small_run
    record = json.loads((run / "brain_correlation.json").read_text())
    model = read_encoding_model(run / "encoding" / "results.h5")
    prepared = PreparedData(run / "prepared" / "subj01.h5")
    responses, ids = prepared.test(model.roi)
    z = next((run / "features").glob("*_z.h5"))
    seen_z = FeatureStore.open(z).read(ids)[:, None]
    masks = summary_masks(prepared.path, prepared.positions(model.roi), ["early", "ventral"])
    shuffled = [brain_correlation(model, seen_z, responses[np.roll(np.arange(len(ids)), k)], masks)
                for k in range(1, len(ids))]
    for roi in ("early", "ventral"):
        control = float(np.mean([s[roi] for s in shuffled]))
        assert record["methods"]["seen"][roi] >= control, (roi, record["methods"]["seen"][roi], control)


def test_the_stage_is_done_until_the_record_disagrees_and_its_command_agrees(small_run, tmp_path):
    run, config = small_run
    stage = get_stage("brain_correlation")
    ctx = StageContext(config, progress=False)
    assert stage.enabled(config) and stage.needs_model(config) and stage.is_done(ctx)
    assert not stage.enabled(dataclasses.replace(config, encoding=EncodingOptions(enabled=False)))
    other = dataclasses.replace(config, encoding=dataclasses.replace(config.encoding, summary_rois=["early"]))
    assert not stage.is_done(StageContext(other, progress=False))
    out = tmp_path / "bc.json"
    z = next((run / "features").glob("*_z.h5"))
    assert main(["brain-correlation", "--encoding", str(run / "encoding" / "results.h5"), "--prepared",
                 str(run / "prepared" / "subj01.h5"), "--z-store", str(z), "--recon", str(run / "recon"),
                 "--out", str(out), "--model", config.model, "--batch-size", "5", "--no-progress"]) == 0
    command = json.loads(out.read_text())
    record = json.loads((run / "brain_correlation.json").read_text())
    for method, values in record["methods"].items():
        assert command["methods"][method] == pytest.approx(values, abs=1e-5), method


def test_the_stage_refuses_results_without_the_z_model(small_run, tmp_path):
    run, config = small_run
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.create_dataset("spaces/z/r", data=np.zeros(3))
    z = next((run / "features").glob("*_z.h5"))
    paths = {"encoding": tmp_path / "old.h5", "prepared": run / "prepared" / "subj01.h5", "z_store": z,
             "recon": run / "recon", "out": tmp_path / "bc.json"}
    ctx = StageContext(config, paths=paths, progress=False)
    with pytest.raises(DataFormatError, match="no fitted model '/models/z'"):
        get_stage("brain_correlation").run(ctx)
    ctx = StageContext(config, paths={**paths, "encoding": tmp_path / "none.h5"}, progress=False)
    with pytest.raises(MissingFileError, match="none.h5 not found; run `brain2image encode` first"):
        get_stage("brain_correlation").run(ctx)
    assert not (tmp_path / "bc.json").exists()


def test_encode_is_done_again_for_results_without_the_z_model(small_run, tmp_path):
    import shutil

    run, config = small_run
    encode = get_stage("encode")
    assert encode.is_done(StageContext(config, progress=False))
    shutil.copytree(run / "encoding", tmp_path / "run" / "encoding")
    with h5py.File(tmp_path / "run" / "encoding" / "results.h5", "a") as f:
        del f["models"]
    copy = dataclasses.replace(config, out_dir=str(tmp_path / "run"))
    assert not encode.is_done(StageContext(copy, progress=False))
