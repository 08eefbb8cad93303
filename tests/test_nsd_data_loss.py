"""No silent data loss in ``prepare``: missing sessions and non-finite betas are errors."""

import re

import nibabel as nib
import numpy as np
import pytest
from nsd_tree_writer import write_nsd_tree

from brain2image.config import parse_sessions
from brain2image.errors import DataFormatError, MissingFileError
from brain2image.formats.prepared import load_prepared
from brain2image.sources.nsd import NSDLayout, prepare_subject
from brain2image.sources.nsd.design import expected_sessions, format_sessions
from brain2image.sources.nsd.stimuli import load_captions

TPS = 24
ROIS = ("streams:early", "nsdgeneral")


@pytest.fixture()
def tree(tmp_path):
    return write_nsd_tree(tmp_path / "nsd", n_sessions=3, trials_per_session=TPS, seed=7)


def _prepare(tree, out, **kwargs):
    kwargs.setdefault("rois", ROIS)
    return prepare_subject(tree.root, tree.subject, out, trials_per_session=TPS, progress=False, **kwargs)


def _assert_one_line(error):
    assert "\n" not in str(error.value)


def test_missing_middle_session_is_an_error_naming_the_file(tree, tmp_path):
    tree.betas_file(2).unlink()
    with pytest.raises(MissingFileError) as error:
        _prepare(tree, tmp_path / "out" / "p.h5")
    _assert_one_line(error)
    message = str(error.value)
    assert "betas_session02.hdf5" in message and "responses.tsv lists sessions 1-3" in message
    assert "download it" in message and "--sessions 1,3" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_asking_for_fewer_sessions_proceeds(tree, tmp_path):
    tree.betas_file(2).unlink()
    one = load_prepared(_prepare(tree, tmp_path / "one.h5", sessions=1))
    assert one.attrs["sessions"] == [1]
    both = load_prepared(_prepare(tree, tmp_path / "both.h5", sessions=[1, 3]))
    assert both.attrs["sessions"] == [1, 3]
    ids = np.concatenate([tree.ids[1], tree.ids[3]])
    assert len(both.train("early")[1]) == int((~np.isin(ids, tree.shared_ids)).sum())


def test_missing_last_sessions_suggest_a_count(tree, tmp_path):
    tree.betas_file(3).unlink()
    with pytest.raises(MissingFileError, match=r"1 session\(s\) missing \(3\): betas_session03\.hdf5 .*"
                                               r"--sessions 2$"):
        _prepare(tree, tmp_path / "p.h5")


def test_gap_without_responses_comes_from_the_design(tree, tmp_path):
    (tree.root / "nsddata/ppdata/subj01/behav/responses.tsv").unlink()
    tree.betas_file(2).unlink()
    with pytest.raises(MissingFileError, match=r"betas_session02\.hdf5 not found in .*"
                                               r"\(nsd_expdesign\.mat lists sessions 1-3\)"):
        _prepare(tree, tmp_path / "p.h5")


def test_fsaverage_gap_names_the_missing_hemisphere(tree, tmp_path):
    tree.surface_betas_file(2, "rh").unlink()
    with pytest.raises(MissingFileError, match=r"rh\.betas_session02\.mgh not found") as error:
        _prepare(tree, tmp_path / "p.h5", rois=["streams:early"], space="fsaverage")
    assert "lh.betas_session02" not in str(error.value)


def test_expected_sessions_cross_checks_nsd_counts(tmp_path):
    """Subject 4 did 30 sessions although NSD's design lists more for everyone."""
    tree = write_nsd_tree(tmp_path / "nsd", subject=4, n_sessions=32, trials_per_session=4,
                          formats=("hdf5",), seed=2)
    layout = NSDLayout(tree.root, 4)
    assert expected_sessions(layout, 4, range(1, 33)).sessions == tuple(range(1, 33))
    (tree.root / "nsddata/ppdata/subj04/behav/responses.tsv").unlink()
    # design: 32 sessions; sessions on disk beyond 30 keep the design's count
    assert expected_sessions(layout, 4, range(1, 33)).sessions == tuple(range(1, 33))
    # all sessions on disk within NSD's 30: the NSD count caps the design's
    assert expected_sessions(layout, 4, range(1, 31)).sessions == tuple(range(1, 31))
    for session in (31, 32):
        tree.betas_file(session).unlink()
    data = load_prepared(prepare_subject(tree.root, 4, tmp_path / "p.h5", rois=["streams:early"],
                                         trials_per_session=4, progress=False))
    assert data.attrs["sessions"] == list(range(1, 31))


