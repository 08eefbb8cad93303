"""``brain2image run CONFIG --ray``: the stages as Ray tasks on a local Ray of 2 CPUs.

A two-subject tiny study runs once on one process and once on Ray (with one reconstruction shard
made to fail once, after its first image); both must give the same images and metrics.
"""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ldm_dummy import save_tiny_ldm, tiny_ldm

from brain2image.cli import main
from brain2image.cluster.plan import StagePlan, plan_stage, plan_subject
from brain2image.cluster.ray_runner import run_on_ray
from brain2image.cluster.tasks import TransientTaskError, finish_task, retry_transient, run_task
from brain2image.config import RunConfig, load_run_config
from brain2image.embedded.simulate.study import simulate_study
from brain2image.errors import DataFormatError, MissingFileError
from brain2image.stages import Split, get_stage, pipeline_stages, register_stage, unregister_stage
from brain2image.stages.encode import EncodePart
from brain2image.stages.fit import FitPart

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent
#: Environment variable naming the marker file whose presence makes one image write fail once:
#: the worker raises an OSError that can pass (a stale NFS handle), or, when the marker reads "kill",
#: dies (``os._exit``).
FAIL_MARKER_ENV = "BRAIN2IMAGE_TEST_FAIL_MARKER"
#: Environment variable naming the file where workers log each image they write.
WRITE_LOG_ENV = "BRAIN2IMAGE_TEST_WRITE_LOG"
_SMALL_ROIS = {"early": 120, "ventral": 120, "midventral": 10, "lateral": 10}


def inject_failure_once() -> None:
    """Ray worker setup hook: log each image written; the first one written while the marker exists fails."""
    marker, log = os.environ.get(FAIL_MARKER_ENV), os.environ.get(WRITE_LOG_ENV)
    if not marker or not log:
        return
    from brain2image.formats.recon_index import ReconFolder

    original = ReconFolder.write_image

    def write_image(self, *args, **kwargs):
        path = original(self, *args, **kwargs)
        with open(log, "a") as out:
            out.write(f"{path}\n")
        try:
            os.rename(marker, marker + ".consumed")  # atomic: one worker, once
        except FileNotFoundError:
            return path
        if Path(marker + ".consumed").read_text() == "kill":
            os._exit(1)
        raise OSError(errno.ESTALE, f"injected failure after writing {path}")

    ReconFolder.write_image = write_image


def _write_config(path, nsd_root, out_dir, model) -> Path:
    """A run config of two subjects.

    The decoders solve 48 targets at a time (so that c is fitted in parts on Ray); the encoding models
    z, c, one z_c level and one U-Net layer, with the z|c partition.
    """
    path.write_text(f'nsd_root = "{nsd_root}"\nout_dir = "{out_dir}"\nmodel = "{model}"\nsubjects = [1, 2]\n'
                    "[features]\nbatch_size = 1\n"
                    "[decoder]\nalphas = [1.0, 100.0, 10000.0]\ncv_folds = 3\ntarget_chunk = 48\n"
                    '[reconstruction]\nnum_inference_steps = 4\nn_samples = 1\nmethods = ["z_only", "z_plus_c"]\n'
                    '[encoding]\nmaps = false\ncv_folds = 3\nbanded_n_iter = 4\nsummary_rois = ["early"]\n'
                    '[zc]\nzc_strengths = [0.5]\nnum_inference_steps = 4\nunet_layers = ["mid_block"]\n'
                    "unet_steps = [0.5]\n[report]\nn_images = 2\n")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A two-subject simulated tree, a tiny model, and a run config for each way of running.

    One image per features batch, so that shards batch the images as one pass does (same floats).
    """
    root = tmp_path_factory.mktemp("ray_study")
    tree = simulate_study(root / "study", n_images=300, n_shared=8, n_sessions=1, volume_shape=(12, 14, 10),
                          roi_sizes=_SMALL_ROIS, n_subjects=2, progress=False)
    model = save_tiny_ldm(tiny_ldm(text="bert"), root / "tiny_model")
    configs = {name: _write_config(root / f"{name}.toml", tree.nsd_root, root / name, model)
               for name in ("sequential", "ray")}
    return root, configs


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray of 2 CPUs whose workers fail once when the marker file exists."""
    folder = tmp_path_factory.mktemp("fault")
    marker, log = folder / "fail_once", folder / "written.log"
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {FAIL_MARKER_ENV: str(marker), WRITE_LOG_ENV: str(log), "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "test_ray.inject_failure_once"})
    yield marker, log
    ray.shutdown()


@pytest.fixture(scope="module")
def both_runs(study, local_ray):
    """The study run on one process, then on Ray (``--ray``, joining the session) with one failure injected."""
    import torch
    from threadpoolctl import threadpool_limits

    root, configs = study
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):  # as the Ray workers of 1 CPU: the same sums in the same order
            assert main(["--no-progress", "run", str(configs["sequential"])]) == 0
        local_ray[0].write_text("raise")
        assert main(["--no-progress", "run", str(configs["ray"]), "--ray"]) == 0
    finally:
        torch.set_num_threads(threads)
    injected = Path(f"{local_ray[0]}.consumed").read_text()  # what the failing worker did
    return root, local_ray, injected


