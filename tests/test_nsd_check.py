"""``check_nsd_tree`` and the ``brain2image prepare`` command (including ``--check``)."""

import h5py
import numpy as np
import pytest
from nsd_tree_writer import write_nsd_tree

from brain2image.commands.prepare import parse_sessions
from brain2image.formats.prepared import load_prepared
from brain2image.nsd import NSDLayout, check_nsd_tree

TPS = 24


@pytest.fixture()
def tree(tmp_path):
    return write_nsd_tree(tmp_path / "nsd", n_sessions=2, trials_per_session=TPS, seed=5)


def _run(argv):
    """Run the ``prepare`` subcommand through the real parser (other commands not needed)."""
    import argparse

    from brain2image.commands import prepare

    parser = argparse.ArgumentParser()
    prepare.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", *argv])
    return args.func(args)


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

