"""Plain and Ray runs compute the same bytes, for ``threads = 1`` and ``2`` and for 1 and 2 Ray workers.

A one-subject tiny study runs once per thread count on one process and on a local Ray of 2 CPUs,
in 2 shards, with ``[features] batch_size = 32`` (300 images: shards cut in the middle would
batch other images together than one pass does) and ``[reconstruction] batch_size = 3`` (8 test
images: 6 + 2, not 4 + 4); the shards cut at the batch grid. Every PNG must be the same bytes and
``metrics.json`` the same (but for the timings).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from study_fixtures import tiny_study

from brain2image.cli import main
from brain2image.cluster.ray_runner import run_on_ray
from brain2image.config import ReconstructionConfig, load_run_config
from brain2image.formats.partitions import shard_ids
from brain2image.stages.reconstruct import batch_unit
from brain2image.threads import pinned_threads, resolve_threads

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent


def _write_config(path: Path, nsd_root, out_dir: Path, model: Path, threads: int) -> Path:
    """A one-subject run config without the encoding analysis; batches of 32 features, 3 reconstructions."""
    path.write_text(f'nsd_root = "{nsd_root}"\nout_dir = "{out_dir}"\nmodel = "{model}"\nsubject = 1\n'
                    f"threads = {threads}\n[features]\nbatch_size = 32\n"
                    "[decoder]\nalphas = [1.0, 100.0, 10000.0]\ncv_folds = 3\n"
                    '[reconstruction]\nnum_inference_steps = 3\nn_samples = 1\nbatch_size = 3\n'
                    'methods = ["z_only", "z_plus_c"]\n[encoding]\nenabled = false\n[report]\nn_images = 2\n')
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The small simulated study, a tiny model, and a folder for the configs and runs."""
    root = tmp_path_factory.mktemp("ray_determinism")
    tree, model = tiny_study(root)
    return root, tree.nsd_root, model


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs whose workers import the tests' modules."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def plain_runs(study):
    """The run on one process, with ``threads = 1`` and ``2``: out folder by thread count."""
    root, nsd_root, model = study
    outs = {}
    for threads in (1, 2):
        config = _write_config(root / f"plain{threads}.toml", nsd_root, root / f"plain{threads}", model, threads)
        assert main(["--no-progress", "run", str(config)]) == 0
        outs[threads] = root / f"plain{threads}"
    return outs


def _pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _metrics(folder: Path) -> dict:
    (path,) = folder.rglob("metrics.json")
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "timings_s"}


def test_shards_cut_at_the_batch_grid():
    """With 3 draws a batch, 2 shards of 8 ids take 6 and 2 (not 4 and 4); 1 draw a batch: an even split."""
    ids = np.arange(8) * 7
    config = ReconstructionConfig(batch_size=3, n_samples=1, methods=["z_only", "z_plus_c"])
    assert batch_unit(config) == 3
    assert [len(shard_ids(ids, (i, 2), batch_unit(config))) for i in (1, 2)] == [6, 2]
    assert batch_unit(ReconstructionConfig(batch_size=4, n_samples=2, methods=["z_plus_c"])) == 2
    assert [len(shard_ids(ids, (i, 3))) for i in (1, 2, 3)] == [3, 3, 2]


def test_pinned_threads_restores():
    """The count is set inside the block (torch) and restored after it."""
    import torch

    before = torch.get_num_threads()
    with pinned_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert resolve_threads(None) == before and resolve_threads(3) == 3


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cpus_per_task", [1, 2], ids=["2-workers", "1-worker"])
def test_plain_and_ray_same_bytes(study, plain_runs, local_ray, threads, cpus_per_task):
    """Ray with 2 shards (2 tasks at once, or one at a time) writes the plain run's PNGs and metrics."""
    root, nsd_root, model = study
    out = root / f"ray{threads}-{cpus_per_task}"
    config = load_run_config(_write_config(root / f"{out.name}.toml", nsd_root, out, model, threads))
    run_on_ray(config, n_shards=2, cpus_per_task=cpus_per_task, progress=False)
    plain = plain_runs[threads]
    expected, got = _pngs(plain), _pngs(out)
    assert expected and sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []
    assert _metrics(out) == _metrics(plain)
    assert [_test_ids(out, i) for i in (1, 2)] == [6, 2]  # reconstructed in 2 shards, cut at the batch grid


def _test_ids(folder: Path, i: int) -> int:
    """How many test images shard ``i`` of 2 reconstructed (its ``index.shard-i-of-2.csv``)."""
    import csv

    (path,) = folder.rglob(f"index.shard-{i}-of-2.csv")
    with path.open(newline="") as rows:
        return len({row["test_id"] for row in csv.DictReader(rows)})