def _pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _metrics(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "timings_s"}


def _hdf5_arrays(path: Path) -> dict:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def _same_arrays(a: dict, b: dict) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def test_ray_run_gives_the_sequential_outputs(both_runs):
    root, _, _ = both_runs
    for subject in ("subj01", "subj02"):
        sequential, on_ray = root / "sequential" / subject, root / "ray" / subject
        images = _pngs(sequential / "recon")
        assert len(images) == 8 * 2 and images == _pngs(on_ray / "recon")
        assert _metrics(sequential / "metrics.json") == _metrics(on_ray / "metrics.json")
        times = json.loads((on_ray / "timings.json").read_text())
        assert {"prepare", "features_z", "features_c", "fit_z", "fit_c", "reconstruct", "evaluate", "features_zc",
                "encode"} <= set(times)
        assert (on_ray / "recon" / "index.shard-2-of-2.csv").is_file()
        # c fitted in two parts, merged; the encoding fitted per space and pair, assembled
        decoders = sorted(p.name for p in (on_ray / "decoders").iterdir())
        assert len(decoders) == 2 and not any(".part-" in name for name in decoders)
        for name in decoders:
            assert _same_arrays(_hdf5_arrays(sequential / "decoders" / name), _hdf5_arrays(on_ray / "decoders" / name))
        assert _same_arrays(_hdf5_arrays(sequential / "encoding" / "results.h5"),
                            _hdf5_arrays(on_ray / "encoding" / "results.h5"))
        summary = json.loads((on_ray / "encoding" / "summary.json").read_text().replace(str(on_ray), "RUN"))
        assert set(summary["mean_r"]) == {"z", "c", "zc_0.5", "unet_mid_block_s0.5_t0.5"}
        assert summary == json.loads((sequential / "encoding" / "summary.json").read_text().replace(str(sequential),
                                                                                                   "RUN"))
        assert not (on_ray / "encoding" / "parts").exists()
    assert json.loads((root / "sequential" / "summary.json").read_text()) == \
        json.loads((root / "ray" / "summary.json").read_text())
    assert (root / "ray" / "report.html").is_file()


def test_task_failing_once_mid_shard_is_retried(both_runs):
    root, (marker, log), injected = both_runs
    assert injected == "raise" and not marker.exists()  # a shard raised once, then the run finished
    written = [line for line in log.read_text().splitlines() if line.startswith(str(root / "ray"))]
    assert len(written) == 2 * 16 and len(set(written)) == len(written)  # the retry kept the image written


def test_killed_worker_reruns_only_its_shard(both_runs, tmp_path):
    root, (marker, log), _ = both_runs
    folder, single = _copied_subject(root, tmp_path)
    shutil.rmtree(folder / "recon")
    marker.write_text("kill")
    run_on_ray(single, n_shards=2, stages=["reconstruct"], progress=False)
    assert Path(str(marker) + ".consumed").read_text() == "kill" and not marker.exists()  # a worker died
    assert _pngs(folder / "recon") == _pngs(root / "sequential" / "subj01" / "recon")
    written = [line for line in log.read_text().splitlines() if line.startswith(str(folder))]
    assert len(written) == 16 and len(set(written)) == 16  # each image once: the rerun redid only what was missing


