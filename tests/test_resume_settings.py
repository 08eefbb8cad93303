"""A run folder remembers what each stage computed (``stages/<name>.json``); a resume with other settings is refused.

Through the real CLI on a tiny study (tiny random LDM, 8 test images, no encoding): a changed
``[reconstruction] n_samples`` or ``methods`` is one line naming the stage, the setting, its old and
new value and the two ways out, with nothing written; ``--redo reconstruct`` recomputes it and the
stages after it; unchanged settings, or other ``threads``, resume silently; a folder without records
is recorded on its first resume; a plug-in stage records its own table.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from ldm_dummy import single_torch_thread
from splittable_stage import SquaresStage
from study_fixtures import one_error_line, tiny_study

from brain2image.cli import main
from brain2image.errors import DataFormatError
from brain2image.pipeline import load_run_config, run_pipeline
from brain2image.stages import register_stage, unregister_stage

#: The tiny run's config, ``{out_dir}`` and the study's paths filled in by :func:`_write_config`.
CONFIG = """\
nsd_root = "{nsd}"
out_dir = "{out}"
model = "{model}"
{top}
[decoder]
alphas = [1.0, 100.0, 10000.0]
cv_folds = 3

[reconstruction]
num_inference_steps = 4
n_samples = {n_samples}
methods = {methods}

[encoding]
enabled = false

[report]
n_images = 2
"""


def _write_config(path: Path, study: dict, out: Path, *, n_samples: int = 2, methods=("z_only", "c_only"),
                  top: str = "") -> Path:
    methods_text = "[" + ", ".join(f'"{m}"' for m in methods) + "]"
    path.write_text(CONFIG.format(nsd=study["nsd"], model=study["model"], out=out, top=top, n_samples=n_samples,
                                  methods=methods_text))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    with single_torch_thread():
        root = tmp_path_factory.mktemp("resume_settings")
        simulated, model_dir = tiny_study(root)
        study = {"nsd": str(simulated.nsd_root), "model": str(model_dir)}
        config = _write_config(root / "run.toml", study, root / "run")
        assert main(["run", str(config), "--no-progress"]) == 0
        yield root / "run", study


def _copy(tiny_run, tmp_path, **changes) -> tuple[Path, Path]:
    """A copy of the tiny run folder in ``tmp_path/run`` and a config of it with ``changes``."""
    run, study = tiny_run
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", _write_config(tmp_path / "run.toml", study, tmp_path / "run", **changes)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_every_finished_stage_records_its_settings(tiny_run):
    run, _ = tiny_run
    records = {p.stem: json.loads(p.read_text()) for p in (run / "stages").glob("*.json")}
    assert {"prepare", "features", "fit", "reconstruct", "evaluate", "report"} <= set(records)
    recon = records["reconstruct"]["settings"]
    assert recon["reconstruction.n_samples"] == 2 and recon["reconstruction.methods"] == ["z_only", "c_only"]
    assert records["fit"]["settings"]["decoder.cv_folds"] == 3
    for record in records.values():  # paths, the machine and threads do not shape outputs
        assert not {"nsd_root", "out_dir", "model", "device", "threads"} & set(record["settings"])


@pytest.mark.parametrize(("changes", "words"), [
    ({"n_samples": 1}, "[reconstruction] n_samples = 2, now 1"),
    ({"methods": ("z_only",)}, '[reconstruction] methods = ["z_only", "c_only"], now ["z_only"]'),
])
def test_a_resume_with_other_settings_is_refused_and_writes_nothing(tiny_run, tmp_path, capsys, changes, words):
    run, config = _copy(tiny_run, tmp_path, **changes)
    before = _snapshot(run)
    assert main(["run", str(config), "--no-progress"]) == 2
    err = one_error_line(capsys)
    for word in ("stage reconstruct", words, "another out_dir", "--out", "--redo reconstruct"):
        assert word in err, (word, err)
    assert _snapshot(run) == before


def test_redo_recomputes_the_stage_and_the_stages_after_it(tiny_run, tmp_path):
    run, config = _copy(tiny_run, tmp_path, n_samples=1)
    decoders = {p: p.stat().st_mtime_ns for p in (run / "decoders").glob("*.h5")}
    evaluation = (run / "evaluation.json").stat().st_mtime_ns
    assert main(["run", str(config), "--redo", "reconstruct", "--no-progress"]) == 0
    index = pd.read_csv(run / "recon" / "index.csv")
    assert len(index) == 8 * 1 * 2
    assert not list((run / "recon").rglob("*_1.png"))  # the second samples of the old folder are gone
    assert all(p.stat().st_mtime_ns == t for p, t in decoders.items())  # fit is before reconstruct: kept
    assert (run / "evaluation.json").stat().st_mtime_ns != evaluation
    metrics = json.loads((run / "metrics.json").read_text())  # the report describes the images on disk
    assert {metrics[method]["n_samples"] for method in ("z_only", "c_only")} == {1}
    assert "samples per image: 1." in (run / "report.html").read_text()
    record = json.loads((run / "stages" / "reconstruct.json").read_text())
    assert record["settings"]["reconstruction.n_samples"] == 1
    assert json.loads((run / "run_config.json").read_text())["reconstruction"]["n_samples"] == 1
    assert main(["run", str(config), "--no-progress"]) == 0  # now the folder resumes with n_samples = 1


def test_unchanged_settings_and_other_threads_resume_silently(tiny_run, tmp_path):
    run, config = _copy(tiny_run, tmp_path, top="threads = 1")
    kept = {p: p.stat().st_mtime_ns for p in (*(run / "decoders").glob("*.h5"), *(run / "recon").rglob("*.png"))}
    assert main(["run", str(config), "--no-progress"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())


def test_a_folder_without_records_is_recorded_on_its_first_resume(tiny_run, tmp_path):
    run, config = _copy(tiny_run, tmp_path)
    shutil.rmtree(run / "stages")
    assert main(["run", str(config), "--no-progress"]) == 0
    assert {"prepare", "features", "fit", "reconstruct"} <= {p.stem for p in (run / "stages").glob("*.json")}


def test_redo_of_an_unknown_stage_is_one_line(tiny_run, tmp_path, capsys):
    run, config = _copy(tiny_run, tmp_path)
    before = _snapshot(run)
    assert main(["run", str(config), "--redo", "recon", "--no-progress"]) == 2
    assert "--redo recon: not a stage of this run" in one_error_line(capsys)
    assert _snapshot(run) == before


@dataclasses.dataclass
class PowerSettings:
    """The plug-in stage's own table, ``[powers]``."""

    power: int = dataclasses.field(default=2, metadata={"help": "the power"})


