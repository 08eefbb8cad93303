"""The BIDS + fMRIPrep data source: layout, events, confounds, ROIs, prepared contents, check, errors, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from bids_tree_writer import BREAKS, DUMMY, TR, BidsTree, write_bids_tree

from brain2image.config import PrepareConfig, SourceConfig
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.formats.prepared import load_prepared
from brain2image.sources.bids import prepare as bids_prepare
from brain2image.sources.bids.confounds import read_confounds
from brain2image.sources.bids.events import read_events
from brain2image.sources.bids.layout import BidsLayout, select_sessions
from brain2image.sources.bids.scratch import scratch_path
from brain2image.sources.bids.source import BIDSSource
from brain2image.sources.registry import get_source
from brain2image.sources.stimulus_folder import FolderStimuli


def _source(tree: BidsTree, **keys: object) -> BIDSSource:
    rois = keys.pop("roi", {"signal": str(tree.masks["fine"]), "rel": "reliable:10"})
    return BIDSSource(SourceConfig(kind="bids", root=str(tree.root), roi=rois, **keys))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> BidsTree:
    return write_bids_tree(tmp_path_factory.mktemp("bids"))


@pytest.fixture(scope="module")
def prepared(tree: BidsTree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Betas as estimated (``center_runs = false``: comparable with the known responses as they are)."""
    out = tmp_path_factory.mktemp("out") / "prepared_sub-01.h5"
    return _source(tree, center_runs=False).prepare("01", PrepareConfig(), out, progress=False)


def test_center_runs_subtracts_each_runs_mean(tree: BidsTree, prepared: Path, tmp_path: Path) -> None:
    centred = load_prepared(_source(tree).prepare("01", PrepareConfig(), tmp_path / "c.h5", progress=False))
    raw = load_prepared(prepared)
    assert centred.attrs["center_runs"] and not raw.attrs["center_runs"]
    x_raw, x_centred = raw.train("signal")[0], centred.train("signal")[0]
    assert x_raw.shape == x_centred.shape and not np.allclose(x_raw, x_centred)
    shift = x_raw - x_centred  # each run's mean: constant over the run's trials, so over few distinct values
    assert len(np.unique(np.round(shift[:, 0], 4))) <= 2 * 2  # 2 sessions x 2 runs


def test_registered_and_subjects(tree: BidsTree) -> None:
    source = get_source(SourceConfig(kind="bids", root=str(tree.root), roi={"a": "reliable:5"}))
    assert isinstance(source, BIDSSource) and source.kind == "bids" and source.dataset == "bids"
    assert source.subjects() == ["sub-01"]
    assert [source.subject_label(v) for v in ("01", "sub-01", 1, "02", 1.0)] == ["sub-01", "sub-01", None, None, None]
    with pytest.raises(MissingFileError, match="subjects present: sub-01"):
        source.require_subject("07", PrepareConfig())
    assert not source.stimuli().is_simulated() and source.stimuli().has_captions()


def test_refuses_keys_of_other_kinds_and_nsd_prepare_keys(tree: BidsTree, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"\[source\] betas"):
        BIDSSource(SourceConfig(kind="bids", root=str(tree.root), betas="x.npy"))
    for key, value in (("rois", ["nsdgeneral"]), ("scale", "raw"), ("beta_format", "nifti")):
        with pytest.raises(InvalidArgumentError, match=rf"\[prepare\] {key} .*NSD-only") as caught:
            _source(tree).prepare("01", PrepareConfig(**{key: value}), tmp_path / "p.h5", progress=False)
        assert "\n" not in str(caught.value)
    with pytest.raises(MissingFileError, match="dataset_description.json"):
        _source(tree, derivatives=str(tmp_path)).require_root()


def test_layout_runs_in_order_with_files_and_inherited_tr(tree: BidsTree) -> None:
    sidecar = tree.func("01", "02", 1, "bold.json", derivative=False)
    sidecar.write_text(json.dumps({"RepetitionTime": 2.0}))
    try:
        layout = BidsLayout(tree.root)
        runs = layout.runs("01")
    finally:
        sidecar.unlink()
    assert layout.task == "images" and layout.space == "T1w"
    assert [(r.session, r.run) for r in runs] == [("01", 1), ("01", 2), ("02", 1), ("02", 2)]
    assert all(r.bold and r.mask and r.confounds and r.events and r.raw_bold for r in runs)
    assert runs[0].bold == tree.func("01", "01", 1, "space-T1w_desc-preproc_bold.nii.gz")
    assert [r.tr for r in runs] == [TR, TR, 2.0, TR]  # the run's own sidecar wins over the root's


