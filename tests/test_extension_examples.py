"""The worked examples of docs/extending.md, run through ``brain2image run`` without editing the core.

``tests/extension_examples/register.py`` (named in the run config's ``plugins``) registers a toy
data source, a third decoder target (``thumb``), a reconstruction method (``z_plus_c_half``) and a
splittable stage (``squares``). The run goes once on one process, once on a local Ray of 2 CPUs
(whose workers import the plug-ins themselves); both must give the same bytes. The ``plugins`` key
itself, and that docs/extending.md quotes the examples' code verbatim, are checked here too.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from study_fixtures import one_error_line

from brain2image.cli import main
from brain2image.config import RunConfig, load_run_config
from brain2image.threads import pinned_threads

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PLUGIN = "extension_examples.register"


@pytest.fixture(scope="module", autouse=True)
def _plugins_removed_afterwards():
    """The examples register themselves when a config names them; remove them after this module's tests."""
    yield
    module = sys.modules.pop(PLUGIN, None)
    if module is not None:
        module.unregister()


def _write_config(path: Path, out_dir: Path, model: Path, extra: str = "") -> Path:
    """The run config of docs/extending.md's example, sized for a test (4 denoising steps, one sample).

    One image per features and per reconstruction batch, so that shards batch the images as one pass
    does (the same floats, so the same PNG bytes).
    """
    path.write_text(f'out_dir = "{out_dir}"\nmodel = "{model}"\nsubject = "sub-01"\nplugins = ["{PLUGIN}"]\n{extra}'
                    '[source]\nkind = "toy"\n'
                    "[features]\nbatch_size = 1\n"
                    '[decoder]\ntargets = {z = "early", c = "ventral", thumb = "early"}\n'
                    "alphas = [1.0, 100.0, 10000.0]\ncv_folds = 3\ntarget_chunk = 48\n"
                    "[reconstruction]\nnum_inference_steps = 4\nn_samples = 1\nbatch_size = 1\n"
                    'methods = ["z_only", "z_plus_c", "z_plus_c_half"]\n'
                    "[encoding]\nenabled = false\n[report]\nn_images = 2\n")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny random BERT LDM (seed 0), as the other end-to-end tests use."""
    from ldm_dummy import save_tiny_ldm, tiny_ldm

    return save_tiny_ldm(tiny_ldm(text="bert"), tmp_path_factory.mktemp("extension_model") / "tiny_model")


# ------------------------------------------------------------------ the plugins key
def test_plugins_are_imported_before_the_sections_are_checked(tmp_path, model):
    config = load_run_config(_write_config(tmp_path / "run.toml", tmp_path / "out", model))
    assert config.plugins == [PLUGIN] and config.source.kind == "toy" and config.nsd_root is None
    assert config.reconstruction.methods == ("z_only", "z_plus_c", "z_plus_c_half")
    assert list(config.decoder.targets) == ["z", "c", "thumb"] and config.subject == "sub-01"
    assert config.to_dict()["plugins"] == [PLUGIN]
    assert "plugins" not in RunConfig(nsd_root="nsd", out_dir="out").to_dict()  # old run_config.json unchanged


@pytest.mark.parametrize(("value", "expected"), [
    ('["no_such_plugin_module"]', "plugins = [\"no_such_plugin_module\"]: cannot import module "
                                  "'no_such_plugin_module' (ModuleNotFoundError: No module named "
                                  "'no_such_plugin_module'); expected an importable module"),
    ('"extension_examples.register"', 'plugins = "extension_examples.register": expected a list of strings'),
])
def test_a_bad_plugins_value_is_one_line_naming_the_key(tmp_path, capsys, value, expected):
    path = tmp_path / "run.toml"
    path.write_text(f'nsd_root = "{tmp_path}"\nout_dir = "{tmp_path / "out"}"\nplugins = {value}\n')
    assert main(["run", str(path)]) == 2
    assert f"{path}: {expected}" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_worker_imports_the_plugins_before_its_task_runs(tmp_path, model):
    """A fresh process (as a Ray worker is) given a pickled task registers the plug-ins, then runs it."""
    from splittable_stage import SquaresStage

    from brain2image.cluster.plan import StageTask
    from brain2image.stages import TaskSpec

    config = load_run_config(_write_config(tmp_path / "run.toml", tmp_path / "out", model))
    (tmp_path / "out").mkdir()
    (tmp_path / "task.pkl").write_bytes(pickle.dumps(StageTask(config, SquaresStage(), TaskSpec(shard=(2, 3)))))
    code = ("import pickle, sys; from brain2image.sources import source_kinds; "
            "from brain2image.cluster.tasks import run_task; "
            f"task = pickle.loads(open({str(tmp_path / 'task.pkl')!r}, 'rb').read()); "
            f"assert 'toy' not in source_kinds() and {PLUGIN!r} not in sys.modules; "
            "run_task(task); assert 'toy' in source_kinds()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "squares.shard-2-of-3.txt").read_text() == "".join(f"{n * n}\n" for n in (4, 5, 6, 7))


# ------------------------------------------------------------------ the four examples through `brain2image run`
SUBJECTS = ("sub-01", "sub-02")
#: Two subjects, and the encoding analysis of the toy's early ROI (z, c and thumb, the z|c partition).
STUDY = ('subjects = ["sub-01", "sub-02"]\n', '[encoding]\nroi = "early"\nsummary_rois = []\nmaps = false\n'
                                              "cv_folds = 3\nbanded_n_iter = 4\n")


def _study_config(root: Path, name: str, model: Path) -> Path:
    path = _write_config(root / f"{name}.toml", root / name, model)
    text = path.read_text().replace('subject = "sub-01"\n', STUDY[0]).replace("[encoding]\nenabled = false\n", STUDY[1])
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, model) -> Path:
    """The examples' study run on one process with one thread (as a Ray worker of 1 CPU: the same sums)."""
    import torch
    from threadpoolctl import threadpool_limits

    root = tmp_path_factory.mktemp("extension_runs")
    config = _study_config(root, "local", model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            assert main(["--no-progress", "run", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def test_the_examples_run_through_brain2image_run(local_run):
    import h5py

    run = local_run / "local" / "sub-01"
    saved = json.loads((run / "run_config.json").read_text())
    assert saved["plugins"] == [PLUGIN] and (saved["source"]["kind"], saved["source"]["root"]) == ("toy", None)
    assert "nsd_root" not in saved and saved["subject"] == "sub-01"
    with h5py.File(run / "prepared" / "sub-01.h5", "r") as prepared:  # the toy source's prepare
        assert prepared.attrs["subject"] == "sub-01" and sorted(prepared["rois"]) == ["early", "ventral"]
    with h5py.File(run / "decoders" / "sub-01_thumb_early.h5", "r") as decoder:  # the third target
        assert decoder["test/pred"].shape == (8, 16, 16) and decoder.attrs["target"] == "thumb"
    assert (run / "features" / "toy_tiny_model_thumb.h5").is_file()
    assert sorted(p.name for p in (run / "recon" / "z_plus_c_half").iterdir()) == [f"{i}_0.png" for i in range(8)]
    assert (run / "squares.txt").read_text() == "".join(f"{n * n}\n" for n in range(12))  # the stage
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"z_only", "z_plus_c", "z_plus_c_half"} <= set(metrics) and "thumb <- early" in metrics["decoding"]
    assert set(metrics["retrieval"]) == {"z", "c", "thumb"} and metrics["retrieval"]["c"]["image"] > 0.5
    assert {"features_thumb", "fit_thumb", "squares"} <= set(json.loads((run / "timings.json").read_text()))
    summary = json.loads((run / "encoding" / "summary.json").read_text())
    assert set(summary["mean_r"]) == {"z", "c", "thumb"}
    report = (run / "report.html").read_text()
    assert "z + c (strength 0.5)" in report and "thumb &lt;- early" in report
    study = json.loads((local_run / "local" / "summary.json").read_text())
    assert study["subjects"] == list(SUBJECTS) and (local_run / "local" / "report.html").is_file()


@pytest.fixture(scope="module")
def ray_run(local_run, model) -> Path:
    """The same study on a local Ray of 2 CPUs whose workers find the plug-ins on ``PYTHONPATH`` (as test_ray's)."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    try:
        with pinned_threads(1):  # the workers use the threads a plain run would use here: one, as the local run
            assert main(["--no-progress", "run", str(_study_config(local_run, "ray", model)), "--ray"]) == 0
    finally:
        ray.shutdown()
    return local_run


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern))}


def _hdf5_datasets(path: Path) -> dict:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def _same_datasets(a: Path, b: Path) -> bool:
    import numpy as np

    first, second = _hdf5_datasets(a), _hdf5_datasets(b)
    return first.keys() == second.keys() and all(
        np.array_equal(first[k], second[k], equal_nan=first[k].dtype.kind == "f") for k in first)


def _metrics(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "timings_s"}


def test_the_examples_on_ray_give_the_bytes_of_one_process(ray_run):
    for subject in SUBJECTS:
        local, on_ray = ray_run / "local" / subject, ray_run / "ray" / subject
        assert len(_files(local / "recon", "*.png")) == 3 * 8 and _files(local / "recon", "*.png") == \
            _files(on_ray / "recon", "*.png")
        assert (on_ray / "recon" / "index.shard-2-of-2.csv").is_file()  # reconstructed in two shards
        decoders = sorted(p.name for p in (on_ray / "decoders").iterdir())
        assert decoders == [f"{subject}_{t}_{roi}.h5" for t, roi in (("c", "ventral"), ("thumb", "early"),
                                                                       ("z", "early"))]
        for name in decoders:
            assert _same_datasets(local / "decoders" / name, on_ray / "decoders" / name), name
        for store in sorted((local / "features").glob("*.h5")):
            assert _same_datasets(store, on_ray / "features" / store.name), store.name
        assert _same_datasets(local / "encoding" / "results.h5", on_ray / "encoding" / "results.h5")
        assert _metrics(local / "metrics.json") == _metrics(on_ray / "metrics.json")
        assert (on_ray / "squares.shard-2-of-2.txt").is_file()  # the toy stage split itself, then joined
        assert (on_ray / "squares.txt").read_bytes() == (local / "squares.txt").read_bytes()
    assert json.loads((ray_run / "local" / "summary.json").read_text()) == \
        json.loads((ray_run / "ray" / "summary.json").read_text())


# ------------------------------------------------------------------ docs/extending.md quotes the tested code
def test_every_quoted_block_of_docs_extending_is_verbatim_in_its_file():
    """A Python block whose first line is ``# <path>`` must appear, line for line, in that file."""
    text = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)
    quoted = [block for block in blocks if block.startswith("# ")]
    assert len(quoted) >= 5  # the registration, the source (two blocks), the target, the method, the stage
    for block in quoted:
        name, _, code = block.partition("\n")
        path = ROOT / name.removeprefix("# ").strip()
        assert path.is_file(), f"docs/extending.md quotes {path}, which does not exist"
        assert code in path.read_text(), f"docs/extending.md: a block no longer matches {path}"
    for example in ("toy_source.py", "thumbnail.py", "register.py"):
        assert f"# tests/extension_examples/{example}\n" in text
    assert "# tests/method_plugins.py\n" in text and "# tests/splittable_stage.py\n" in text