def _plan(config: RunConfig, stage: str, n: int = 2) -> StagePlan:
    """The plan of one stage split in ``n`` (shards and target parts)."""
    return plan_stage(get_stage(stage), config, Split(shards=n, target_parts=n))


def _finish(plan: StagePlan) -> None:
    finish_task(plan.stage, plan.config, plan.specs)


def _run_piece(plan: StagePlan, part) -> None:
    """Run the task of ``plan`` whose part is ``part``."""
    (task,) = [task for task in plan.tasks if task.spec.part == part]
    run_task(task)


def test_merge_refuses_an_incomplete_set_of_shards(both_runs, tmp_path):
    root, _, _ = both_runs
    folder, single = _copied_subject(root, tmp_path)
    (folder / "recon" / "index.csv").unlink()
    (folder / "recon" / "index.shard-2-of-2.csv").unlink()
    with pytest.raises(DataFormatError, match="shard 2/2 missing"):
        _finish(_plan(single, "reconstruct"))
    store = next(p for p in (folder / "features").glob("*_z.h5") if ".shard-" not in p.name)
    store.unlink()
    next((folder / "features").glob("*_z.shard-2-of-2.h5")).unlink()
    with pytest.raises(DataFormatError, match="shard 2/2 missing"):
        _finish(_plan(single, "features"))
    assert not store.exists()


def test_finishing_refuses_missing_decoder_and_encoding_parts(both_runs, tmp_path):
    root, _, _ = both_runs
    folder, single = _copied_subject(root, tmp_path)
    (folder / "decoders" / "subj01_c_ventral.h5").unlink()
    fit = _plan(single, "fit")
    _run_piece(fit, FitPart("c", (1, 2)))
    with pytest.raises(MissingFileError, match=r"part 2/2 missing: \S*subj01_c_ventral\.part-2-of-2\.h5"):
        _finish(fit)
    assert not (folder / "decoders" / "subj01_c_ventral.h5").exists()
    # 128 c targets in blocks of 48: of 4 parts, the 4th holds none and its task fits nothing
    _run_piece(_plan(single, "fit", 4), FitPart("c", (4, 4)))
    assert sorted(p.name for p in (folder / "decoders").iterdir()) == ["subj01_c_ventral.part-1-of-2.h5",
                                                                        "subj01_z_early.h5"]
    shutil.rmtree(folder / "encoding")
    encode = _plan(single, "encode")
    _run_piece(encode, EncodePart("z"))
    with pytest.raises(MissingFileError, match=r"encoding part\(s\) \['c', 'zc_0\.5'"):
        _finish(encode)
    assert not (folder / "encoding" / "summary.json").exists()


def _copied_subject(root: Path, tmp_path: Path) -> tuple[Path, RunConfig]:
    """A copy of subject 1's Ray run folder in ``tmp_path`` and its one-subject config."""
    folder = tmp_path / "subj01"
    shutil.copytree(root / "ray" / "subj01", folder)
    return folder, _subject_config(root, folder)


def _subject_config(root: Path, folder: Path) -> RunConfig:
    import dataclasses

    from brain2image.pipeline import subject_configs

    first = subject_configs(load_run_config(root / "ray.toml"))[0]
    return dataclasses.replace(first, out_dir=str(folder))


