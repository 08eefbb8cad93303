"""End-to-end run of the pipeline on a tiny simulated study with a tiny random LDM folder."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from ldm_dummy import save_tiny_ldm, single_torch_thread, tiny_ldm
from study_fixtures import tiny_study

from brain2image.cli import main
from brain2image.config import DecoderConfig, EncodingConfig, ReconstructionConfig, ReportConfig
from brain2image.pipeline import EncodingOptions, RunConfig, load_run_config, run_pipeline


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    with single_torch_thread():
        root = tmp_path_factory.mktemp("pipeline")
        study, model_dir = tiny_study(root)
        config = RunConfig(
            nsd_root=str(study.nsd_root), out_dir=str(root / "run"), model=str(model_dir),
            decoder=DecoderConfig(alphas=[1.0, 100.0, 10000.0], cv_folds=3),
            reconstruction=ReconstructionConfig(num_inference_steps=10, n_samples=2,
                                                methods=("z_only", "c_only", "z_plus_c", "oracle")),
            encoding=EncodingOptions(enabled=True), report=ReportConfig(n_images=3))
        report = run_pipeline(config, progress=False)
        yield root, config, report


def test_pipeline_writes_report_metrics_and_every_stage(tiny_run):
    root, config, report = tiny_run
    run = root / "run"
    assert report == run / "report.html"
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 3 * (1 + 4)  # seen + 4 methods per shown image
    metrics = json.loads((run / "metrics.json").read_text())
    for method in ("z_only", "c_only", "z_plus_c", "oracle"):
        for key in ("pixcorr", "ssim", "id_pixel", "id_semantic", "takagi_pixel", "takagi_semantic"):
            assert np.isfinite(metrics[method][key]), (method, key)
    assert set(metrics["decoding"]) == {"z <- early", "c <- ventral"}
    for stage in ("prepare", "features_z", "features_c", "fit_z", "fit_c", "reconstruct", "evaluate", "encode"):
        assert metrics["timings_s"][stage] >= 0, stage
    index = pd.read_csv(run / "recon" / "index.csv")
    assert len(index) == 8 * 2 * 4
    with h5py.File(run / "prepared" / "subj01.h5", "r") as f:
        assert sorted(f["rois"]) == ["early", "nsdgeneral", "ventral"]
    summary = json.loads((run / "encoding" / "summary.json").read_text())
    assert {"z", "c"} <= set(summary["mean_r"])


def test_pipeline_resumes_without_redoing_work(tiny_run):
    root, config, _ = tiny_run
    run = root / "run"
    before = {p: p.stat().st_mtime_ns for p in (run / "decoders").glob("*.h5")}
    before.update({p: p.stat().st_mtime_ns for p in (run / "recon" / "z_plus_c").glob("*.png")})
    run_pipeline(config, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_pipeline_refuses_to_resume_with_other_weights(tiny_run, tmp_path):
    import dataclasses

    from brain2image.errors import DataFormatError

    root, config, _ = tiny_run
    assert json.loads((root / "run" / "model.json").read_text())["model"] == config.model
    other = save_tiny_ldm(tiny_ldm(text="bert", seed=1), tmp_path / "other_model")
    with pytest.raises(DataFormatError, match="model.json: this run folder was made with model"):
        run_pipeline(dataclasses.replace(config, model=str(other)), progress=False)


def test_run_config_toml_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.toml"
    path.write_text('nsd_root = "nsd"\nout_dir = "/abs/out"\nsubject = 2\n'
                    '[reconstruction]\nstrength = 0.7\nmethods = ["z_plus_c"]\n[decoder]\nalphas = [1.0, 2.0]\n'
                    '[encoding]\ncv_folds = 3\nalphas = [1.0, 10.0]\nmaps = false\n')
    config = load_run_config(path)
    assert config.nsd_root == str(tmp_path / "cfg" / "nsd")
    assert config.out_dir == "/abs/out"
    assert config.subject == 2
    assert config.reconstruction.strength == 0.7 and config.reconstruction.methods == ("z_plus_c",)
    assert config.decoder.alphas == [1.0, 2.0]
    analysis = config.encoding.analysis_config()
    assert type(analysis) is EncodingConfig and config.encoding.enabled
    assert (analysis.cv_folds, analysis.alphas, analysis.maps, analysis.roi) == (3, [1.0, 10.0], False, "nsdgeneral")


def test_run_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('nsd_root = "nsd"\nout_dir = "out"\n[reconstruction]\nstrenght = 0.7\n')
    assert main(["run", str(path)]) == 2


def test_example_config_parses():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "nsd_subj01_sd14.toml"
    config = load_run_config(example)
    assert config.model == "CompVis/stable-diffusion-v1-4"
    assert config.features.z_resolution == 320
    assert config.reconstruction.guidance_scale == 5.0 and config.reconstruction.n_samples == 5


def _copy_run(tiny_run, tmp_path):
    import dataclasses
    import shutil

    root, config, _ = tiny_run
    shutil.copytree(root / "run", tmp_path / "run")
    return dataclasses.replace(config, out_dir=str(tmp_path / "run"))


def test_run_computes_the_zc_spaces_the_config_names(tiny_run, tmp_path):
    """A [zc] table makes run compute z_c / U-Net stores with the encode command's code, and model them.

    Over a folder whose encode ran without one: refused, then recomputed with ``--redo encode``.
    """
    import dataclasses

    from brain2image.config import ZcConfig
    from brain2image.errors import DataFormatError
    from brain2image.formats.feature_store import FeatureStore

    config = dataclasses.replace(_copy_run(tiny_run, tmp_path), zc=ZcConfig(
        zc_strengths=[0.5], num_inference_steps=4, unet_layers=["mid_block"], unet_steps=[1.0], batch_size=4))
    run = tmp_path / "run"
    decoders = {p: p.stat().st_mtime_ns for p in (run / "decoders").glob("*.h5")}
    with pytest.raises(DataFormatError, match=r"stage encode .*\[zc\].*--redo encode"):  # encode ran without [zc]
        run_pipeline(config, progress=False)
    run_pipeline(config, progress=False, redo=["encode"])
    names = {"zc_0.5", "unet_mid_block_s0.5_t1"}
    assert {p.stem for p in (run / "features_zc").glob("*.h5")} == names
    summary = json.loads((run / "encoding" / "summary.json").read_text())
    assert names | {"z", "c"} <= set(summary["mean_r"])
    assert all(p.stat().st_mtime_ns == t for p, t in decoders.items())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timings_s"]["features_zc"] >= 0
    # The encode command computes the same store from the same z and c.
    stores = {f: next((run / "features").glob(f"*_{f}.h5")) for f in ("z", "c")}
    out = tmp_path / "cmd"
    assert main(["encode", "--prepared", str(run / "prepared" / "subj01.h5"), "--features", f"z={stores['z']}",
                 "--features", f"c={stores['c']}", "--out", str(out), "--model", config.model, "--zc-strengths",
                 "0.5", "--num-inference-steps", "4", "--unet-layers", "--batch-size", "4", "--no-maps",
                 "--cv-folds", "3", "--no-progress"]) == 0
    np.testing.assert_array_equal(FeatureStore.open(out / "features_zc" / "zc_0.5.h5").read(),
                                  FeatureStore.open(run / "features_zc" / "zc_0.5.h5").read())
    assert "zc_0.5" in json.loads((out / "encoding" / "summary.json").read_text())["mean_r"]


def test_a_registered_stage_runs_in_run(tiny_run, tmp_path):
    """One Stage class, registered, runs in `run` in its place, with its [table] from the config."""
    import dataclasses

    from test_stages import DecodingTableStage, registered

    config = dataclasses.replace(_copy_run(tiny_run, tmp_path),
                                 stage_settings={"decoding_table": {"float_format": "%.3f"}})
    with registered(DecodingTableStage, after="fit"):
        run_pipeline(config, progress=False)
    table = pd.read_csv(tmp_path / "run" / "decoding.csv")
    assert list(table.target) == ["z", "c"] and list(table.roi) == ["early", "ventral"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert table.mean_r[0] == pytest.approx(metrics["decoding"]["z <- early"]["mean_r"], abs=1e-3)
    assert metrics["timings_s"]["decoding_table"] >= 0
