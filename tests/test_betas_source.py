"""Precomputed betas (``[source] kind = "betas"``): readers, trials, ROIs, the prepared file, the check."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brain2image.config import PrepareConfig, SourceConfig
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.formats.prepared import load_prepared
from brain2image.sources.betas import BetasSource, open_betas, read_trials
from brain2image.sources.betas.glmsingle import GLMSINGLE_STEM
from brain2image.sources.betas.safe_pickle import load_array_dict
from brain2image.sources.registry import get_source

#: Two sessions of four trials; images a, b, d repeat (test), c and e are shown once (train).
STIMS = ["images/a.png", "images/b.png", "images/c.png", "images/d.png",
         "images/a.png", "images/b.png", "images/e.png", "images/d.png"]
IDS = np.array([0, 1, 2, 3, 0, 1, 4, 3])  # sorted file names a..e -> ids 0..4
SESSION = np.array([1, 1, 1, 1, 2, 2, 2, 2])
SHAPE = (3, 3, 2)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    (root / "stimuli" / "images").mkdir(parents=True)
    for k, name in enumerate("abcde"):
        Image.fromarray(np.full((6, 6, 3), 40 * k, dtype=np.uint8)).save(root / "stimuli" / "images" / f"{name}.png")
    return root


def _trials_tsv(path: Path, stims: list[str] = STIMS, split: list[str] | None = None) -> Path:
    header = "stim_file\tsession\trun" + ("\tsplit" if split else "")
    rows = [f"{s}\t{'01' if k < 4 else '02'}\t1" + (f"\t{split[k]}" if split else "") for k, s in enumerate(stims)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _volume_betas(seed: int = 0) -> np.ndarray:
    """(X, Y, Z, n_trials) float32 betas, nonzero everywhere."""
    return np.random.default_rng(seed).normal(1.0, 1.0, (*SHAPE, len(STIMS))).astype(np.float32)


def _roi_mask(path: Path) -> tuple[Path, np.ndarray]:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[0, 1, 0] = mask[2, 2, 1] = mask[1, 0, 1] = 1
    nib.save(nib.Nifti1Image(mask, AFFINE), path)
    return path, mask.astype(bool)


def _source(**keys: object) -> BetasSource:
    source = get_source(SourceConfig(kind="betas", **keys))
    assert isinstance(source, BetasSource)
    return source


def _expected(trials_by_voxel: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hand-computed splits of (n_trials, n_voxels) betas in table order."""
    test = np.isin(IDS, [0, 1, 3])
    means = np.stack([trials_by_voxel[IDS == i].mean(axis=0) for i in (0, 1, 3)])
    return {"train": (trials_by_voxel[~test], IDS[~test]), "test_trials": (trials_by_voxel[test], IDS[test]),
            "test": (means, np.array([0, 1, 3]))}


def _assert_roi(out: Path, roi: str, trials_by_voxel: np.ndarray) -> None:
    prepared = load_prepared(out)
    for split, (values, ids) in _expected(trials_by_voxel).items():
        got, got_ids = getattr(prepared, split)(roi)
        np.testing.assert_allclose(got, values, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got_ids, ids)


def test_nifti_betas_with_tsv_mask_and_reliable_rois(tmp_path: Path) -> None:
    root, betas = _root(tmp_path), _volume_betas()
    nib.save(nib.Nifti1Image(betas, AFFINE), tmp_path / "betas.nii.gz")
    mask_path, mask = _roi_mask(tmp_path / "early.nii.gz")
    source = _source(root=str(root), betas=str(tmp_path / "betas.nii.gz"), trials=str(_trials_tsv(
        tmp_path / "trials.tsv")), roi={"early": str(mask_path), "top": "reliable:4"})
    out = source.prepare("01", PrepareConfig(), tmp_path / "prep.h5", progress=False)
    ijk = np.argwhere(mask)
    _assert_roi(out, "early", betas[tuple(ijk.T)].T)
    prepared = load_prepared(out)
    np.testing.assert_array_equal(prepared.ijk("early"), ijk)
    assert prepared.volume_shape == SHAPE and np.allclose(prepared.affine, AFFINE)
    assert prepared.n_voxels("top") == 4 and prepared.ncsnr("top") is not None
    assert prepared.attrs["source"] == "betas" and prepared.attrs["subject"] == "01"
    top = prepared.ijk("top")
    _assert_roi(out, "top", betas[tuple(top.T)].T)
    assert source.check("01", PrepareConfig()).ok


