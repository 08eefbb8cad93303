"""``brain2image simulate --format bids``: a simulated image experiment as BIDS + fMRIPrep, with ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids import BIDSLayout

from brain2image.cli import main
from brain2image.embedded.simulate.bids_study import (
    SimulatedBidsStudy,
    bold_noise_sd,
    make_bids_design,
    simulate_bids_study,
)
from brain2image.errors import InvalidArgumentError
from brain2image.glm.single_trial import single_trial_betas

#: A tiny study: 3 sessions of 2 runs, 48 images of which 12 test images shown 3 times (72 trials).
TINY = {"n_images": 48, "n_test": 12, "n_sessions": 3, "runs_per_session": 2, "trials_per_run": 12, "train_repeats": 1,
        "volume_shape": (12, 14, 10), "roi_sizes": {"early": 120, "ventral": 120, "midventral": 20, "lateral": 20},
        "image_size": 16}
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
CONFOUNDS = MOTION + [f"{c}_derivative1" for c in MOTION] + ["csf", "white_matter"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedBidsStudy:
    return simulate_bids_study(tmp_path_factory.mktemp("bids") / "study", seed=3, progress=False, **TINY)


def _layout(study: SimulatedBidsStudy) -> BIDSLayout:
    return BIDSLayout(study.bids_root, derivatives=[study.derivatives, study.rois_dir])


def test_pybids_indexes_the_study_and_finds_every_run_by_entities(study: SimulatedBidsStudy) -> None:
    layout = _layout(study)  # warnings are errors: indexing warns about nothing
    assert layout.get_subjects() == ["01"] and layout.get_tasks() == ["images"]
    assert layout.get_sessions() == ["01", "02", "03"]
    common = {"subject": "01", "task": "images", "return_type": "filename"}
    raw = layout.get(suffix="bold", extension=".nii.gz", scope="raw", **common)
    preproc = layout.get(space="T1w", desc="preproc", suffix="bold", extension=".nii.gz", **common)
    masks = layout.get(space="T1w", desc="brain", suffix="mask", extension=".nii.gz", **common)
    confounds = layout.get(desc="confounds", suffix="timeseries", extension=".tsv", **common)
    events = layout.get(suffix="events", extension=".tsv", **common)
    assert len(raw) == len(preproc) == len(masks) == len(confounds) == len(events) == 6
    assert layout.get_metadata(raw[0])["RepetitionTime"] == 2.0
    assert layout.get_metadata(preproc[0])["RepetitionTime"] == 2.0
    rois = layout.get(subject="01", suffix="mask", datatype="anat", return_type="filename")
    assert sorted(Path(p).name.split("desc-")[1].split("_")[0] for p in rois) == [
        "early", "lateral", "midventral", "ventral", "visual"]
    description = json.loads((study.bids_root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "raw" and description["GeneratedBy"][0]["Name"] == "brain2image simulate"
    derived = json.loads((study.derivatives / "dataset_description.json").read_text())
    assert derived["DatasetType"] == "derivative"


def test_images_are_stored_raw_int16_and_preprocessed_float32_on_one_grid(study: SimulatedBidsStudy) -> None:
    layout = _layout(study)
    raw = nib.load(layout.get(subject="01", session="01", run=1, suffix="bold", extension=".nii.gz", scope="raw",
                              return_type="filename")[0])
    preproc = nib.load(layout.get(subject="01", session="01", run=1, desc="preproc", suffix="bold",
                                  extension=".nii.gz", return_type="filename")[0])
    mask = nib.load(layout.get(subject="01", session="01", run=1, desc="brain", suffix="mask",
                               extension=".nii.gz", return_type="filename")[0]).get_fdata().astype(bool)
    assert raw.get_data_dtype() == np.int16 and preproc.get_data_dtype() == np.float32
    assert raw.shape == preproc.shape and raw.shape[:3] == mask.shape == TINY["volume_shape"]
    assert raw.header.get_zooms()[3] == 2.0 and np.allclose(raw.affine, preproc.affine)
    data = preproc.get_fdata()
    brain_mean = data[mask][:, 3:].mean()
    assert 800 < brain_mean < 1200 and np.all(data[~mask] == 0)
    assert data[mask][:, 0].mean() > 1.3 * brain_mean  # the first dummy volume's transient


def test_events_and_confounds_follow_the_design(study: SimulatedBidsStudy) -> None:
    events = pd.concat([pd.read_csv(p, sep="\t") for p in sorted(study.bids_root.rglob("*_events.tsv"))])
    assert list(events.columns) == ["onset", "duration", "trial_type", "stim_file", "stim_id", "trial_split"]
    counts = events["stim_id"].value_counts()
    assert sorted(set(counts)) == [1, 3] and (counts == 3).sum() == TINY["n_test"] and len(counts) == 48
    assert set(events.loc[events["trial_split"] == "test", "stim_id"]) == set(counts.index[counts == 3])
    assert events["stim_file"].map(lambda f: (study.bids_root / "stimuli" / f).is_file()).all()
    assert (events["duration"] == 3.0).all() and events["onset"].min() >= 6.0
    captions = pd.read_csv(study.bids_root / "stimuli" / "captions.tsv", sep="\t")
    assert list(captions.columns) == ["stim_file", "caption"] and len(captions) == 5 * 48
    path = sorted(study.derivatives.rglob("*_desc-confounds_timeseries.tsv"))[0]
    confounds = pd.read_csv(path, sep="\t", na_values="n/a")
    assert set(CONFOUNDS + ["framewise_displacement"]) <= set(confounds.columns)
    assert confounds.loc[0, ["framewise_displacement", "trans_x_derivative1"]].isna().all()
    assert "\tn/a\t" in path.read_text().splitlines()[1]
    outliers = confounds[[f"non_steady_state_outlier_{d:02d}" for d in range(3)]].to_numpy()
    assert np.array_equal(outliers[:3], np.eye(3)) and not outliers[3:].any()


def test_the_truth_holds_every_trial_and_the_roi_voxels(study: SimulatedBidsStudy) -> None:
    events = [pd.read_csv(p, sep="\t") for p in sorted(study.bids_root.rglob("*_events.tsv"))]
    visual = nib.load(study.rois_dir / "sub-01/anat/sub-01_space-T1w_desc-visual_mask.nii.gz").get_fdata()
    with h5py.File(study.truth_paths[0], "r") as f:
        n_voxels = sum(TINY["roi_sizes"].values())
        assert f["responses"].shape == (72, n_voxels) and f["signal"].shape == (48, n_voxels)
        assert np.array_equal(f["trials/image_id"][()], np.concatenate([e["stim_id"] for e in events]))
        assert np.allclose(f["trials/onset"][()], np.concatenate([e["onset"] for e in events]))
        ijk = f["voxels/ijk"][()]
        assert visual[tuple(ijk.T)].all() and int(visual.sum()) == n_voxels
        image_id, responses, signal = f["trials/image_id"][()], f["responses"][()], f["signal"][()]
    assert np.corrcoef(responses.ravel(), signal[image_id].ravel())[0, 1] > 0.3


def test_lss_betas_recover_the_true_single_trial_responses(study: SimulatedBidsStudy) -> None:
    with h5py.File(study.truth_paths[0], "r") as f:
        truth, ijk = f["responses"][()], f["voxels/ijk"][()]
        session, run = f["trials/session"][()], f["trials/run"][()]
    betas = np.empty_like(truth)
    for s, r in sorted(set(zip(session.tolist(), run.tolist()))):
        stem = f"sub-01/ses-{s:02d}/func/sub-01_ses-{s:02d}_task-images_run-{r:02d}"
        bold = nib.load(study.derivatives / f"{stem}_space-T1w_desc-preproc_bold.nii.gz").get_fdata()
        events = pd.read_csv(study.bids_root / f"{stem}_events.tsv", sep="\t")
        confounds = pd.read_csv(study.derivatives / f"{stem}_desc-confounds_timeseries.tsv", sep="\t",
                                na_values="n/a")[CONFOUNDS].fillna(0.0).to_numpy()
        frames = bold[tuple(ijk.T)].T
        rows = (session == s) & (run == r)
        betas[rows] = single_trial_betas(frames[3:], 2.0 * np.arange(3, len(frames)), events["onset"].to_numpy(),
                                         events["duration"].to_numpy(), confounds[3:])
    r_voxel = [np.corrcoef(betas[:, v], truth[:, v])[0, 1] for v in range(truth.shape[1])]
    assert np.median(r_voxel) > 0.3


def test_same_seed_same_bytes_other_seed_other_data(study: SimulatedBidsStudy, tmp_path: Path) -> None:
    again = simulate_bids_study(tmp_path / "again", seed=3, progress=False, **TINY)
    other = simulate_bids_study(tmp_path / "other", seed=4, progress=False, **TINY)
    names = [p.relative_to(study.out_dir) for p in sorted(study.out_dir.rglob("*")) if p.is_file()
             and not p.name.endswith(".h5")]
    assert names and [p.relative_to(again.out_dir) for p in sorted(again.out_dir.rglob("*")) if p.is_file()
                      and not p.name.endswith(".h5")] == names
    assert all((study.out_dir / n).read_bytes() == (again.out_dir / n).read_bytes() for n in names)
    bold = ("bids/derivatives/fmriprep/sub-01/ses-01/func/"
            "sub-01_ses-01_task-images_run-01_space-T1w_desc-preproc_bold.nii.gz")
    assert not np.array_equal(nib.load(study.out_dir / bold).get_fdata(), nib.load(other.out_dir / bold).get_fdata())
    with h5py.File(study.truth_paths[0], "r") as a, h5py.File(again.truth_paths[0], "r") as b:
        assert np.array_equal(a["responses"][()], b["responses"][()])


def test_several_subjects_share_the_stimuli_and_have_their_own_truth(tmp_path: Path) -> None:
    two = simulate_bids_study(tmp_path / "two", seed=1, n_subjects=2, progress=False,
                              **{**TINY, "n_sessions": 1, "runs_per_session": 6})
    assert two.subjects == ("01", "02") and [p.name for p in two.truth_paths] == [
        "simulation_truth.h5", "simulation_truth_sub-02.h5"]
    assert len(BIDSLayout(two.bids_root).get(subject="02", suffix="bold", extension=".nii.gz")) == 6
    events = pd.read_csv(sorted(two.bids_root.rglob("sub-01_*run-01_events.tsv"))[0], sep="\t")
    assert events.groupby("stim_id")["onset"].count().max() == 1  # test repeats fall in different runs


def test_design_repeats_test_images_in_different_sessions() -> None:
    design = make_bids_design(100, 10, 3, 2, 20, seed=0)
    assert len(design.image_id) == 120 and design.runs()[:2] == [(1, 1), (1, 2)]
    for image in np.unique(design.image_id[design.is_test]):
        assert sorted(design.session[design.image_id == image]) == [1, 2, 3]
    assert np.bincount(design.image_id[~design.is_test]).max() == 1
    with pytest.raises(InvalidArgumentError, match="do not fit"):
        make_bids_design(100, 10, 3, 1, 20)
    with pytest.raises(InvalidArgumentError, match="at least 3 runs"):
        make_bids_design(100, 10, 1, 2, 80)


def test_design_can_repeat_training_images() -> None:
    once = make_bids_design(100, 10, 3, 2, 20, seed=0)
    twice = make_bids_design(100, 10, 3, 2, 40, seed=0, train_repeats=2)
    assert len(twice.image_id) == 90 * 2 + 30 and np.array_equal(once.is_test.sum(), twice.is_test.sum())
    counts = np.bincount(twice.image_id[~twice.is_test], minlength=100)
    assert set(counts[counts > 0]) == {2}
    assert not np.isin(twice.image_id[~twice.is_test], twice.image_id[twice.is_test]).any()
    with pytest.raises(InvalidArgumentError, match="train_repeats must be >= 1"):
        make_bids_design(100, 10, 3, 2, 40, train_repeats=0)


def test_bold_noise_leaves_the_target_noise_to_lss() -> None:
    noise = bold_noise_sd(np.array([2.5, 1.0]), np.array([1.0, 1.0]))
    assert noise[0] > noise[1] > 0


def test_cli_writes_a_bids_study_and_refuses_options_of_the_other_format(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert main(["simulate", "--format", "bids", "--out", str(tmp_path / "ok"), "--n-images", "30", "--n-test", "5",
                 "--sessions", "3", "--runs", "1", "--trials-per-run", "15", "--train-repeats", "1",
                 "--image-size", "16", "--tr", "1.5",
                 "--seed", "2", "--no-progress"]) == 0
    assert "fMRIPrep derivatives" in capsys.readouterr().out
    assert json.loads((tmp_path / "ok/bids/task-images_bold.json").read_text())["RepetitionTime"] == 1.5
    assert main(["simulate", "--format", "bids", "--out", str(out), "--n-images", "30", "--n-test", "5",
                 "--sessions", "3", "--runs", "1", "--trials-per-run", "15", "--train-repeats", "1",
                 "--volume-shape", "12x14x10", "--image-size", "16", "--no-progress"]) == 2  # default ROIs: too big
    assert "ROIs" in capsys.readouterr().err
    assert main(["simulate", "--format", "bids", "--out", str(out), "--n-shared", "5"]) == 2
    err = capsys.readouterr().err
    assert "--n-shared applies to --format nsd only" in err and len(err.strip().splitlines()) == 1
    assert main(["simulate", "--out", str(out), "--tr", "1.5"]) == 2
    assert "--tr applies to --format bids only" in capsys.readouterr().err
    assert not out.exists()
