"""The simulated study: an NSD tree a real-NSD reader accepts, and a subject decoders can read."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from brain2image.commands import simulate as simulate_command
from brain2image.embedded.simulate.scenes import (
    BACKGROUNDS,
    Scene,
    SceneObject,
    _object_mask,
    render_scene,
    render_scenes,
    sample_scenes,
    scene_labels,
)
from brain2image.embedded.simulate.study import make_design, simulate_study
from brain2image.embedded.simulate.subject import SimulatedSubject, resample_images

SMALL = dict(n_images=760, n_shared=30, n_sessions=3, volume_shape=(14, 18, 12),
             roi_sizes={"early": 300, "ventral": 300, "midventral": 40, "lateral": 40},
             image_size=32, progress=False)
TINY = dict(n_images=300, n_shared=20, n_sessions=1, volume_shape=(10, 12, 9),
            roi_sizes={"early": 80, "ventral": 80}, image_size=16, progress=False)
BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
FUNC = "nsddata/ppdata/subj01/func1pt8mm"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return simulate_study(tmp_path_factory.mktemp("sim"), nifti_betas=True, seed=3, **SMALL)


def _design(root: Path):
    mat = scipy.io.loadmat(root / "nsddata/experiments/nsd/nsd_expdesign.mat")
    return (mat["masterordering"].astype(np.int64), mat["subjectim"].astype(np.int64),
            mat["sharedix"].astype(np.int64))


def _all_betas(root: Path, n_sessions: int) -> np.ndarray:
    """All sessions' betas in % signal change, NIfTI order, shape (X, Y, Z, n_trials)."""
    out = []
    for s in range(1, n_sessions + 1):
        with h5py.File(root / BETAS / f"betas_session{s:02d}.hdf5", "r") as f:
            out.append(f["betas"][()].transpose(3, 2, 1, 0))
    return np.concatenate(out, axis=-1)