def test_npy_betas_placed_by_mask_and_first_session_only(tmp_path: Path) -> None:
    root, volume = _root(tmp_path), _volume_betas(1)
    brain = np.ones(SHAPE, dtype=bool)
    brain[0, 0, 0] = False
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), AFFINE), tmp_path / "brain.nii.gz")
    array = volume[brain].T  # (n_trials, n_voxels): argwhere order of the mask
    np.save(tmp_path / "betas.npy", array)
    mask_path, roi = _roi_mask(tmp_path / "roi.nii.gz")
    source = _source(root=str(root), betas=str(tmp_path / "betas.npy"), trials=str(_trials_tsv(
        tmp_path / "trials.tsv", split=["train", "test", "train", "test"] * 2)), mask=str(tmp_path / "brain.nii.gz"),
        roi={"v": str(mask_path)}, split_column="split")
    out = source.prepare("7", PrepareConfig(sessions=1), tmp_path / "prep.h5", progress=False)
    prepared = load_prepared(out)
    ijk = np.argwhere(roi)
    got, ids = prepared.train("v")
    np.testing.assert_allclose(got, volume[tuple(ijk.T)].T[[0, 2]], rtol=1e-6)
    np.testing.assert_array_equal(ids, [0, 2])
    test, test_ids = prepared.test("v")
    np.testing.assert_allclose(test, volume[tuple(ijk.T)].T[[1, 3]], rtol=1e-6)
    np.testing.assert_array_equal(test_ids, [1, 3])
    np.testing.assert_array_equal(prepared.ijk("v"), ijk)
    assert prepared.subject == 7


def test_h5_betas_without_mask_take_reliable_rois_only(tmp_path: Path) -> None:
    root = _root(tmp_path)
    array = np.random.default_rng(2).normal(size=(len(STIMS), 10)).astype(np.float32)
    array[:, 3] = 10 * np.array([0.0, 5, 2, 9, 2])[IDS] + array[:, 3]  # one voxel tracks the image: most reliable
    with h5py.File(tmp_path / "betas.h5", "w") as handle:
        handle["betas"] = array
    keys = dict(root=str(root), betas=str(tmp_path / "betas.h5"), trials=str(_trials_tsv(tmp_path / "t.tsv")))
    out = _source(**keys, roi={"best": "reliable:1"}).prepare("1", PrepareConfig(), tmp_path / "p.h5", progress=False)
    prepared = load_prepared(out)
    np.testing.assert_array_equal(prepared.ijk("best"), [[3, 0, 0]])
    _assert_roi(out, "best", array[:, [3]])
    assert not prepared.attrs["positions_placed"]
    _, mask = _roi_mask(tmp_path / "m.nii.gz")
    with pytest.raises(InvalidArgumentError, match="set \\[source\\] mask") as info:
        _source(**keys, roi={"m": str(tmp_path / "m.nii.gz")}).prepare("1", PrepareConfig(), tmp_path / "q.h5")
    assert "\n" not in str(info.value) and not (tmp_path / "q.h5").exists()


def _events(folder: Path) -> None:
    """BIDS events of two sessions (one run each), with n/a rows and onsets out of order."""
    for ses, stims in (("01", STIMS[:4]), ("02", STIMS[4:])):
        func = folder / "sub-01" / f"ses-{ses}" / "func"
        func.mkdir(parents=True)
        rows = ["onset\tduration\ttrial_type\tstim_file", "0.0\t2\tfixation\tn/a"]
        rows += [f"{onset}\t3\timage\t{stim}" for onset, stim in zip((40, 10, 20, 30), np.roll(stims, 1))]
        (func / f"sub-01_ses-{ses}_task-images_run-1_events.tsv").write_text("\n".join(rows) + "\n")


