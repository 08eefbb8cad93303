"""Stimulus keys of the single-trial sources: an image's identity across data sets (``/stimulus_keys``).

The bids and betas sources key every image of the prepared file by ``"sha256:<file bytes>"``, or by
``"nsd:<0-based 73k id>"`` from ``[source] identity_column``; an image with two ids, or an id on two
images, is a one-line error naming the file and the column; NSD prepared files key by their 73k ids.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brain2image.config import PrepareConfig, SourceConfig
from brain2image.embedded.simulate.bids_study import SimulatedBidsStudy, simulate_bids_study
from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.formats.prepared import load_prepared
from brain2image.sources.bids.source import BIDSSource
from brain2image.sources.registry import get_source
from brain2image.sources.single_trial import nsd_identity
from brain2image.sources.stimulus_folder import FolderStimuli

#: Two sessions of four trials over images a..e (ids 0..4): a, b and d repeat (test), c and e are train.
STIMS = ["images/a.png", "images/b.png", "images/c.png", "images/d.png",
         "images/a.png", "images/b.png", "images/e.png", "images/d.png"]
#: A tiny simulated BIDS study (3 sessions of 2 runs, 48 images, 12 of them test).
TINY_BIDS = {"n_images": 48, "n_test": 12, "n_sessions": 3, "runs_per_session": 2, "trials_per_run": 12,
             "train_repeats": 1, "volume_shape": (12, 14, 10), "image_size": 16,
             "roi_sizes": {"early": 120, "ventral": 120, "midventral": 20, "lateral": 20}}


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _betas_study(tmp_path: Path, nsd: list[str] | None = None) -> dict[str, str]:
    """Images a..e, random betas (8 trials x 6 voxels) and a trials TSV (with an ``nsd`` column when given)."""
    root = tmp_path / "study"
    (root / "stimuli" / "images").mkdir(parents=True)
    for k, name in enumerate("abcde"):
        Image.fromarray(np.full((6, 6, 3), 40 * k, dtype=np.uint8)).save(root / "stimuli" / "images" / f"{name}.png")
    np.save(tmp_path / "betas.npy", np.random.default_rng(0).normal(size=(len(STIMS), 6)).astype(np.float32))
    table = pd.DataFrame({"stim_file": STIMS, "session": ["01"] * 4 + ["02"] * 4, "run": 1})
    if nsd is not None:
        table["nsd"] = nsd
    table.to_csv(tmp_path / "trials.tsv", sep="\t", index=False)
    return {"root": str(root), "betas": str(tmp_path / "betas.npy"), "trials": str(tmp_path / "trials.tsv")}


def _prepare_betas(tmp_path: Path, files: dict[str, str], **keys: object) -> Path:
    source = get_source(SourceConfig(kind="betas", roi={"v": "reliable:3"}, **files, **keys))  # type: ignore[arg-type]
    return source.prepare("01", PrepareConfig(), tmp_path / "prepared.h5", progress=False)


def test_betas_without_identity_column_key_images_by_their_file_bytes(tmp_path: Path) -> None:
    files = _betas_study(tmp_path)
    prepared = load_prepared(_prepare_betas(tmp_path, files))
    ids = prepared.image_ids()
    np.testing.assert_array_equal(ids, np.arange(5))
    images = Path(files["root"]) / "stimuli" / "images"
    assert prepared.stimulus_keys(ids).tolist() == [_sha256(images / f"{n}.png") for n in "abcde"]
    assert prepared.attrs["identity_column"] == ""


def test_betas_identity_column_gives_nsd_keys_and_n_a_falls_back_to_the_content(tmp_path: Path) -> None:
    # a: 70 then n/a on its repeat (still 70); e: n/a on its only trial (content hash)
    files = _betas_study(tmp_path, nsd=["70", "5", "123", "72999", "n/a", "5", "n/a", "72999"])
    prepared = load_prepared(_prepare_betas(tmp_path, files, identity_column="nsd"))
    keys = prepared.stimulus_keys(np.arange(5)).tolist()
    e = Path(files["root"]) / "stimuli" / "images" / "e.png"
    assert keys == ["nsd:70", "nsd:5", "nsd:123", "nsd:72999", _sha256(e)]
    test_ids = prepared.trials("test")["ids"]
    assert prepared.stimulus_keys(test_ids).tolist() == ["nsd:70", "nsd:5", "nsd:72999"]
    assert prepared.attrs["identity_column"] == "nsd"


@pytest.mark.parametrize(("values", "expected"), [
    (["70", "5", "123", "9", "71", "5", "8", "9"], ["images/a.png", "NSD id 71", "70", "one NSD id per image"]),
    (["70", "5", "5", "9", "70", "5", "8", "9"], ["NSD id 5", "images/c.png", "images/b.png",
                                                  "one image per NSD id"]),
    (["70", "5", "abc", "9", "70", "5", "8", "9"], ["'abc'", "0-based NSD 73k id"]),
    (["70", "5", "73000", "9", "70", "5", "8", "9"], ["'73000'", "0..72999"]),
])
def test_betas_identity_conflicts_and_bad_values_are_one_line_errors(tmp_path: Path, values: list[str],
                                                                     expected: list[str]) -> None:
    files = _betas_study(tmp_path, nsd=values)
    with pytest.raises(DataFormatError) as caught:
        _prepare_betas(tmp_path, files, identity_column="nsd")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(files["trials"]) and "column 'nsd'" in message
    assert all(text in message for text in expected), message
    assert not (tmp_path / "prepared.h5").exists()
    source = get_source(SourceConfig(kind="betas", roi={"v": "reliable:3"}, identity_column="nsd",
                                     **files))  # type: ignore[arg-type]
    assert not source.check("01", PrepareConfig()).ok


def test_betas_identity_column_must_exist(tmp_path: Path) -> None:
    files = _betas_study(tmp_path)
    with pytest.raises(DataFormatError, match=r"trials.tsv: no column 'nsd_id'"):
        _prepare_betas(tmp_path, files, identity_column="nsd_id")


def test_nsd_identity_names_the_file_of_each_conflicting_row() -> None:
    ids = np.array([0, 1, 0])
    origins = ["run-1_events.tsv", "run-1_events.tsv", "run-2_events.tsv"]
    np.testing.assert_array_equal(nsd_identity(ids, ["4", "", "4"], origins, "nsd_id"), [4, -1, 4])
    np.testing.assert_array_equal(nsd_identity(ids, [None, float("nan"), " 7 "], origins, "nsd_id"), [-1, -1, 7])
    with pytest.raises(DataFormatError, match=r"^run-2_events.tsv: column 'nsd_id' gives img0 NSD id 5, but "
                                              r"run-1_events.tsv gives it 4; expected one NSD id per image$"):
        nsd_identity(ids, ["4", "n/a", "5"], origins, "nsd_id", name_of=lambda i: f"img{i}")


def test_the_nsd_source_refuses_an_identity_column() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\[source\] identity_column = 'nsd_id': does not apply"):
        get_source(SourceConfig(kind="nsd", identity_column="nsd_id"))


@pytest.fixture(scope="module")
def bids_study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedBidsStudy:
    return simulate_bids_study(tmp_path_factory.mktemp("bids") / "study", seed=3, progress=False, **TINY_BIDS)


def _bids(study: SimulatedBidsStudy, root: Path | None = None, **keys: object) -> BIDSSource:
    return BIDSSource(SourceConfig(kind="bids", root=str(root or study.bids_root), roi={"v": "reliable:20"},
                                   split_column="trial_split", **keys))  # type: ignore[arg-type]


def test_bids_keys_are_the_stimulus_files_content_without_identity_column(bids_study: SimulatedBidsStudy,
                                                                          tmp_path: Path) -> None:
    events = pd.read_csv(next(bids_study.bids_root.rglob("*_events.tsv")), sep="\t")
    assert "nsd_id" not in events.columns  # no --nsd-study: the events are as before
    prepared = load_prepared(_bids(bids_study).prepare("01", PrepareConfig(), tmp_path / "p.h5", progress=False))
    ids = prepared.image_ids()
    stimuli = FolderStimuli(bids_study.bids_root / "stimuli")
    expected = [_sha256(stimuli.folder / name) for name in stimuli.names(ids)]
    assert prepared.stimulus_keys(ids).tolist() == expected and len(set(expected)) == len(ids) == 48


def test_bids_identity_column_keys_every_train_and_test_image(bids_study: SimulatedBidsStudy, tmp_path: Path) -> None:
    # stim_id holds each image's id: read as an identity column, every key is "nsd:<image id>"
    source = _bids(bids_study, identity_column="stim_id")
    prepared = load_prepared(source.prepare("01", PrepareConfig(), tmp_path / "p.h5", progress=False))
    for split in ("train", "test"):
        ids = np.unique(prepared.trials(split)["ids"])
        assert prepared.stimulus_keys(ids).tolist() == [f"nsd:{i}" for i in ids.tolist()]
    assert prepared.attrs["identity_column"] == "stim_id"


def test_bids_identity_conflict_is_listed_by_check_and_refused_before_the_glm(bids_study: SimulatedBidsStudy,
                                                                             tmp_path: Path) -> None:
    root = tmp_path / "bids"
    shutil.copytree(bids_study.bids_root, root)
    path = sorted(root.rglob("*_events.tsv"))[-1]
    events = pd.read_csv(path, sep="\t")
    row = int(np.flatnonzero(events["trial_split"] == "test")[0])  # a test image: shown in earlier runs too
    image, other = events["stim_file"].iloc[row], int(events["stim_id"].iloc[row]) + 1000
    events.loc[row, "stim_id"] = other
    events.to_csv(path, sep="\t", index=False, na_rep="n/a")
    source = _bids(bids_study, root=root, identity_column="stim_id")
    rows = [row for row in source.check("01", PrepareConfig()).rows if row[1] == "problem"]
    assert len(rows) == 1 and rows[0][2].startswith(str(path)) and f"NSD id {other}" in rows[0][2]
    with pytest.raises(DataFormatError) as caught:
        source.prepare("01", PrepareConfig(), tmp_path / "p.h5", progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: column 'stim_id' gives {image} NSD id {other}")
    assert not list(tmp_path.glob("p.h5*"))  # refused before any run's betas were estimated
