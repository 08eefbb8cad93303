"""``brain2image run`` on a simulated BIDS study: the ``[source]`` table, the example, several subjects, Ray.

A small simulated BIDS study (two subjects, fMRIPrep-style derivatives) runs end to end from a run
config with ``[source] kind = "bids"`` — single-trial betas estimated by LSS in ``prepare``, then
every stage as for NSD — once on one process and once on a local Ray; both must give the same
images and metrics. ``examples/bids_simulated.toml`` runs as written (with fewer samples).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from ldm_dummy import save_tiny_ldm, tiny_ldm

from brain2image.cli import main
from brain2image.config import load_run_config
from brain2image.embedded.simulate.bids_study import simulate_bids_study
from brain2image.formats.prepared import load_prepared

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_images": 160, "n_test": 8, "n_sessions": 2, "runs_per_session": 2, "trials_per_run": 45, "train_repeats": 1,
         "volume_shape": (12, 14, 10), "roi_sizes": {"early": 120, "ventral": 120, "midventral": 10, "lateral": 10},
         "image_size": 32}
MASK = "{root}/derivatives/rois/{{subject}}/anat/{{subject}}_space-T1w_desc-{name}_mask.nii.gz"


def _config(root: Path, out_dir: Path, model: Path) -> str:
    """A two-subject run config on the BIDS study at ``root`` (LSS betas, the study's ROI masks)."""
    masks = "\n".join(f'{name} = "{MASK.format(root=root, name=name)}"' for name in ("early", "ventral", "visual"))
    return (f'out_dir = "{out_dir}"\nmodel = "{model}"\nsubjects = ["sub-01", "sub-02"]\n'
            f'[source]\nkind = "bids"\nroot = "{root}"\ntask = "images"\nimage_size = 32\n'
            f"[source.roi]\n{masks}\n"
            "[features]\nbatch_size = 1\n"
            "[decoder]\nalphas = [1.0, 100.0, 10000.0]\ncv_folds = 3\ntarget_chunk = 48\n"
            '[reconstruction]\nnum_inference_steps = 4\nn_samples = 1\nmethods = ["z_only", "c_only"]\n'
            '[encoding]\nroi = "visual"\nmaps = false\ncv_folds = 3\nbanded_n_iter = 4\nsummary_rois = ["early"]\n'
            "[report]\nn_images = 2\n")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The two-subject BIDS study, a tiny model and a run config for each way of running."""
    root = tmp_path_factory.mktemp("bids_run")
    simulated = simulate_bids_study(root / "study", seed=1, n_subjects=2, progress=False, **SMALL)
    model = save_tiny_ldm(tiny_ldm(text="bert"), root / "tiny_model")
    configs = {}
    for name in ("sequential", "ray"):
        configs[name] = root / f"{name}.toml"
        configs[name].write_text(_config(simulated.bids_root, root / name, model))
    return root, simulated, configs


@pytest.fixture(scope="module")
def sequential(study):
    """The study run on one process (1 thread: the sums of the Ray workers of 1 CPU)."""
    import torch
    from threadpoolctl import threadpool_limits

    root, _, configs = study
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            assert main(["--no-progress", "run", str(configs["sequential"])]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "sequential"


def test_bids_run_writes_every_subject_from_lss_betas(study, sequential):
    _, simulated, _ = study
    for subject, truth_path in zip(("sub-01", "sub-02"), simulated.truth_paths):
        folder = sequential / subject
        assert (folder / "report.html").is_file() and (folder / "metrics.json").is_file()
        prepared = load_prepared(folder / "prepared" / f"{subject}.h5")
        assert prepared.subject == subject and prepared.attrs["source"] == "bids" and prepared.attrs["glm"] == "lss"
        assert set(prepared.roi_keys) == {"early", "ventral", "visual"} and prepared.ncsnr("early") is not None
        with h5py.File(truth_path, "r") as truth:
            signal = truth["signal"][()]  # (n_images, n_roi_voxels): the noise-free responses
            ijk = truth["voxels/ijk"][()]
        test, ids = prepared.test("early")
        columns = {tuple(v): k for k, v in enumerate(ijk)}
        truth_test = signal[ids][:, [columns[tuple(v)] for v in prepared.ijk("early")]]
        r = [np.corrcoef(test[:, v], truth_test[:, v])[0, 1] for v in range(test.shape[1])]
        assert np.nanmedian(r) > 0.3, np.nanmedian(r)  # LSS betas follow the true responses
    summary = json.loads((sequential / "summary.json").read_text())
    assert summary["subjects"] == ["sub-01", "sub-02"]


def test_bids_run_config_records_the_source(sequential):
    saved = json.loads((sequential / "sub-01" / "run_config.json").read_text())
    assert saved["source"]["kind"] == "bids" and saved["source"]["glm"] == "lss" and "nsd_root" not in saved
    settings = json.loads((sequential / "sub-01" / "stages" / "prepare.json").read_text())["settings"]
    assert settings["source.task"] == "images" and "source.roi" in settings


@pytest.fixture(scope="module")
def on_ray(study, sequential):
    ray = pytest.importorskip("ray")
    root, _, configs = study
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers compute with the driver's count: 1, as the sequential run
    try:
        assert main(["--no-progress", "run", str(configs["ray"]), "--ray"]) == 0
    finally:
        torch.set_num_threads(threads)
        ray.shutdown()
    return root / "ray"


def _pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("recon*/**/*.png"))}


def test_bids_run_on_ray_gives_the_sequential_outputs(sequential, on_ray):
    for subject in ("sub-01", "sub-02"):
        one, many = sequential / subject, on_ray / subject
        assert _pngs(one) and _pngs(one) == _pngs(many)
        metrics = [{k: v for k, v in json.loads((f / "metrics.json").read_text()).items() if k != "timings_s"}
                   for f in (one, many)]
        assert json.dumps(metrics[0], sort_keys=True) == json.dumps(metrics[1], sort_keys=True)


def test_the_bids_example_runs_as_written(tmp_path):
    """``examples/bids_simulated.toml`` on ``simulate --format bids`` output (paths as the example has them)."""
    assert main(["--no-progress", "simulate", "--format", "bids", "--out", str(tmp_path / "bids-study"),
                 "--n-images", "120", "--n-test", "6", "--sessions", "2", "--runs", "2", "--trials-per-run", "35",
                 "--train-repeats", "1", "--image-size", "32"]) == 0
    text = (ROOT / "examples" / "bids_simulated.toml").read_text()
    text = re.sub(r"n_samples = \d+", 'n_samples = 1\nnum_inference_steps = 5', text)  # a test-sized run
    text = text.replace("image_size = 64", "image_size = 32")
    (tmp_path / "examples").mkdir()
    config = tmp_path / "examples" / "bids_simulated.toml"
    config.write_text(text)
    assert Path(load_run_config(config).source.root).resolve() == (tmp_path / "bids-study" / "bids").resolve()
    assert main(["--no-progress", "run", str(config)]) == 0
    run = tmp_path / "bids-study-run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"z_only", "c_only", "z_plus_c", "oracle"} <= set(metrics) and (run / "report.html").is_file()
    assert (run / "encoding" / "summary.json").is_file()
    shutil.rmtree(tmp_path / "bids-study")