def test_sessions_in_scanning_order_and_selection(tmp_path: Path) -> None:
    tree = write_bids_tree(tmp_path, sessions=("2", "10"), runs=1, trials=8)
    assert BidsLayout(tree.root).sessions("01") == ["2", "10"]  # numbers compared as numbers
    (tree.root / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-2\t2021-03-02T10:00:00\nses-10\t2021-03-01T10:00:00\n")
    ordered = BidsLayout(tree.root).sessions("01")
    assert ordered == ["10", "2"]
    assert select_sessions(ordered, 1, "sub-01") == ["10"]
    assert select_sessions(ordered, [2], "sub-01") == ["2"]
    assert select_sessions(ordered, None, "sub-01") == ordered
    with pytest.raises(InvalidArgumentError, match="has no session 3"):
        select_sessions(ordered, [3], "sub-01")
    with pytest.raises(InvalidArgumentError, match="ask for at most 2"):
        select_sessions(ordered, 5, "sub-01")


def test_task_must_be_named_when_several(tree: BidsTree) -> None:
    with pytest.raises(InvalidArgumentError, match="tasks present: images"):
        _ = BidsLayout(tree.root, task="rest").task


def test_events_trials_ids_and_split(tree: BidsTree, tmp_path: Path) -> None:
    stimuli = FolderStimuli(tree.root / "stimuli")
    events = read_events(tree.func("01", "01", 1, "events.tsv", derivative=False), stimuli)
    assert len(events) == tree.trials  # the fixation row (stim_file n/a) is not a trial
    np.testing.assert_array_equal(events.image_ids, tree.image_ids["01"][:tree.trials])
    assert np.all(np.diff(events.onsets) > 0) and events.split is None
    table = tmp_path / "sub-01_task-images_events.tsv"
    table.write_text("onset\tduration\tstim_file\tpart\n0\t1\timages/img001.png\tTest\n6\t1\tn/a\tn/a\n"
                     "12\t1\timages/img002.png\ttrain\n")
    split = read_events(table, stimuli, split_column="part")
    assert split.split is not None and split.split.tolist() == ["test", "train"]
    with pytest.raises(DataFormatError, match="no column 'image'.*stimulus_column"):
        read_events(table, stimuli, stimulus_column="image")
    table.write_text("onset\tduration\tstim_file\tpart\n0\t1\timages/img001.png\tmaybe\n")
    with pytest.raises(DataFormatError, match="'maybe'.*expected 'train' or 'test'"):
        read_events(table, stimuli, split_column="part")


def test_confounds_patterns_na_and_dummy_volumes(tree: BidsTree) -> None:
    path = tree.func("01", "01", 1, "desc-confounds_timeseries.tsv")
    table = read_confounds(path, ["trans_*", "csf", "non_steady*"])
    assert table.names == ["trans_x", "trans_y", "trans_z", "trans_x_derivative1", "trans_y_derivative1",
                           "trans_z_derivative1", "csf"]  # dummy columns are never regressors
    assert np.all(np.isfinite(table.values)) and np.all(table.values[0, 3:6] == 0)  # n/a in row 1 -> 0
    assert table.n_dummy == DUMMY and not table.keep[:DUMMY].any() and table.keep[DUMMY:].all()
    with pytest.raises(DataFormatError, match="no confound column 'global_signal'"):
        read_confounds(path, ["csf", "global_signal"])
    with pytest.raises(DataFormatError, match="one row per volume"):
        read_confounds(path, ["csf"], n_volumes=3)


def test_prepared_betas_match_the_known_responses(tree: BidsTree, prepared: Path) -> None:
    data = load_prepared(prepared)
    assert data.attrs["source"] == "bids" and data.attrs["task"] == "images" and data.subject == "sub-01"
    assert tuple(data.volume_shape or ()) == tree.brain.shape and list(data.attrs["sessions"]) == [1, 2]
    brain_ijk = [tuple(v) for v in np.argwhere(tree.brain)]
    signal_ijk = data.ijk("signal")
    columns = [brain_ijk.index(tuple(v)) for v in signal_ijk]
    truth = tree.responses["01"][:, columns]
    ids = tree.image_ids["01"]
    repeated = np.isin(ids, np.unique(ids)[np.unique(ids, return_counts=True)[1] >= 2])
    x, train_ids = data.train("signal")
    np.testing.assert_array_equal(train_ids, ids[~repeated])
    assert np.corrcoef(x.ravel(), truth[~repeated].ravel())[0, 1] > 0.85
    test, test_ids = data.test("signal")
    truth_means = np.stack([truth[ids == i].mean(axis=0) for i in test_ids])
    assert len(test_ids) == 4 and np.corrcoef(test.ravel(), truth_means.ravel())[0, 1] > 0.85


def test_roi_on_another_grid_and_reliable_voxels(tree: BidsTree, prepared: Path) -> None:
    data = load_prepared(prepared)
    expected = {tuple(v) for v in np.argwhere(tree.signal & tree.brain)}
    assert {tuple(v) for v in data.ijk("signal")} == expected  # the fine-grid mask, resampled
    reliable = {tuple(v) for v in data.ijk("rel")}
    assert len(reliable) == 10 and reliable <= expected  # the top-ncsnr voxels respond to the images
    assert data.ncsnr("rel") is not None and np.all(data.ncsnr("rel") > 0)


def test_session_selection_in_prepare(tree: BidsTree, tmp_path: Path) -> None:
    out = _source(tree, roi={"signal": str(tree.masks["signal"])}).prepare(
        "01", PrepareConfig(sessions=[2]), tmp_path / "p.h5", progress=False)
    data = load_prepared(out)
    assert list(data.attrs["sessions"]) == [2] and data.attrs["n_trials"] == 2 * tree.trials
    assert len(data.ijk("signal")) == int((tree.signal & tree.brain).sum())


_EXPECTED = {
    "events_without_bold": (MissingFileError, "events.tsv: events without a preprocessed BOLD run"),
    "bold_without_events": (MissingFileError, "preproc_bold.nii.gz: BOLD run without events"),
    "unknown_stim": (DataFormatError, "'images/not_there.png' is not an image file"),
    "no_tr": (DataFormatError, "bold.nii.gz: no RepetitionTime"),
    "mask_grid": (DataFormatError, "brain_mask.nii.gz: grid .* is not the BOLD's"),
    "missing_confound": (DataFormatError, "timeseries.tsv: no confound column 'csf'"),
    "nan_volume": (DataFormatError, "preproc_bold.nii.gz: 1 volume.* hold NaN"),
    "same_onset": (DataFormatError, "events.tsv: two trials or more share onset"),
    "no_repeats": (DataFormatError, "0 test images"),
    "no_captions": (MissingFileError, "captions.tsv: not found"),
    "no_onset_column": (DataFormatError, "events.tsv: no column 'onset'"),
}


@pytest.mark.parametrize("broken", BREAKS)
def test_check_lists_each_problem_and_prepare_refuses_it(broken: str, tmp_path: Path) -> None:
    tree = write_bids_tree(tmp_path, broken=broken)
    source = _source(tree)
    check = source.check("sub-01", PrepareConfig())
    error, pattern = _EXPECTED[broken]
    assert not check.ok and any(re.search(pattern, line) for line in check.problem_lines()), \
        check.problem_lines()
    assert "problem(s)" in check.format_table()
    out = tmp_path / "prepared.h5"
    if broken == "no_captions":  # prepare does not need captions (the c target does)
        source.prepare("01", PrepareConfig(), out, progress=False)
        assert out.is_file() and not scratch_path(out).exists()
        return
    with pytest.raises(error, match=pattern) as caught:
        source.prepare("01", PrepareConfig(), out, progress=False)
    assert "\n" not in str(caught.value) and not out.exists()


def test_missing_roi_mask_is_listed(tree: BidsTree, tmp_path: Path) -> None:
    source = _source(tree, roi={"early": str(tmp_path / "none.nii.gz")})
    check = source.check("01", PrepareConfig())
    assert not check.ok and any("none.nii.gz does not exist" in line for line in check.problem_lines())
    with pytest.raises(MissingFileError, match="none.nii.gz does not exist"):
        source.prepare("01", PrepareConfig(), tmp_path / "p.h5", progress=False)


def test_scratch_resumes_run_by_run(tree: BidsTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls, fail_at = bids_prepare.run_betas, [], [3]

    def failing(plan, positions, confounds, settings, center=False):  # type: ignore[no-untyped-def]
        calls.append((plan.session, plan.index))
        if len(calls) in fail_at:
            raise KeyboardInterrupt
        return real(plan, positions, confounds, settings, center=center)

    monkeypatch.setattr(bids_prepare, "run_betas", failing)
    source, out = _source(tree, roi={"signal": str(tree.masks["signal"])}), tmp_path / "p.h5"
    with pytest.raises(KeyboardInterrupt):
        source.prepare("01", PrepareConfig(), out, progress=False)
    assert scratch_path(out).is_file() and not out.exists()
    calls.clear()
    source.prepare("01", PrepareConfig(), out, progress=False)
    assert calls == [(2, 1), (2, 2)]  # the two runs done are not estimated again
    assert out.is_file() and not scratch_path(out).exists()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        source.prepare("01", PrepareConfig(), tmp_path / "q.h5", progress=False)
    calls.clear()
    fail_at.clear()
    _source(tree, roi={"signal": str(tree.masks["signal"])}, hrf="spm").prepare(
        "01", PrepareConfig(), tmp_path / "q.h5", progress=False)
    assert len(calls) == 4  # other GLM settings: start over
