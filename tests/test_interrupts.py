"""SIGINT and SIGTERM end a command in one line (status 130 / 143); the rerun resumes to identical outputs.

The end-to-end test runs a small ``brain2image run`` in child processes (``fault_child.py``, as
the fault suite): SIGTERM right after the first feature-store write, SIGINT right after the first
PNG (progress shown), then the same command to the end; the resumed runs say what they skip, every
output must equal an uninterrupted run's (timings excepted) and no temporary file may be left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ldm_dummy import save_tiny_ldm, tiny_ldm
from test_faults import _fingerprint, _report_without_timings

from brain2image.cli import main
from brain2image.config import RunConfig
from brain2image.embedded.simulate.study import simulate_study
from brain2image.interrupts import Interrupted, interrupted_message, interrupted_status, signals_interrupt
from brain2image.stages import get_stage
from brain2image.stages.base import StageContext, stage_guard

CHILD = Path(__file__).with_name("fault_child.py")
RESUME = "finished work is kept — rerun the same command to resume"


def _config(study: Path, model: Path, out_dir: Path) -> str:
    return f"""
nsd_root = "{study / 'nsd'}"
out_dir = "{out_dir}"
model = "{model}"
threads = 1

[decoder]
alphas = [1.0, 100.0]
cv_folds = 2

[reconstruction]
num_inference_steps = 2
n_samples = 1
batch_size = 1
methods = ["z_only", "z_plus_c"]

[features]
batch_size = 8

[encoding]
enabled = false

[report]
n_images = 2
"""


def _child(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(CHILD), str(config), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if ".tmp" in p.name]


def _one_interrupt_line(done: subprocess.CompletedProcess, status: int, stage: str) -> None:
    assert done.returncode == status, done.stderr[-2000:]
    assert done.stderr.endswith(f"\nbrain2image run: interrupted during {stage}; {RESUME}\n"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.count("interrupted") == 1, done.stderr[-2000:]


@pytest.mark.slow
def test_sigterm_and_sigint_end_in_one_line_and_the_rerun_resumes_to_identical_outputs(tmp_path):
    simulate_study(tmp_path / "study", n_images=300, n_shared=8, n_sessions=1, volume_shape=(12, 14, 10),
                   roi_sizes={"early": 120, "ventral": 120, "midventral": 10, "lateral": 10}, progress=False)
    save_tiny_ldm(tiny_ldm(), tmp_path / "model")
    config = tmp_path / "run.toml"
    config.write_text(_config(tmp_path / "study", tmp_path / "model", tmp_path / "run"))
    done = _child(config)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = tmp_path / "reference"
    (tmp_path / "run").rename(reference)

    run = tmp_path / "run"
    _one_interrupt_line(_child(config, "--signal", "SIGTERM", "--kill-at", "features", "store_write", "after", "1"),
                        143, "features")
    assert not _temporaries(run) and list(run.rglob("*.partial.h5"))
    # With progress shown: the features store the SIGTERM left is resumed, and said so beside the bars.
    done = _child(config, "--signal", "SIGINT", "--kill-at", "reconstruct", "png_write", "after", "1", "--progress")
    _one_interrupt_line(done, 130, "reconstruct")
    assert re.search(r"(^|\r)features z: [1-9][0-9]* of [0-9]+ images already done$", done.stderr, re.M), done.stderr
    assert not _temporaries(run) and not list(run.rglob("*.partial.h5"))

    final = _child(config, "--progress")
    assert final.returncode == 0, final.stderr[-2000:]
    for line in ("stage prepare: done, skipped", "stage features: done, skipped", "stage fit: done, skipped"):
        assert line in final.stderr.splitlines()
    assert re.search(r"^reconstruct z_only: 1 of \d+ images on disk$", final.stderr, re.M), final.stderr
    assert _fingerprint(run) == _fingerprint(reference)
    assert _report_without_timings(run) == _report_without_timings(reference)
    assert not _temporaries(run) and not list(run.rglob("*.partial.h5"))


def test_a_signal_in_a_stage_names_it_and_leaves_the_former_handlers(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stage = get_stage("fit")
    ctx = StageContext(RunConfig(out_dir=str(tmp_path)), progress=False)
    with pytest.raises(Interrupted) as caught, signals_interrupt(), stage_guard(stage, ctx):
        os.kill(os.getpid(), signal.SIGTERM)
    assert (caught.value.signum, caught.value.stage, interrupted_status(caught.value)) == (signal.SIGTERM, "fit", 143)
    assert interrupted_message("run", caught.value) == f"brain2image run: interrupted during fit; {RESUME}"
    assert {s: signal.getsignal(s) for s in before} == before
    # A Ctrl-C raised as a plain KeyboardInterrupt (no handler of ours) is named the same way.
    with pytest.raises(Interrupted) as caught, stage_guard(stage, ctx):
        raise KeyboardInterrupt
    assert (caught.value.stage, interrupted_status(caught.value)) == ("fit", 130)


def test_ctrl_c_outside_a_stage_is_one_line_with_status_130(monkeypatch, capsys, tmp_path):
    import brain2image.commands.merge as merge

    monkeypatch.setattr(merge, "merge_target", lambda *a, **k: os.kill(os.getpid(), signal.SIGINT))
    assert main(["merge", str(tmp_path / "x.h5")]) == 130
    assert capsys.readouterr().err == f"brain2image merge: interrupted; {RESUME}\n"