def test_glmsingle_folder_with_events(tmp_path: Path) -> None:
    root, betas = _root(tmp_path), _volume_betas(3)
    glm = tmp_path / "glmsingle"
    glm.mkdir()
    outputs = {"betasmd": betas, "R2": np.ones(SHAPE), "HRFindex": np.zeros(SHAPE, int)}
    np.save(glm / f"{GLMSINGLE_STEM}.npy", outputs, allow_pickle=True)  # type: ignore[arg-type]  # as GLMsingle does
    _events(tmp_path / "events")
    trials = read_trials(tmp_path / "events", subject="1")  # the run's subject 1 is sub-01
    assert trials.stim_files == STIMS and trials.session.tolist() == SESSION.tolist()
    nib.save(nib.Nifti1Image(np.ones(SHAPE, dtype=np.uint8), AFFINE), tmp_path / "brain.nii.gz")
    mask_path, mask = _roi_mask(tmp_path / "roi.nii.gz")
    source = _source(root=str(root), betas=str(glm), trials=str(tmp_path / "events"), roi={"r": str(mask_path)},
                     mask=str(tmp_path / "brain.nii.gz"))
    out = source.prepare("sub-01", PrepareConfig(), tmp_path / "prep.h5", progress=False)
    _assert_roi(out, "r", betas[tuple(np.argwhere(mask).T)].T)
    assert np.allclose(load_prepared(out).affine, AFFINE)


@pytest.mark.parametrize("suffix", [".hdf5", ".mat"])
def test_glmsingle_hdf5_and_mat_voxel_arrays(tmp_path: Path, suffix: str) -> None:
    from scipy.io import savemat

    array = np.random.default_rng(4).normal(size=(len(STIMS), 17)).astype(np.float32)
    betasmd = array.T[:, None, None, :]  # (n_voxels, 1, 1, n_trials)
    glm = tmp_path / "glm"
    glm.mkdir()
    if suffix == ".mat":
        savemat(glm / f"{GLMSINGLE_STEM}.mat", {"betasmd": betasmd})
    else:
        with h5py.File(glm / f"{GLMSINGLE_STEM}.hdf5", "w") as handle:
            handle["betasmd"] = betasmd
    reader = open_betas(glm)
    assert reader.n_trials == len(STIMS) and reader.spatial_shape == (17,)
    rows, columns = np.array([1, 5, 6]), np.array([16, 0, 3])
    np.testing.assert_array_equal(reader.read(rows, columns), array[rows][:, columns])


def test_nifti_reads_blocks_of_trials(tmp_path: Path) -> None:
    volume = np.random.default_rng(5).normal(size=(2, 3, 2, 150)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "b.nii.gz")
    reader = open_betas(tmp_path / "b.nii.gz")
    rows = np.array([0, 3, 63, 64, 65, 130, 149])
    columns = np.array([11, 0, 5])
    expected = volume.reshape(12, 150)[columns][:, rows].T
    np.testing.assert_array_equal(reader.read(rows, columns), expected)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch hacked",))


