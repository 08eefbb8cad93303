"""``check_nsd_tree`` and the ``brain2image prepare`` command (including ``--check``)."""

import json
import re

import h5py
import nibabel as nib
import numpy as np
import pytest
from nsd_tree_writer import write_nsd_tree

from brain2image.cli import main
from brain2image.config import parse_sessions
from brain2image.formats.prepared import load_prepared
from brain2image.sources.nsd import NSDLayout, check_nsd_tree

TPS = 24


@pytest.fixture()
def tree(tmp_path):
    return write_nsd_tree(tmp_path / "nsd", n_sessions=2, trials_per_session=TPS, seed=5)


def _run(argv):
    """Run ``brain2image prepare`` through the real command line."""
    return main(["prepare", *argv])


def test_check_reports_each_file(tree):
    layout = NSDLayout(tree.root, 1)
    report = check_nsd_tree(layout, [1, 2], ["streams:early", "nsdgeneral"], "hdf5", TPS)
    assert report.ok
    roles = [item.role for item in report.items]
    assert roles.count("betas s01") == 1 and "roi nsdgeneral" in roles and "design" in roles
    tree.betas_file(2).unlink()
    with h5py.File(tree.betas_file(1), "w") as handle:
        handle.create_dataset("betas", data=np.zeros((TPS, 5, 9, 8), np.int16))
    report = check_nsd_tree(layout, [1, 2], ["streams:early", "streams:nope"], "hdf5", TPS)
    status = {(item.role, item.path.name): item.status for item in report.items}
    assert status[("betas s02", "betas_session02.hdf5")] == "missing"
    assert status[("betas s01", "betas_session01.hdf5")] == "malformed"
    assert status[("roi streams:nope", "streams.nii.gz")] == "malformed"
    assert not report.ok and len(report.problems) == 3
    table = report.format_table()
    assert "(8, 9, 5)" in table and "available: early" in table and "3 problem(s)" in table


def test_check_fsaverage_and_optional_files(tree):
    (tree.root / "nsddata/ppdata/subj01/behav/responses.tsv").unlink()
    report = check_nsd_tree(NSDLayout(tree.root, 1, space="fsaverage"), [1, 2], ["streams:early"],
                            trials_per_session=TPS)
    assert report.ok
    assert {i.path.name for i in report.items if i.role.startswith("betas")} == {
        "lh.betas_session01.mgh", "rh.betas_session01.mgh", "lh.betas_session02.mgh",
        "rh.betas_session02.mgh"}
    assert [i.status for i in report.items if i.role == "behaviour"] == ["absent"]
    assert [i.path.name for i in report.items if i.role.startswith("ncsnr")] == ["lh.ncsnr.mgh", "rh.ncsnr.mgh"]


def test_cli_check_exit_codes(tree, capsys):
    argv = ["--nsd-root", str(tree.root), "--subject", "1", "--check", "--trials-per-session",
            str(TPS), "--rois", "streams:early"]
    assert _run(argv) == 0
    assert "all ok" in capsys.readouterr().out
    tree.betas_file(2).unlink()
    assert _run([*argv, "--sessions", "2"]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "betas_session02.hdf5" in out


def test_cli_prepare_writes_file(tree, tmp_path, capsys):
    out = tmp_path / "out" / "prepared_subj01.h5"
    code = _run(["--nsd-root", str(tree.root), "--subject", "1", "--out", str(out),
                 "--rois", "streams:early", "nsdgeneral", "--sessions", "1-2",
                 "--beta-format", "nifti", "--zscore-sessions", "--scale", "raw",
                 "--trials-per-session", str(TPS), "--no-progress"])
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    data = load_prepared(out)
    assert data.roi_keys == ["early", "nsdgeneral"]
    assert data.attrs["beta_format"] == "nifti" and data.attrs["zscore_sessions"] is True
    assert data.attrs["scale"] == "raw"
    x, _ = data.train("early")
    ids = np.concatenate([tree.ids[1], tree.ids[2]])
    assert x.shape == ((~np.isin(ids, tree.shared_ids)).sum(), (tree.streams == 1).sum())


def test_parse_sessions():
    assert parse_sessions("37") == 37
    assert parse_sessions("1,3-5") == [1, 3, 4, 5]
    assert parse_sessions(None) is None



ROIS = ["streams:early", "nsdgeneral"]


def _statuses(report):
    """``{role: (status, detail)}`` of a report (roles unique in these trees)."""
    return {item.role: (item.status, item.detail) for item in report.items}


def _problems(report):
    return {item.role: item.path.name for item in report.problems}


def test_check_covers_stimuli_captions_and_design(tree):
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ROIS, "hdf5", TPS)
    assert report.ok
    roles = {item.role for item in report.items}
    assert {"brainmask", "stimuli", "stimulus info", "captions train2017", "captions val2017",
            "betas s01", "betas s02", "ncsnr", "design", "behaviour"} <= roles


