"""prepare_subject against betas computed independently from the fake tree, element by element."""

import gzip

import h5py
import numpy as np
import pytest
from nsd_tree_writer import BETA_VERSION, write_nsd_tree
from prepared_writer import write_prepared

from brain2image.errors import DataFormatError, MissingFileError
from brain2image.formats.prepared import load_prepared
from brain2image.sources.nsd import prepare_subject
from brain2image.sources.nsd.prepare import average_repeats

TPS = 24
ROIS = ("streams:early", "streams:ventral", "nsdgeneral")


@pytest.fixture()
def tree(tmp_path):
    return write_nsd_tree(tmp_path / "nsd", n_sessions=3, trials_per_session=TPS, seed=3)


def _prepare(tree, out, **kwargs):
    kwargs.setdefault("rois", ROIS)
    return prepare_subject(tree.root, 1, out, trials_per_session=TPS, progress=False, **kwargs)


def _expected(tree, mask, sessions, zscore=False, scale=300.0):
    """Rows (session order, trial order) of the masked betas, split by shared."""
    ijk = np.argwhere(mask)
    rows, ids, sess, trial = [], [], [], []
    for s in sessions:
        x = tree.betas[s][ijk[:, 0], ijk[:, 1], ijk[:, 2], :].T.astype(np.float64) / scale
        if zscore:
            x = (x - x.mean(0)) / x.std(0)
        rows.append(x)
        ids.append(tree.ids[s])
        sess.append(np.full(TPS, s))
        trial.append(np.arange(1, TPS + 1))
    x, ids = np.concatenate(rows), np.concatenate(ids)
    shared = np.isin(ids, tree.shared_ids)
    return x, ids, shared, np.concatenate(sess), np.concatenate(trial), ijk


def test_rows_split_and_repeat_averages(tree, tmp_path):
    data = load_prepared(_prepare(tree, tmp_path / "prep.h5"))
    assert data.roi_keys == ["early", "nsdgeneral", "ventral"]
    assert data.attrs["sessions"] == [1, 2, 3] and data.attrs["volume_shape"] == [7, 9, 5]
    for key, mask in (("early", tree.streams == 1), ("ventral", tree.streams == 5),
                      ("nsdgeneral", tree.nsdgeneral > 0)):
        x, ids, shared, sess, trial, ijk = _expected(tree, mask, [1, 2, 3])
        np.testing.assert_array_equal(data.ijk(key), ijk)
        train_x, train_ids = data.train(key)
        np.testing.assert_allclose(train_x, x[~shared], rtol=1e-6)
        np.testing.assert_array_equal(train_ids, ids[~shared])
        tt_x, tt_ids = data.test_trials(key)
        np.testing.assert_allclose(tt_x, x[shared], rtol=1e-6)
        np.testing.assert_array_equal(tt_ids, ids[shared])
        test_x, test_ids = data.test(key)
        np.testing.assert_array_equal(test_ids, np.sort(tree.shared_ids))
        for row, image in enumerate(test_ids):
            np.testing.assert_allclose(test_x[row], x[ids == image].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(data.ncsnr(key), tree.ncsnr[mask], rtol=1e-6)
    train_meta = data.trials("train")
    np.testing.assert_array_equal(train_meta["session"], sess[~shared])
    np.testing.assert_array_equal(train_meta["trial"], trial[~shared])
    np.testing.assert_array_equal(data.n_repeats(), [np.sum(ids == i) for i in data.test("early")[1]])
    assert data.roi_attrs("early")["label_values"] == [1]


def test_hdf5_and_nifti_give_identical_output(tree, tmp_path):
    a = load_prepared(_prepare(tree, tmp_path / "a.h5", beta_format="hdf5"))
    b = load_prepared(_prepare(tree, tmp_path / "b.h5", beta_format="nifti"))
    assert b.attrs["beta_format"] == "nifti"
    for key in a.roi_keys:
        for split in ("train", "test", "test_trials"):
            xa, ia = getattr(a, split)(key)
            xb, ib = getattr(b, split)(key)
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ia, ib)