def test_unreachable_address_is_one_line_before_anything_is_written(study, tmp_path, capsys):
    root, configs = study
    config = _write_config(tmp_path / "run.toml", load_run_config(configs["ray"]).nsd_root, tmp_path / "out",
                           root / "tiny_model")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["run", str(config), "--ray", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("brain2image run: error: --ray 127.0.0.1:")
    assert f"127.0.0.1:{port}" in err and "no Ray cluster reachable" in err
    assert not (tmp_path / "out").exists()


def test_plan_shards_heavy_stages_and_asks_a_gpu_for_device_stages():
    from brain2image.config import ZcConfig

    config = RunConfig(nsd_root="nsd", out_dir="out", device="cuda",
                       zc=ZcConfig(zc_strengths=[0.5], unet_layers=["mid_block"], unet_steps=[0.5]))
    plans = {plan.stage.name: plan for plan in plan_subject(config, pipeline_stages(), n_shards=3)}
    features, reconstruct, fit, prepare = (plans[k] for k in ("features", "reconstruct", "fit", "prepare"))
    assert [t.spec.shard for t in features.tasks] == [(1, 3), (2, 3), (3, 3)]
    assert [t.spec.shard for t in reconstruct.tasks] == [(1, 3), (2, 3), (3, 3)] and reconstruct.needs_finish
    assert features.needs_finish and all(t.joined for t in features.tasks)
    assert [t.spec.part for t in fit.tasks] == [FitPart("z"), FitPart("c", (1, 3)), FitPart("c", (2, 3)),
                                                FitPart("c", (3, 3))]
    assert fit.needs_finish and fit.tasks[-1].label == "subject 1 fit c 3/3"
    assert len(prepare.tasks) == 1 and not prepare.needs_finish and not prepare.tasks[0].joined
    assert features.num_gpus == 1 and prepare.num_gpus == 0
    zc_stores, parts = plans["encode"].steps
    assert [str(t.spec.part) for t in zc_stores] == ["features_zc"] and plans["encode"].needs_finish
    assert [t.spec.part for t in parts] == [EncodePart(name) for name in
                                            ["z", "c", "zc_0.5", "unet_mid_block_s0.5_t0.5", "z|c"]]
    assert plans["encode"].num_gpus == 1 and parts[-1].label == "subject 1 encode z|c"
    cpu = plan_subject(RunConfig(nsd_root="nsd", out_dir="out"), pipeline_stages(), n_shards=1)
    sizes = {plan.stage.name: len(plan.tasks) for plan in cpu}
    assert all(plan.num_gpus == 0 for plan in cpu) and sizes["fit"] == 2 and sizes["encode"] == 3
    assert all(size == 1 for stage, size in sizes.items() if stage not in ("fit", "encode"))
    assert [len(p.tasks) for p in plan_subject(config, pipeline_stages(), 3, target_parts=1)
            if p.stage.name == "fit"] == [2]


@pytest.mark.parametrize(("error", "raised"), [
    (OSError(errno.ESTALE, "Stale file handle"), TransientTaskError),  # retried
    (ray.exceptions.WorkerCrashedError(), TransientTaskError),  # Ray lost a worker
    (RuntimeError("CUDA error: unspecified launch failure"), RuntimeError),  # reported once
    (MissingFileError("prepared/subj01.h5 not found"), MissingFileError),  # bad input: never retried
    (ValueError("a bug"), ValueError),  # retrying would fail the same way
])
def test_only_transient_errors_are_retried(error, raised):
    with pytest.raises(raised) as caught, retry_transient("subject 1 features 1/2"):
        raise error
    assert str(error) in str(caught.value) and (raised is not TransientTaskError or "subject 1" in str(caught.value))


def test_a_registered_stage_splits_itself_on_ray(study, local_ray, tmp_path):
    """The toy stage of tests/splittable_stage.py: 3 tasks and a join on Ray, the bytes of a run without Ray."""
    import dataclasses

    from splittable_stage import SquaresStage

    from brain2image.pipeline import run_pipeline, subject_configs

    _, configs = study
    single = dataclasses.replace(subject_configs(load_run_config(configs["ray"]))[0], out_dir=str(tmp_path / "ray"))
    register_stage(SquaresStage)
    try:
        run_on_ray(single, n_shards=3, stages=["squares"], progress=False)
        run_pipeline(dataclasses.replace(single, out_dir=str(tmp_path / "local")), stages=["squares"],
                     progress=False)
    finally:
        unregister_stage(SquaresStage.name)
    on_ray, local = tmp_path / "ray", tmp_path / "local"
    assert sorted(p.name for p in on_ray.glob("squares*")) == ["squares.shard-1-of-3.txt", "squares.shard-2-of-3.txt",
                                                               "squares.shard-3-of-3.txt", "squares.txt"]
    assert (on_ray / "squares.txt").read_bytes() == (local / "squares.txt").read_bytes()
    assert not list(local.glob("squares.shard-*"))
    assert set(json.loads((on_ray / "timings.json").read_text())) == {"squares"}


def test_a_normal_run_does_not_import_ray(both_runs):
    root, _, _ = both_runs
    code = ("import sys; from brain2image.cli import main; "
            f"assert main(['--no-progress', 'run', {str(root / 'sequential.toml')!r}]) == 0; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