def test_check_missing_stimuli_file(tree):
    tree.stimuli_file().unlink()
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"stimuli": "nsd_stimuli.hdf5"}
    assert _statuses(report)["stimuli"][0] == "missing"


@pytest.mark.parametrize(("shape", "dtype", "expected"), [
    ((73000, 4, 4, 3), np.float32, r"dtype float32; expected \(n_images, H, W, 3\) uint8"),
    ((73000, 4, 12), np.uint8, r"shape \(73000, 4, 12\) dtype uint8; expected \(n_images, H, W, 3\) uint8"),
    ((73000, 4, 4, 4), np.uint8, r"expected \(n_images, H, W, 3\) uint8"),
    ((100, 4, 4, 3), np.uint8, r"'imgBrick' has 100 images; ids \[\d+.* are out of range \[0, 100\)"),
])
def test_check_stimuli_wrong_dtype_or_shape(tree, shape, dtype, expected):
    with h5py.File(tree.stimuli_file(), "w") as handle:
        handle.create_dataset("imgBrick", shape=shape, dtype=dtype, chunks=True)
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"stimuli": "nsd_stimuli.hdf5"}
    status, detail = _statuses(report)["stimuli"]
    assert status == "malformed" and re.search(expected, detail)


def test_check_missing_and_incomplete_captions(tree):
    tree.captions_file("val2017").unlink()
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"captions val2017": "captions_val2017.json"}
    assert "annotations_trainval2017.zip" in _statuses(report)["captions val2017"][1]
    layout = NSDLayout(tree.root, 1)
    seen = sorted({int(i) for s in tree.sessions for i in tree.ids[s]})
    victim = next(i for i in seen if tree.coco_split[i] == "train2017")
    path = tree.captions_file("train2017")
    annotations = json.loads(path.read_text())
    annotations["annotations"] = [a for a in annotations["annotations"]
                                  if a["image_id"] != tree.coco_ids[victim]]
    path.write_text(json.dumps(annotations))
    report = check_nsd_tree(layout, None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"captions val2017": "captions_val2017.json",
                                 "captions train2017": "captions_train2017.json"}
    status, detail = _statuses(report)["captions train2017"]
    assert status == "malformed" and f"no captions for cocoId {tree.coco_ids[victim]} (73k id {victim})" in detail
    path.write_text(json.dumps({"images": []}))
    assert "expected a COCO captions JSON with 'annotations'" in _statuses(
        check_nsd_tree(layout, None, ROIS, "hdf5", TPS))["captions train2017"][1]


def test_check_stimulus_info_without_a_row(tree):
    path = tree.root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
    first = int(tree.ids[1][0])
    lines = [line for line in path.read_text().splitlines() if not line.startswith(f"{first},")]
    path.write_text("\n".join(lines) + "\n")
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"stimulus info": "nsd_stim_info_merged.csv"}
    assert f"no row for 73k ids [{first}]" in _statuses(report)["stimulus info"][1]


def _write_roi(tree, atlas, data):
    nib.save(nib.Nifti1Image(data, tree.affine), tree.roi_file(atlas))


def test_check_blames_the_wrong_shape_roi(tree):
    _write_roi(tree, "streams", np.pad(tree.streams, ((0, 1), (0, 0), (0, 0))))
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"roi streams:early": "streams.nii.gz"}
    status, detail = _statuses(report)["roi streams:early"]
    assert status == "malformed"
    assert detail == ("shape (X, Y, Z) (8, 9, 5), expected (7, 9, 5) like betas, brainmask, "
                      "roi nsdgeneral, ncsnr")
    for role in ("ncsnr", "betas s01", "betas s02", "roi nsdgeneral", "brainmask"):
        assert _statuses(report)[role][0] == "ok"


