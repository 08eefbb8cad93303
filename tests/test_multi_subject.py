"""Several subjects in one run: ``subjects = [1, 2]``, per-subject folders, the study summary, simulate --subjects."""

import json
import re

import h5py
import numpy as np
import pytest
import scipy.io
from ldm_dummy import single_torch_thread
from study_fixtures import one_error_line, tiny_study

from brain2image.cli import main
from brain2image.config import RunConfig, load_run_config
from brain2image.embedded.simulate.study import simulate_study
from brain2image.errors import InvalidArgumentError
from brain2image.study_summary import numeric_metrics, summarise_subjects


def _write_config(path, nsd_root, out_dir, model, top: str = "subjects = [1, 2]") -> None:
    path.write_text(f'nsd_root = "{nsd_root}"\nout_dir = "{out_dir}"\nmodel = "{model}"\n{top}\n'
                    "[decoder]\nalphas = [1.0, 100.0, 10000.0]\ncv_folds = 3\n"
                    '[reconstruction]\nnum_inference_steps = 5\nn_samples = 1\nmethods = ["z_only", "z_plus_c"]\n'
                    "[encoding]\nenabled = false\n[report]\nn_images = 2\n")


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A two-subject simulated tree, a tiny model, and ``brain2image run`` of ``subjects = [1, 2]``."""
    with single_torch_thread():
        root = tmp_path_factory.mktemp("multi_subject")
        study, model = tiny_study(root, n_subjects=2)
        config_path = root / "run.toml"
        _write_config(config_path, study.nsd_root, root / "run", model)
        assert main(["--no-progress", "run", str(config_path)]) == 0
        yield root, study, config_path


def test_each_subject_runs_into_its_own_folder(study_run):
    root, _, _ = study_run
    run = root / "run"
    assert json.loads((run / "study_config.json").read_text())["subjects"] == [1, 2]
    for subject in (1, 2):
        folder = run / f"subj{subject:02d}"
        assert (folder / "report.html").is_file() and (folder / "metrics.json").is_file()
        assert (folder / "prepared" / f"subj{subject:02d}.h5").is_file()
        config = json.loads((folder / "run_config.json").read_text())
        assert config["subject"] == subject and config["out_dir"] == str(folder) and "subjects" not in config
    with h5py.File(run / "subj01" / "prepared" / "subj01.h5", "r") as one, \
            h5py.File(run / "subj02" / "prepared" / "subj02.h5", "r") as two:
        assert one["rois/early/ijk"].shape != two["rois/early/ijk"].shape  # different subjects, ROI sizes


def test_summary_rows_are_each_subjects_metrics_with_mean_and_sd(study_run):
    root, _, _ = study_run
    run = root / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["subjects"] == [1, 2] and "ddof=1" in summary["sd"]
    per_subject = [json.loads((run / f"subj{s:02d}" / "metrics.json").read_text()) for s in (1, 2)]
    for row, metrics in zip(summary["rows"], per_subject, strict=True):
        assert row["report"] == f"subj{row['subject']:02d}/report.html"
        for method in ("z_only", "z_plus_c"):
            assert row["metrics"][method] == {k: v for k, v in metrics[method].items()
                                              if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert row["metrics"]["decoding: z <- early"] == metrics["decoding"]["z <- early"]
    for group, names in summary["statistics"].items():
        for name, stat in names.items():
            values = [metrics_row["metrics"][group][name] for metrics_row in summary["rows"]]
            assert stat["mean"] == pytest.approx(np.mean(values)), (group, name)
            assert stat["sd"] == pytest.approx(np.std(values, ddof=1)), (group, name)
            assert stat["n_subjects"] == 2


def test_study_report_links_each_subject_and_centres_headers(study_run):
    root, _, _ = study_run
    page = (root / "run" / "report.html").read_text()
    assert 'href="subj01/report.html"' in page and 'href="subj02/report.html"' in page
    assert re.search(r"th\{[^}]*text-align:center", page)
    assert "sd (ddof=1)" in page and "<script" not in page and 'src="http' not in page
    assert all(' alt="' in tag for tag in re.findall(r"<img[^>]*>", page))


def test_report_on_the_study_folder_rewrites_the_study_report(study_run, capsys):
    root, _, _ = study_run
    run = root / "run"
    before = {name: (run / name).read_bytes() for name in ("summary.json", "report.html")}
    capsys.readouterr()
    assert main(["--no-progress", "report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str((run / "report.html").resolve())
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not (run / "metrics.json").exists()


def test_resumed_study_skips_finished_subjects(study_run):
    root, _, config_path = study_run
    run = root / "run"
    done = [p for s in (1, 2) for p in (run / f"subj{s:02d}" / "decoders").glob("*.h5")]
    done += list((run / "subj02" / "recon").rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in done}
    assert main(["--no-progress", "run", str(config_path)]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_one_subject_config_is_saved_as_before():
    assert "subjects" not in RunConfig(nsd_root="nsd", out_dir="out").to_dict()
    assert RunConfig(nsd_root="nsd", out_dir="out", subjects=[1, 2]).to_dict()["subjects"] == [1, 2]


@pytest.mark.parametrize(("top", "words"), [
    ("subject = 2\nsubjects = [1, 2]", "subject = 2 and subjects = [1, 2]: expected one of the two keys"),
    ("subjects = [1, 1]", "subjects = [1, 1]: expected distinct NSD subjects 1..8"),
    ("subjects = [0, 2]", "subjects = [0, 2]: expected a non-empty list of distinct NSD subjects 1..8"),
    ("subjects = [9]", "subjects = [9]: expected"),
    ("subjects = []", "subjects = []: expected"),
    ('subjects = "1,2"', 'subjects = "1,2": expected'),
])
def test_bad_subjects_are_one_line_errors(tmp_path, capsys, top, words):
    path = tmp_path / "run.toml"
    _write_config(path, tmp_path, tmp_path / "out", "bundled", top=top)
    assert main(["run", str(path)]) == 2
    err = one_error_line(capsys)
    assert words in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_one_subject_is_accepted_as_a_list(tmp_path):
    path = tmp_path / "run.toml"
    _write_config(path, tmp_path, tmp_path / "out", "bundled", top="subjects = [7]")
    assert load_run_config(path).subjects == [7]


def test_missing_subject_is_one_line_before_anything_is_written(study_run, tmp_path, capsys):
    root, study, _ = study_run
    path = tmp_path / "run.toml"
    _write_config(path, study.nsd_root, tmp_path / "out", root / "tiny_model", top="subjects = [1, 3]")
    assert main(["run", str(path)]) == 2
    err = one_error_line(capsys)
    assert "subject 3" in err and str(study.nsd_root / "nsddata" / "ppdata" / "subj03") in err
    assert not (tmp_path / "out").exists()


def test_summary_takes_every_numeric_metric_and_one_subject_has_no_sd(tmp_path):
    (tmp_path / "subj05").mkdir()
    metrics = {"z_plus_c": {"pixcorr": 0.25, "retrieval_top1": 0.5, "note": "text", "flag": True},
               "decoding": {"c <- ventral": {"mean_r": 0.3}}, "timings_s": {"total": 3.0}, "model": "bundled"}
    (tmp_path / "subj05" / "metrics.json").write_text(json.dumps(metrics))
    assert numeric_metrics(metrics) == {"z_plus_c": {"pixcorr": 0.25, "retrieval_top1": 0.5},
                                        "decoding: c <- ventral": {"mean_r": 0.3}}
    summary = summarise_subjects(tmp_path, [5])
    assert summary["statistics"]["z_plus_c"]["retrieval_top1"] == {"mean": 0.5, "sd": None, "n_subjects": 1}


def test_simulate_two_subjects_differ_and_share_the_stimuli(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["--no-progress", "simulate", "--out", str(out), "--n-images", "300", "--n-shared", "8",
                 "--sessions", "1", "--subjects", "2"]) == 0
    assert "simulation_truth_subj02.h5" in capsys.readouterr().out
    nsd = out / "nsd"
    assert len(list(nsd.rglob("nsd_stimuli.hdf5"))) == 1
    assert len(list(nsd.rglob("captions_train2017.json"))) == 1
    marker = json.loads((nsd / "brain2image_simulation.json").read_text())
    one, two = marker["subjects"]["1"], marker["subjects"]["2"]
    assert one["roi_sizes"] != two["roi_sizes"] and one["ncsnr_target"] != two["ncsnr_target"]
    with h5py.File(out / "simulation_truth.h5", "r") as f1, h5py.File(out / "simulation_truth_subj02.h5", "r") as f2:
        assert f1["signal"].shape[1] == sum(one["roi_sizes"].values())
        assert f2["signal"].shape[1] == sum(two["roi_sizes"].values())
        assert f2.attrs["subject"] == 2 and f2.attrs["ncsnr_target"] == two["ncsnr_target"]
        assert not np.array_equal(f1["trial_ids"][:], f2["trial_ids"][:])
    design = scipy.io.loadmat(nsd / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat")
    subjectim = design["subjectim"]
    assert subjectim.shape == (2, 300)
    assert np.array_equal(subjectim[0, :8], subjectim[1, :8]) and not np.array_equal(subjectim[0], subjectim[1])
    assert sorted(subjectim[0]) == sorted(subjectim[1])
    for subject in ("subj01", "subj02"):
        assert (nsd / "nsddata" / "ppdata" / subject / "behav" / "responses.tsv").is_file()
        assert (nsd / "nsddata_betas" / "ppdata" / subject / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
                / "betas_session01.hdf5").is_file()


def test_simulate_refuses_more_than_eight_subjects(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"n_subjects = 9: expected an integer in \[1, 8\]"):
        simulate_study(tmp_path / "sim", n_subjects=9, progress=False)
    assert not (tmp_path / "sim").exists()