def test_zscore_raw_and_session_subsets(tree, tmp_path):
    mask = tree.streams == 1
    z = load_prepared(_prepare(tree, tmp_path / "z.h5", rois=["streams:early"], sessions=[1, 3],
                               zscore_sessions=True))
    x, ids, shared, *_ = _expected(tree, mask, [1, 3], zscore=True)
    np.testing.assert_allclose(z.train("early")[0], x[~shared], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z.test_trials("early")[0], x[shared], rtol=1e-5, atol=1e-5)
    raw = load_prepared(_prepare(tree, tmp_path / "r.h5", rois=["streams:early"], sessions=2,
                                 scale="raw"))
    x, ids, shared, *_ = _expected(tree, mask, [1, 2], scale=1.0)
    np.testing.assert_array_equal(raw.train("early")[0], x[~shared])
    assert raw.attrs["scale"] == "raw" and raw.attrs["sessions"] == [1, 2]


def test_fsaverage(tree, tmp_path):
    data = load_prepared(_prepare(tree, tmp_path / "s.h5", rois=["streams:early", "streams"],
                                  space="fsaverage"))
    assert data.attrs["n_vertices"] == list(tree.n_vertices) and "volume_shape" not in data.attrs
    n_lh = tree.n_vertices[0]
    for key, mask in (("early", tree.surface_streams == 1), ("streams", tree.surface_streams > 0)):
        vertex, hemi = data.vertices(key)
        flat = np.flatnonzero(mask)
        np.testing.assert_array_equal(hemi, flat >= n_lh)
        np.testing.assert_array_equal(vertex, flat - n_lh * hemi)
        x = np.concatenate([tree.surface[s][flat].T for s in tree.sessions])  # float: kept as is
        ids = np.concatenate([tree.ids[s] for s in tree.sessions])
        shared = np.isin(ids, tree.shared_ids)
        np.testing.assert_array_equal(data.train(key)[0], x[~shared])
        np.testing.assert_array_equal(data.test_trials(key)[0], x[shared])
        np.testing.assert_array_equal(data.ncsnr(key), tree.surface_ncsnr[flat])
    # Without the hemispheres' ncsnr files there is no ncsnr (it is optional).
    (tree.root / f"nsddata_betas/ppdata/subj01/fsaverage/{BETA_VERSION}/rh.ncsnr.mgh").unlink()
    data = load_prepared(_prepare(tree, tmp_path / "t.h5", rois=["streams:early"], space="fsaverage"))
    assert data.ncsnr("early") is None


def test_fsaverage_ncsnr_with_wrong_vertex_count(tree, tmp_path):
    import nibabel as nib

    path = tree.root / f"nsddata_betas/ppdata/subj01/fsaverage/{BETA_VERSION}/lh.ncsnr.mgh"
    nib.save(nib.MGHImage(np.ones((29, 1, 1), np.float32), np.eye(4)), path)
    with pytest.raises(DataFormatError, match=r"lh\.ncsnr\.mgh: shape \(29, 1, 1\), expected \(30, 1, 1\)"):
        _prepare(tree, tmp_path / "s.h5", rois=["streams:early"], space="fsaverage")


def test_fsaverage_vertex_count_mismatch(tree, tmp_path):
    import nibabel as nib

    label = tree.root / "nsddata/freesurfer/fsaverage/label/rh.streams.mgz"
    nib.save(nib.MGHImage(np.ones((27, 1, 1), np.int32), np.eye(4)), label)
    with pytest.raises(DataFormatError, match=r"rh\.betas_session01\.mgh: 26 vertices but .*"
                                              r"rh\.streams\.mgz has 27"):
        _prepare(tree, tmp_path / "s.h5", rois=["streams:early"], space="fsaverage")


def _assert_nothing_written(directory):
    """No output and no temporary file left in the output folder."""
    assert not directory.exists() or list(directory.iterdir()) == []