def test_check_shape_tie_goes_to_the_betas(tree):
    """One ROI against the betas, nothing else to vote: the betas' header is the reference."""
    for name in ("brainmask.nii.gz",):
        (tree.roi_file("streams").parent.parent / name).unlink()
    (tree.betas_file(1).parent / "ncsnr.nii.gz").unlink()
    _write_roi(tree, "streams", np.pad(tree.streams, ((0, 0), (0, 2), (0, 0))))
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ["streams:early", "streams:ventral"], "hdf5", TPS)
    assert set(_problems(report)) == {"roi streams:early", "roi streams:ventral"}
    assert "expected (7, 9, 5) like betas" in _statuses(report)["roi streams:ventral"][1]


def test_check_blames_the_wrong_shape_ncsnr(tree):
    path = tree.betas_file(1).parent / "ncsnr.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((7, 9, 6), np.float32), tree.affine), path)
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"ncsnr": "ncsnr.nii.gz"}
    assert _statuses(report)["ncsnr"][1].startswith("shape (X, Y, Z) (7, 9, 6), expected (7, 9, 5)")


def test_check_blames_the_wrong_hemisphere_label(tree):
    nib.save(nib.MGHImage(np.ones((27, 1, 1), np.int32), np.eye(4)),
             tree.root / "nsddata/freesurfer/fsaverage/label/rh.streams.mgz")
    report = check_nsd_tree(NSDLayout(tree.root, 1, space="fsaverage"), None, ["streams:early"],
                            trials_per_session=TPS)
    assert _problems(report) == {"roi streams:early": "rh.streams.mgz"}
    assert _statuses(report)["roi streams:early"][1].startswith("27 vertices, expected 26 like betas")


def test_check_missing_session_blames_its_file(tmp_path):
    tree = write_nsd_tree(tmp_path / "nsd", n_sessions=3, trials_per_session=TPS, seed=5)
    tree.betas_file(2).unlink()
    layout = NSDLayout(tree.root, 1)
    report = check_nsd_tree(layout, None, ROIS, "hdf5", TPS)
    assert _problems(report) == {"betas s02": "betas_session02.hdf5"}
    status, detail = _statuses(report)["betas s02"]
    assert status == "missing"
    assert detail == "responses.tsv lists sessions 1-3; download it, or prepare only the sessions on disk " \
                     "with --sessions 1,3"
    assert check_nsd_tree(layout, [1, 3], ROIS, "hdf5", TPS).ok
    assert check_nsd_tree(layout, 1, ROIS, "hdf5", TPS).ok


def test_cli_check_one_line_per_problem(tree, capsys):
    tree.stimuli_file().unlink()
    tree.betas_file(2).unlink()
    _write_roi(tree, "nsdgeneral", tree.nsdgeneral[:, :, :4])
    code = _run(["--nsd-root", str(tree.root), "--subject", "1", "--check", "--trials-per-session", str(TPS),
                 "--rois", *ROIS])
    assert code == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3
    assert errors[0].startswith(f"{tree.roi_file('nsdgeneral')}: roi nsdgeneral malformed: shape (X, Y, Z) "
                                "(7, 9, 4), expected (7, 9, 5)")
    assert errors[1].startswith(f"{tree.betas_file(2)}: betas s02 missing: responses.tsv lists sessions 1-2")
    assert errors[2].startswith(f"{tree.stimuli_file()}: stimuli missing")
    assert "3 problem(s)" in captured.out


def test_check_label_table_blamed_not_the_atlas(tree):
    ctab = tree.root / "nsddata/freesurfer/fsaverage/label/nsdgeneral.mgz.ctab"
    report = check_nsd_tree(NSDLayout(tree.root, 1), None, ["streams:early", "nsdgeneral:visual"], "hdf5", TPS)
    assert _problems(report) == {"labels": ctab.name}
    assert "no built-in table for 'nsdgeneral'" in _statuses(report)["labels"][1]
    status, detail = _statuses(report)["roi nsdgeneral:visual"]
    assert status == "ok" and detail.endswith("labels not checked")
    ctab.write_text("1 visual\n")
    assert check_nsd_tree(NSDLayout(tree.root, 1), None, ["nsdgeneral:visual"], "hdf5", TPS).ok