class PowerStage(SquaresStage):
    """tests/splittable_stage.py's toy stage with a settings table of its own."""

    name = "powers"
    settings_class = PowerSettings


def test_a_plugin_stage_records_its_own_table(tiny_run, tmp_path):
    config = dataclasses.replace(load_run_config(_write_config(tmp_path / "run.toml", tiny_run[1], tmp_path / "out")),
                                 stage_settings={"powers": {"power": 3}})
    register_stage(PowerStage)
    try:
        run_pipeline(config, stages=["powers"], progress=False)
        record = json.loads((tmp_path / "out" / "stages" / "powers.json").read_text())
        assert record["settings"] == {"powers.power": 3}
        other = dataclasses.replace(config, stage_settings={"powers": {"power": 4}})
        with pytest.raises(DataFormatError, match=r"stage powers .*\[powers\] power = 3, now 4.*--redo powers"):
            run_pipeline(other, stages=["powers"], progress=False)
        (tmp_path / "out" / "squares.txt").write_text("stale\n")
        run_pipeline(other, stages=["powers"], progress=False, redo=["powers"])
    finally:
        unregister_stage(PowerStage.name)
    assert (tmp_path / "out" / "squares.txt").read_text() != "stale\n"
    assert json.loads((tmp_path / "out" / "stages" / "powers.json").read_text())["settings"] == {"powers.power": 4}