def test_restricted_unpickler_refuses_other_classes(tmp_path: Path) -> None:
    path = tmp_path / f"{GLMSINGLE_STEM}.npy"
    np.save(path, np.array({"betasmd": _Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match=r"system, which is not a numpy array class") as info:
        load_array_dict(path)
    assert "\n" not in str(info.value) and not (tmp_path / "hacked").exists() and not Path("hacked").exists()
    pickled = tmp_path / "other.npy"
    np.save(pickled, np.array(OrderedDict(betasmd=np.zeros(2))), allow_pickle=True)  # a class beyond numpy's
    with pytest.raises(DataFormatError, match="collections.OrderedDict, which is not a numpy array class"):
        load_array_dict(pickled)
    np.save(pickled, np.zeros((2, 2)))
    with pytest.raises(DataFormatError, match="not GLMsingle's dict"):
        load_array_dict(pickled)


def _problems(tmp_path: Path, **keys: object) -> list[str]:
    report = _source(**keys).check("01", PrepareConfig())
    assert not report.ok and "problem" in report.format_table()
    lines = report.problem_lines()
    assert lines and all("\n" not in line for line in lines)
    return lines


def test_check_lists_each_problem_on_one_line(tmp_path: Path) -> None:
    root, betas = _root(tmp_path), _volume_betas()
    mask_path, mask = _roi_mask(tmp_path / "roi.nii.gz")
    nib.save(nib.Nifti1Image(betas, AFFINE), tmp_path / "b.nii.gz")
    keys = dict(root=str(root), betas=str(tmp_path / "b.nii.gz"), roi={"r": str(mask_path)})
    short = _problems(tmp_path, **keys, trials=str(_trials_tsv(tmp_path / "short.tsv", STIMS[:6])))
    assert any("6 trials but" in line for line in short)
    unknown = _problems(tmp_path, **keys, trials=str(_trials_tsv(tmp_path / "u.tsv", [*STIMS[:7], "images/z.png"])))
    assert any("'images/z.png' is not an image file" in line for line in unknown)
    nan = betas.copy()
    nan[0, 1, 0, :] = np.nan
    nib.save(nib.Nifti1Image(nan, AFFINE), tmp_path / "nan.nii.gz")
    lines = _problems(tmp_path, root=str(root), betas=str(tmp_path / "nan.nii.gz"), roi={"r": str(mask_path)},
                      trials=str(_trials_tsv(tmp_path / "t.tsv")))
    assert any("NaN/inf betas at 1 of 3 ROI voxels" in line for line in lines)
    missing = _problems(tmp_path, root=str(root), betas=str(tmp_path / "b.nii.gz"), trials=str(tmp_path / "t.tsv"),
                        roi={"r": str(tmp_path / "absent.nii.gz")})
    assert any("absent.nii.gz does not exist" in line for line in missing)


def test_check_finds_no_test_set(tmp_path: Path) -> None:
    root = _root(tmp_path)
    np.save(tmp_path / "b.npy", np.ones((5, 4), dtype=np.float32))
    lines = _problems(tmp_path, root=str(root), betas=str(tmp_path / "b.npy"), roi={"r": "reliable:2"},
                      trials=str(_trials_tsv(tmp_path / "t.tsv", [f"images/{c}.png" for c in "abcde"])))
    assert any("too few repeated images for a test set" in line for line in lines)


def _bad_betas(kind: str, folder: Path) -> Path:
    """A betas path of ``kind`` that open_betas must refuse."""
    if kind == "text":
        (folder / "x.txt").write_text("1")
        return folder / "x.txt"
    if kind == "3d":
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE), folder / "v.nii")
        return folder / "v.nii"
    if kind == "1d":
        np.save(folder / "b.npy", np.zeros(3))
        return folder / "b.npy"
    if kind == "pickled":
        np.save(folder / "o.npy", np.array([{}], dtype=object), allow_pickle=True)
        return folder / "o.npy"
    return folder / "nope.nii.gz" if kind == "missing" else folder


@pytest.mark.parametrize("kind, error, needle", [
    ("missing", MissingFileError, "not found"),
    ("text", DataFormatError, "unknown file kind"),
    ("3d", DataFormatError, "not 4D"),
    ("1d", DataFormatError, "(n_trials, n_voxels)"),
    ("pickled", DataFormatError, "not a plain .npy array"),
    ("empty folder", MissingFileError, "without TYPED_FITHRF_GLMDENOISE_RR"),
])
def test_betas_file_errors_are_one_line(tmp_path: Path, kind: str, error: type, needle: str) -> None:
    with pytest.raises(error) as info:
        open_betas(_bad_betas(kind, tmp_path))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_trials_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("stim_file\tsession\nimages/a.png\t1\n")
    with pytest.raises(DataFormatError, match="no column 'run'"):
        read_trials(tmp_path / "t.tsv")
    (tmp_path / "t.tsv").write_text("stim_file\tsession\trun\nn/a\t1\t1\n")
    with pytest.raises(DataFormatError, match="empty \\(n/a\\) on line 2"):
        read_trials(tmp_path / "t.tsv")
    (tmp_path / "t.tsv").write_text("stim_file\tsession\trun\na\t1\t1\nb\t2\t1\nc\t1\t1\n")
    with pytest.raises(DataFormatError, match="comes back on line 4"):
        read_trials(tmp_path / "t.tsv")
    (tmp_path / "events").mkdir()
    with pytest.raises(MissingFileError, match="no \\*_events.tsv"):
        read_trials(tmp_path / "events")


def test_subject_labels_and_registry(tmp_path: Path) -> None:
    source = _source(root=str(tmp_path), betas="b.npy", trials="t.tsv")
    assert source.subject_label(3) == "3" and source.subject_label("sub-01") == "sub-01"
    assert source.subject_label("") is None and source.subject_label(True) is None
    with pytest.raises(MissingFileError, match="no stimuli/ folder"):
        source.require_root()
    with pytest.raises(InvalidArgumentError, match="glm = 'lsa': does not apply"):
        _source(root=str(tmp_path), betas="b.npy", trials="t.tsv", glm="lsa")
