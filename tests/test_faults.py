"""Fault injection: SIGKILL at every stage boundary and inside heavy stages; each resume ends identical.

A run killed this way resumes to the same outputs as an uninterrupted run, with nothing left partial.

A small run (simulated study, tiny random LDM, every stage and method) runs once uninterrupted
in a child process that counts the calls of each hook of ``fault_child.HOOKS`` per stage. Then
the same run, in the same folder path, is started again and again, each child killed on its cue,
in pipeline order: for each stage, first a kill at a seeded random call inside it (of the hook,
among those the stage calls, that the plan has used least so far: a feature-store write, an HDF5
write before its flush, a temporary file before its rename, a ridge fold, a PNG write or read, an
encoding space), then a kill
right after the stage returns. A last child finishes the run. Every file must then equal the
uninterrupted run's, byte for byte (timings excepted), and no temporary, partial or shard file
may be left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fault_child import HOOKS
from ldm_dummy import save_tiny_ldm, tiny_ldm

from brain2image.embedded.simulate.study import simulate_study
from brain2image.stages import pipeline_stages

SEED = 20261130
CHILD = Path(__file__).with_name("fault_child.py")
CHILD_TIMEOUT_S = 300
#: Attributes of HDF5 outputs that hold a duration.
TIMING_ATTRS = {"fit_seconds"}
#: Hooks whose kill lands before the call (the others after it).
KILL_BEFORE = {"rename"}


def _config(study: Path, model: Path, out_dir: Path) -> str:
    return f"""
nsd_root = "{study / 'nsd'}"
out_dir = "{out_dir}"
model = "{model}"
threads = 1

[decoder]
alphas = [1.0, 100.0, 10000.0]
cv_folds = 3
target_chunk = 64

[reconstruction]
num_inference_steps = 6
n_samples = 2
batch_size = 3
methods = ["z_only", "c_only", "z_plus_c", "oracle"]

[features]
batch_size = 16

[encoding]
enabled = true
cv_folds = 3
banded_n_iter = 3

[report]
n_images = 3
"""


def _child(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(CHILD), str(config), *args], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, env=env)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("timings_s", "timings")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _hdf5_digest(path: Path) -> str:
    """Hash of every dataset and attribute of an HDF5 file, timing attributes (``fit_seconds``) left out."""
    import h5py

    digest = hashlib.sha256()

    def add(name: str, item) -> None:
        digest.update(name.encode())
        for key in sorted(k for k in item.attrs if k not in TIMING_ATTRS):
            digest.update(key.encode() + repr(item.attrs[key]).encode())
        if isinstance(item, h5py.Dataset):
            digest.update(np.ascontiguousarray(item[()]).tobytes())

    with h5py.File(path, "r") as f:
        add("/", f)
        f.visititems(add)
    return digest.hexdigest()


def _fingerprint(run: Path) -> dict[str, str]:
    """Hash of every output file: JSON and HDF5 without their timings; timings.json and the report apart."""
    out = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        name = str(path.relative_to(run))
        if path.name in ("timings.json", "report.html"):
            continue
        if path.suffix == ".h5":
            out[name] = _hdf5_digest(path)
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(_without_timings(json.loads(data)), sort_keys=True).encode()
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def _report_without_timings(run: Path) -> str:
    html = (run / "report.html").read_text()
    return re.sub(r"<h2>Timings</h2><table>.*?</table>", "", html, flags=re.S)


def _plan(counts: dict[str, int], rng: np.random.Generator) -> list[list[str]]:
    """Kill cues in pipeline order: a seeded call inside each stage that has hooks, then its boundary.

    Inside each stage the hook is the one used least so far by the plan (ties drawn with ``rng``),
    so the kills spread over every kind of call; the call number is drawn among the stage's calls.
    """
    cues, used = [], dict.fromkeys(HOOKS, 0)
    for stage in (s.name for s in pipeline_stages()):
        hooks = sorted(key.split("/")[1] for key in counts if key.startswith(f"{stage}/"))
        if hooks:
            fewest = min(used[h] for h in hooks)
            hook = str(rng.choice([h for h in hooks if used[h] == fewest]))
            used[hook] += 1
            k = int(rng.integers(1, counts[f"{stage}/{hook}"] + 1))
            cues.append(["--kill-at", stage, hook, "before" if hook in KILL_BEFORE else "after", str(k)])
        cues.append(["--kill-after-stage", stage])
    return cues


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    simulate_study(root / "study", n_images=300, n_shared=8, n_sessions=1, volume_shape=(12, 14, 10),
                   roi_sizes={"early": 120, "ventral": 120, "midventral": 10, "lateral": 10}, progress=False)
    save_tiny_ldm(tiny_ldm(text="bert"), root / "model")
    config = root / "run.toml"
    config.write_text(_config(root / "study", root / "model", root / "run"))
    counts_path = root / "counts.json"
    done = _child(config, "--count", str(counts_path))
    assert done.returncode == 0, done.stderr
    reference = root / "reference"
    (root / "run").rename(reference)
    return root, config, json.loads(counts_path.read_text()), reference


@pytest.mark.faults
def test_sigkill_at_every_boundary_and_inside_heavy_stages_resumes_to_identical_outputs(small_run):
    root, config, counts, reference = small_run
    cues = _plan(counts, np.random.default_rng(SEED))
    killed = []
    for cue in cues:
        done = _child(config, *cue)
        assert done.returncode in (0, -signal.SIGKILL), (cue, done.stderr[-2000:])
        if done.returncode == -signal.SIGKILL:
            killed.append(" ".join(cue))
    final = _child(config)
    assert final.returncode == 0, final.stderr[-2000:]
    run = root / "run"
    assert _fingerprint(run) == _fingerprint(reference)
    assert _report_without_timings(run) == _report_without_timings(reference)
    leftovers = [p for p in run.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial.h5") or ".shard-" in p.name]
    assert not leftovers
    # Every boundary kill and every kill inside a stage fired: the resumed stages redo exactly the reference's calls.
    assert len(killed) == len(cues), sorted(set(" ".join(c) for c in cues) - set(killed))
    print(f"{len(killed)} SIGKILLs survived: " + "; ".join(killed))
    shutil.rmtree(run)