def test_simulated_tree_with_fewer_sessions_than_nsd(tree):
    (tree.root / "nsddata/ppdata/subj01/behav/responses.tsv").unlink()
    assert expected_sessions(NSDLayout(tree.root, 1), TPS, [1, 2, 3]).sessions == (1, 2, 3)


def test_format_sessions():
    assert format_sessions([5, 1, 2, 3, 7, 8]) == "1-3,5,7-8"
    assert format_sessions([1, 3]) == "1,3" and format_sessions([]) == ""


def _float_betas_with_bad_values(tree, session):
    """Float32 copy of a session with 2 NaN voxels in 3 trials and 1 inf voxel in 1 trial (in the ROI)."""
    data = tree.betas[session].astype(np.float32) / 300
    ijk = np.argwhere(tree.streams == 1)[:3]
    for i, j, k in ijk[:2]:
        data[i, j, k, :3] = np.nan
    i, j, k = ijk[2]
    data[i, j, k, 5] = np.inf
    return data


@pytest.mark.parametrize("beta_format", ["nifti", "hdf5"])
def test_nan_in_float_betas_is_an_error(tree, tmp_path, beta_format):
    tree.write_betas(2, _float_betas_with_bad_values(tree, 2), formats=(beta_format,))
    n_union = int(((tree.streams == 1) | (tree.nsdgeneral > 0)).sum())
    suffix = ".nii.gz" if beta_format == "nifti" else ".hdf5"
    with pytest.raises(DataFormatError) as error:
        _prepare(tree, tmp_path / "out" / "p.h5", beta_format=beta_format)
    _assert_one_line(error)
    assert str(error.value).startswith(f"{tree.betas_file(2, suffix)}: session 2 has 7 non-finite values "
                                       f"(NaN or inf) in 3 of the {n_union} voxels read")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    data = load_prepared(_prepare(tree, tmp_path / "p.h5", beta_format=beta_format, sessions=[1, 3]))
    assert np.isfinite(data.train("nsdgeneral")[0]).all()


def test_finite_float_betas_and_nan_outside_the_rois_are_read(tree, tmp_path):
    data = tree.betas[2].astype(np.float32) / 300
    outside = (tree.streams != 1) & (tree.nsdgeneral <= 0)
    data[outside] = np.nan
    tree.write_betas(2, data, formats=("nifti",))
    prepared = load_prepared(_prepare(tree, tmp_path / "p.h5", beta_format="nifti"))
    assert np.isfinite(prepared.train("nsdgeneral")[0]).all()


def test_nan_in_surface_betas_names_the_hemisphere_file(tree, tmp_path):
    data = tree.surface[3][tree.n_vertices[0]:].copy()
    vertex = int(np.flatnonzero(tree.surface_streams[tree.n_vertices[0]:] == 1)[0])
    data[vertex, :4] = np.nan
    path = tree.surface_betas_file(3, "rh")
    nib.save(nib.MGHImage(data[:, None, None, :], np.eye(4)), path)
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}: session 3 has 4 non-finite values "
                                              r"\(NaN or inf\) in 1 of the \d+ vertices read"):
        _prepare(tree, tmp_path / "p.h5", rois=["streams:early"], space="fsaverage")


def test_load_captions_validates_every_image_first(tree):
    ids = np.array(sorted(tree.coco_ids)[:4])
    captions = load_captions(tree.root, ids)
    assert captions == [[f"image {tree.coco_ids[i]} caption 0", f"image {tree.coco_ids[i]} caption 1"]
                        for i in ids]
    victim = next(i for i in ids if tree.coco_split[i] == "train2017")
    path = tree.captions_file("train2017")
    text = path.read_text().replace(f'"image_id": {tree.coco_ids[victim]},', '"image_id": 1,')
    path.write_text(text)
    with pytest.raises(DataFormatError, match=rf"captions_train2017\.json: no captions for cocoId "
                                              rf"{tree.coco_ids[victim]} \(73k id {victim}\)"):
        load_captions(tree.root, ids)
    path.write_text("{not json")
    with pytest.raises(DataFormatError, match=r"captions_train2017\.json: expected a COCO captions JSON"):
        load_captions(tree.root, ids)


def test_missing_first_session_suggests_a_range_not_a_count(tmp_path):
    tree = write_nsd_tree(tmp_path / "nsd", n_sessions=2, trials_per_session=TPS, formats=("hdf5",), seed=4)
    tree.betas_file(1).unlink()
    with pytest.raises(MissingFileError, match=r"betas_session01\.hdf5 .* --sessions 2-2$"):
        _prepare(tree, tmp_path / "p.h5")
    data = load_prepared(_prepare(tree, tmp_path / "p.h5", sessions=parse_sessions("2-2")))
    assert data.attrs["sessions"] == [2]