def test_missing_session_file(tree, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(MissingFileError, match=r"betas_session04\.hdf5"):
        _prepare(tree, out / "p.h5", sessions=4)
    tree.betas_file(2).unlink()
    with pytest.raises(MissingFileError, match=r"betas_session02\.hdf5"):
        _prepare(tree, out / "p.h5", sessions=[1, 2])
    assert not out.exists() or not any(out.iterdir())


def test_wrong_volume_shape_names_both_files(tree, tmp_path):
    with h5py.File(tree.betas_file(2), "w") as handle:
        handle.create_dataset("betas", data=np.zeros((TPS, 5, 9, 8), np.int16))
    with pytest.raises(DataFormatError, match=r"betas_session02\.hdf5: volume shape \(X, Y, Z\) "
                                              r"\(8, 9, 5\) differs from ROI atlas .*streams"):
        _prepare(tree, tmp_path / "out" / "p.h5")
    _assert_nothing_written(tmp_path / "out")


def test_trial_count_mismatch(tree, tmp_path):
    with h5py.File(tree.betas_file(1), "w") as handle:
        handle.create_dataset("betas", data=np.zeros((TPS - 1, 5, 9, 7), np.int16))
    with pytest.raises(DataFormatError, match=rf"betas_session01\.hdf5: {TPS - 1} trials"):
        _prepare(tree, tmp_path / "out" / "p.h5")


def test_truncated_and_missing_dataset(tree, tmp_path):
    path = tree.betas_file(1)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataFormatError, match=r"betas_session01\.hdf5: not a readable HDF5"):
        _prepare(tree, tmp_path / "out" / "p.h5")
    with h5py.File(tree.betas_file(2), "w") as handle:
        handle.create_dataset("data", data=np.zeros(3))
    with pytest.raises(DataFormatError, match=r"betas_session02\.hdf5: dataset 'betas' missing"):
        _prepare(tree, tmp_path / "out" / "p.h5", sessions=[2])
    _assert_nothing_written(tmp_path / "out")


def test_failure_mid_run_leaves_no_partial_output(tree, tmp_path):
    path = tree.betas_file(3, ".nii.gz")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # header intact, data cut short
    with pytest.raises(DataFormatError, match=r"betas_session03\.nii\.gz"):
        _prepare(tree, tmp_path / "out" / "p.h5", beta_format="nifti")
    _assert_nothing_written(tmp_path / "out")


def test_average_repeats_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0], [5.0, 0.0]])
    mean, ids, counts = average_repeats(x, np.array([7, 3, 7, 7]))
    np.testing.assert_array_equal(ids, [3, 7])
    np.testing.assert_array_equal(counts, [1, 3])
    np.testing.assert_allclose(mean, [[3.0, 4.0], [16 / 3, 22 / 3]])


def test_prepared_reader_ids_positions_and_errors(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = write_prepared(tmp_path / "p.h5", [7, 2, 7, 9], [4, 1],
                          {"early": {"train": x, "test": x[:2], "ijk": np.array([[0, 1, 2], [3, 4, 5], [1, 1, 1]])},
                           "bare": {"train": x, "test": x[:2]}},
                          attrs={"volume_shape": [5, 6, 7], "affine": np.eye(4)})
    data = load_prepared(path)
    np.testing.assert_array_equal(data.image_ids(), [1, 2, 4, 7, 9])
    assert data.volume_shape == (5, 6, 7) and data.affine.shape == (4, 4)
    positions = data.positions("early")
    assert positions["ijk"].shape == (3, 3) and positions["vertex"] is None
    with pytest.raises(DataFormatError, match="'/rois/bare' has neither"):
        data.positions("bare")
    with pytest.raises(DataFormatError, match="no ROI '/rois/V9'"):
        data.train("V9")
    with h5py.File(path, "a") as handle:
        del handle["test/n_repeats"]
        del handle["rois/early/train"]
        handle["rois/early/train"] = x[:3]
    with pytest.raises(DataFormatError, match="'/test/n_repeats'"):
        data.n_repeats()
    with pytest.raises(DataFormatError, match=r"'/rois/early/train' has shape \(3, 3\) but '/train/ids' has 4"):
        data.train("early")