def test_files_names_dtypes_shapes(study):
    root = study.nsd_root
    assert study.truth_path == study.out_dir / "simulation_truth.h5"
    assert not (root / "simulation_truth.h5").exists()
    with h5py.File(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as f:
        brick = f["imgBrick"]
        assert brick.shape == (760, 32, 32, 3) and brick.dtype == np.uint8
        assert brick.chunks == (1, 32, 32, 3)
    masterordering, subjectim, sharedix = _design(root)
    assert masterordering.shape == (1, 3 * 750) and subjectim.shape == (1, 760)
    assert sharedix.shape == (1, 30)
    for s in (1, 2, 3):
        with h5py.File(root / BETAS / f"betas_session{s:02d}.hdf5", "r") as f:
            assert f["betas"].shape == (750, 12, 18, 14) and f["betas"].dtype == np.int16
    nifti = nib.load(root / BETAS / "betas_session02.nii.gz")
    assert nifti.shape == (14, 18, 12, 750) and nifti.get_data_dtype() == np.int16
    np.testing.assert_allclose(np.abs(np.diag(nifti.affine)[:3]), 1.8)
    for name in ("brainmask.nii.gz", "roi/nsdgeneral.nii.gz", "roi/streams.nii.gz"):
        assert nib.load(root / FUNC / name).shape == (14, 18, 12)
    assert nib.load(root / BETAS / "ncsnr.nii.gz").shape == (14, 18, 12)
    ctab = (root / "nsddata/freesurfer/fsaverage/label/streams.mgz.ctab").read_text().split("\n")
    table = dict(line.split(" ") for line in ctab if line)
    assert table["1"] == "early" and table["5"] == "ventral"
    responses = pd.read_csv(root / "nsddata/ppdata/subj01/behav/responses.tsv", sep="\t")
    assert responses.shape == (2250, 19) and responses.columns[4] == "73KID"
    info = pd.read_csv(root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv", index_col=0)
    assert list(info.index) == list(range(760))
    assert {"cocoId", "cocoSplit", "cropBox", "nsdId", "shared1000", "subject1",
            "subject1_rep0", "subject1_rep2"} <= set(info.columns)


def test_indices_consistent_across_files(study):
    root = study.nsd_root
    masterordering, subjectim, sharedix = (a.ravel() for a in _design(root))
    assert np.array_equal(subjectim[:30], np.sort(sharedix))
    assert np.array_equal(np.sort(subjectim), np.arange(1, 761))  # subject saw all, 1-based
    trial_ids = subjectim[masterordering - 1] - 1  # 0-based 73k id of every trial
    responses = pd.read_csv(root / "nsddata/ppdata/subj01/behav/responses.tsv", sep="\t")
    assert np.array_equal(responses["73KID"].to_numpy() - 1, trial_ids)
    assert np.array_equal(responses["10KID"].to_numpy(), masterordering)
    assert np.array_equal(responses["SESSION"].to_numpy(), np.repeat([1, 2, 3], 750))
    runs = responses.groupby(["SESSION", "RUN"]).size().to_numpy().reshape(3, 12)
    assert np.array_equal(runs, np.tile([63, 62] * 6, (3, 1)))
    assert responses.loc[responses.RUN.diff() != 0, "TRIAL"].eq(1).all()
    info = pd.read_csv(root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv", index_col=0)
    assert np.array_equal(info["nsdId"].to_numpy(), np.arange(760))
    assert np.array_equal(np.nonzero(info["shared1000"].to_numpy())[0], sharedix - 1)
    reps = info[[f"subject1_rep{r}" for r in range(3)]].to_numpy()
    for image in (sharedix[0] - 1, trial_ids[0], trial_ids[-1]):
        expected = np.nonzero(trial_ids == image)[0] + 1  # 1-based trial ids
        assert np.array_equal(reps[image][reps[image] > 0], expected)
    counts = np.bincount(trial_ids, minlength=760)
    is_shared = np.isin(np.arange(760), sharedix - 1)
    assert (counts[is_shared] == 3).all()
    assert counts[~is_shared].min() >= 1 and counts[~is_shared].max() <= 3
    session = np.repeat([1, 2, 3], 750)
    for image in sharedix - 1:  # each shared image's repeats in three different sessions
        assert len(set(session[trial_ids == image])) == 3
    with h5py.File(study.truth_path, "r") as f:
        assert np.array_equal(f["trial_ids"][()], trial_ids)


def test_captions_match_coco_ids(study):
    root = study.nsd_root
    info = pd.read_csv(root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv", index_col=0)
    with h5py.File(study.truth_path, "r") as f:
        scenes = json.loads(f["scenes"][()].decode())
    by_split = {}
    for split in ("train2017", "val2017"):
        content = json.loads((root / f"nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json")
                             .read_text())
        caps: dict[int, list[str]] = {}
        for ann in content["annotations"]:
            caps.setdefault(ann["image_id"], []).append(ann["caption"])
        assert {im["id"] for im in content["images"]} == set(caps)
        by_split[split] = caps
    assert len(by_split["val2017"]) > 0
    assert info["cocoId"].is_unique
    for idx in range(0, 760, 37):
        row = info.loc[idx]
        texts = by_split[row["cocoSplit"]][int(row["cocoId"])]
        assert len(texts) == 5
        for obj in scenes[idx]["objects"]:
            assert all(obj["category"] in t and obj["colour"] in t for t in texts)


def test_betas_scale_axis_order_and_mask(study):
    root = study.nsd_root
    betas = _all_betas(root, 3)
    brain = nib.load(root / FUNC / "brainmask.nii.gz").get_fdata() > 0
    assert not betas[~brain].any()
    nifti = np.asarray(nib.load(root / BETAS / "betas_session02.nii.gz").dataobj)
    np.testing.assert_array_equal(nifti, betas[..., 750:1500])
    masterordering, subjectim, _ = (a.ravel() for a in _design(root))
    trial_ids = subjectim[masterordering - 1] - 1
    with h5py.File(study.truth_path, "r") as f:
        ijk = f["voxels/ijk"][()]
        signal = f["signal"][()]
    percent = betas[tuple(ijk.T)].T / 300.0  # (n_trials, n_voxels) via the truth's (X, Y, Z) ijk
    truth = signal[trial_ids]
    # Betas = signal + zero-mean noise: the regression slope on the truth is 1 (×300 scale).
    tc, pc = truth - truth.mean(0), percent - percent.mean(0)
    slope = (tc * pc).sum(0) / (tc * tc).sum(0)
    assert 0.9 < np.median(slope) < 1.1
    assert abs(np.median(percent.mean(0) - truth.mean(0))) < 0.1
    # The repeat-averaged test betas track the noise-free test responses.
    test_images = np.unique(trial_ids[np.isin(trial_ids, subjectim[:30] - 1)])
    avg = np.stack([percent[trial_ids == i].mean(0) for i in test_images])
    r = [np.corrcoef(avg[:, v], signal[test_images, v])[0, 1] for v in range(len(ijk))]
    assert np.median(r) > 0.4


def test_ncsnr_near_target(study):
    root = study.nsd_root
    masterordering, subjectim, sharedix = (a.ravel() for a in _design(root))
    trial_ids = subjectim[masterordering - 1] - 1
    roi = nib.load(root / FUNC / "roi/nsdgeneral.nii.gz").get_fdata() > 0
    betas = _all_betas(root, 3)[roi].T / 300.0
    # NSD z-scores each session; removing each session's mean removes the session offsets.
    session = np.repeat([0, 1, 2], 750)
    for s in range(3):
        betas[session == s] -= betas[session == s].mean(0)
    test = np.isin(trial_ids, sharedix - 1)
    noise_var = np.mean([betas[trial_ids == i].var(0, ddof=1) for i in sharedix - 1], axis=0)
    total_var = betas[test].var(0, ddof=1)
    ncsnr = np.sqrt(np.maximum(total_var - noise_var, 0)) / np.sqrt(noise_var)
    assert 0.3 < np.median(ncsnr) < 0.5
    true = nib.load(root / BETAS / "ncsnr.nii.gz").get_fdata()
    assert 0.35 < np.median(true[roi]) < 0.45 and not true[~roi].any()


def test_same_seed_same_bytes(tmp_path):
    a = simulate_study(tmp_path / "a", seed=1, **TINY)
    b = simulate_study(tmp_path / "b", seed=1, **TINY)
    c = simulate_study(tmp_path / "c", seed=2, **TINY)
    files = sorted(p.relative_to(a.out_dir) for p in a.out_dir.rglob("*") if p.is_file())
    assert len(files) == 14  # 12 files of the NSD tree (one session), the marker, the truth
    marker = json.loads((a.nsd_root / "brain2image_simulation.json").read_text())
    assert marker["simulated_by"] == "brain2image" and marker["seed"] == 1 and marker["preset"] is None
    assert marker["settings"]["n_images"] == 300 and marker["settings"]["volume_shape"] == [10, 12, 9]
    assert files == sorted(p.relative_to(b.out_dir) for p in b.out_dir.rglob("*") if p.is_file())
    differ = [f for f in files if (a.out_dir / f).read_bytes() != (b.out_dir / f).read_bytes()]
    assert differ == []
    changed = [f for f in files if (a.out_dir / f).read_bytes() != (c.out_dir / f).read_bytes()]
    assert Path("nsd", BETAS, "betas_session01.hdf5") in changed
    assert Path("nsd/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") in changed
    assert Path("simulation_truth.h5") in changed


def _render_whole_canvas(scene: Scene, size: int, supersample: int = 3) -> np.ndarray:
    """Reference renderer: every pixel of the supersampled canvas drawn, then blocks averaged."""
    big = size * supersample
    coords = (np.arange(big) + 0.5) / big
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    _, top, bottom, horizon = BACKGROUNDS[scene.background]
    shade = np.where(yy < horizon, 0.85 + 0.3 * yy / horizon, 1.1 - 0.25 * (yy - horizon) / (1 - horizon))
    canvas = np.where((yy < horizon)[..., None], np.asarray(top), np.asarray(bottom)) * shade[..., None]
    for obj in scene.objects:
        for mask, colour in _object_mask(obj, xx, yy):
            canvas[mask] = colour
    canvas = canvas.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size, n", [(16, 150), (64, 150), (425, 3)])
def test_windowed_renderer_is_bit_identical_to_whole_canvas(size, n):
    scenes = sample_scenes(n, seed=size)
    scenes.append(Scene("night", (SceneObject("kite", "white", 0.02, 0.95, 0.42),
                                  SceneObject("car", "red", 0.05, 0.9, 0.4))))  # parts off the canvas
    for scene in scenes:
        np.testing.assert_array_equal(render_scene(scene, size), _render_whole_canvas(scene, size))


def test_resample_images_averages_areas():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 12, 12, 3), dtype=np.uint8)
    assert resample_images(images, 12) is images
    blocks = images.reshape(3, 4, 3, 4, 3, 3).astype(float).mean(axis=(2, 4))
    np.testing.assert_allclose(resample_images(images, 4), np.round(blocks), atol=1)
    flat = np.full((2, 425, 425, 3), 77, dtype=np.uint8)
    assert (resample_images(flat, 64) == 77).all()


def _scene(category: str, colour: str, x: float) -> Scene:
    return Scene(background="field", objects=(SceneObject(category, colour, x, 0.55, 0.4),))


def test_early_voxels_see_position_ventral_voxels_see_content(study):
    with h5py.File(study.truth_path, "r") as f:
        subject = SimulatedSubject.from_hdf5(f["voxels"])
        signal = f["signal"][:5]
        labels = f["labels"][:5]
    with h5py.File(study.nsd_root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as f:
        images = f["imgBrick"][:5]
    np.testing.assert_allclose(subject.responses(images, labels), signal, atol=1e-4)

    scenes = [_scene("ball", "red", 0.2), _scene("ball", "red", 0.8), _scene("car", "blue", 0.2)]
    resp = subject.responses(render_scenes(scenes, 32), np.stack([scene_labels(s) for s in scenes]))
    moved = np.abs(resp[0] - resp[1]) / subject.amplitude
    changed = np.abs(resp[0] - resp[2]) / subject.amplitude
    early, ventral = subject.kind == "early", subject.kind == "ventral"
    # Moving an object changes early responses far more than ventral ones...
    assert moved[early].mean() > 3 * moved[ventral].mean()
    # ...and the early voxels that change are those whose RF holds the object.
    dist = np.minimum(np.hypot(subject.rf_centre[:, 0] - 0.2, subject.rf_centre[:, 1] - 0.55),
                      np.hypot(subject.rf_centre[:, 0] - 0.8, subject.rf_centre[:, 1] - 0.55))
    assert moved[early & (dist < 0.1)].mean() > 3 * moved[early & (dist > 0.45)].mean()
    # Changing what the object is (same place) changes ventral responses.
    assert changed[ventral].mean() > 3 * moved[ventral].mean()
    assert set(subject.kind) == {"early", "ventral", "mixed"}


def test_design_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="training images"):
        make_design(n_images=100, n_shared=20, n_sessions=1)  # 690 trials for 80 images
    with pytest.raises(ValueError, match="training images"):
        make_design(n_images=2000, n_shared=20, n_sessions=1)  # 690 trials for 1980 images


def test_cli_writes_tree(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    simulate_command.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--out", str(tmp_path / "cli"), "--n-images", "300",
                              "--n-shared", "20", "--sessions", "1", "--image-size", "16",
                              "--volume-shape", "24x30x20", "--seed", "4", "--no-progress"])
    assert args.func(args) == 0
    assert (tmp_path / "cli/nsd" / BETAS / "betas_session01.hdf5").is_file()
    assert "simulation_truth.h5" in capsys.readouterr().out
    with h5py.File(tmp_path / "cli/simulation_truth.h5", "r") as f:
        assert f.attrs["seed"] == 4 and f["signal"].shape == (300, 3500)
    from brain2image.cli import main

    assert main(["simulate", "--out", str(tmp_path / "bad"), "--n-images", "60", "--sessions", "1"]) == 2
    assert "training images" in capsys.readouterr().err
