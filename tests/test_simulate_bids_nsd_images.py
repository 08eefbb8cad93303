"""``simulate --format bids --nsd-study``: a BIDS subject who saw a simulated NSD study's images.

Its test images are NSD shared images, its training images other NSD images; the events name each
one's 73k id (``nsd_id``), so its prepared file's stimulus keys match the NSD subjects' (the
cross-dataset transfer needs only the images both saw).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from study_fixtures import one_error_line, simulate_small_study

from brain2image.cli import main
from brain2image.config import PrepareConfig, SourceConfig
from brain2image.embedded.simulate.bids_study import SimulatedBidsStudy, simulate_bids_study
from brain2image.embedded.simulate.study import SimulatedStudy
from brain2image.errors import InvalidArgumentError, MissingFileError
from brain2image.formats.prepared import PreparedData, load_prepared
from brain2image.sources.bids.source import BIDSSource
from brain2image.sources.nsd.design import load_expdesign
from brain2image.sources.nsd.layout import NSDLayout
from brain2image.sources.nsd.prepare import prepare_subject
from brain2image.sources.nsd.stimuli import load_captions, read_stimuli
from brain2image.sources.stimulus_folder import FolderStimuli

#: A small BIDS study over the small NSD study's images (300 images, 8 shared): 6 of its 8 shared images
#: as test images (3 times each), 34 other images once; 3 sessions of 2 runs.
SMALL_BIDS = {"n_images": 40, "n_test": 6, "n_sessions": 3, "runs_per_session": 2, "trials_per_run": 12,
              "train_repeats": 1, "volume_shape": (12, 14, 10),
              "roi_sizes": {"early": 120, "ventral": 120, "midventral": 20, "lateral": 20}}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedStudy, SimulatedBidsStudy, Path]:
    root = tmp_path_factory.mktemp("nsd_bids")
    nsd = simulate_small_study(root / "nsd_study")
    bids = simulate_bids_study(root / "bids_study", seed=2, progress=False, nsd_study=root / "nsd_study",
                               **SMALL_BIDS)
    return nsd, bids, root


def _shared(nsd: SimulatedStudy) -> np.ndarray:
    return load_expdesign(NSDLayout(nsd.nsd_root, 1).expdesign()).sharedix - 1


def _nsd_ids(bids: SimulatedBidsStudy) -> np.ndarray:
    with h5py.File(bids.truth_paths[0], "r") as handle:
        assert handle.attrs["nsd_study"] == str(bids.nsd_study)
        return handle["nsd_id"][()]


def test_events_name_each_image_by_its_nsd_id_test_images_shared(studies) -> None:
    nsd, bids, _ = studies
    nsd_ids = _nsd_ids(bids)
    events = pd.concat([pd.read_csv(p, sep="\t") for p in sorted(bids.bids_root.rglob("*_events.tsv"))])
    assert list(events.columns)[-1] == "nsd_id"
    np.testing.assert_array_equal(events["nsd_id"].to_numpy(), nsd_ids[events["stim_id"].to_numpy()])
    test = np.unique(events.loc[events["trial_split"] == "test", "stim_id"])
    train = np.unique(events.loc[events["trial_split"] == "train", "stim_id"])
    shared = _shared(nsd)
    assert len(test) == 6 and np.isin(nsd_ids[test], shared).all()
    assert len(train) == 34 and not np.isin(nsd_ids[train], shared).any()
    assert len(np.unique(nsd_ids)) == 40 and nsd_ids.max() < 300


def test_stimuli_are_the_nsd_bricks_images_with_their_captions_and_labels(studies) -> None:
    nsd, bids, _ = studies
    nsd_ids = _nsd_ids(bids)
    folder = FolderStimuli(bids.bids_root / "stimuli", image_size=64)
    ids = folder.ids()
    brick = NSDLayout(nsd.nsd_root, 1).stimuli()
    np.testing.assert_array_equal(folder.images(ids), read_stimuli(brick, nsd_ids))
    assert folder.captions(ids) == load_captions(nsd.nsd_root, nsd_ids)
    with h5py.File(nsd.truth_path, "r") as a, h5py.File(bids.truth_paths[0], "r") as b:
        np.testing.assert_array_equal(b["labels"][()], a["labels"][()][nsd_ids])


def test_prepared_test_keys_are_nsd_shared_images_matching_the_nsd_subject(studies) -> None:
    nsd, bids, root = studies
    source = BIDSSource(SourceConfig(kind="bids", root=str(bids.bids_root), roi={"v": "reliable:30"},
                                     split_column="trial_split", identity_column="nsd_id"))
    prepared = load_prepared(source.prepare("01", PrepareConfig(), root / "sub-01.h5", progress=False))
    test_ids = prepared.trials("test")["ids"]
    nsd_ids = _nsd_ids(bids)
    keys = prepared.stimulus_keys(test_ids).tolist()
    assert keys == [f"nsd:{i}" for i in nsd_ids[test_ids].tolist()]
    assert {int(k.removeprefix("nsd:")) for k in keys} <= set(_shared(nsd).tolist())
    reference = PreparedData(prepare_subject(nsd.nsd_root, 1, root / "subj01.h5", rois=("streams:early",),
                                             progress=False))
    reference_test = set(reference.stimulus_keys(reference.trials("test")["ids"]).tolist())
    reference_train = set(reference.stimulus_keys(np.unique(reference.trials("train")["ids"])).tolist())
    train_keys = set(prepared.stimulus_keys(np.unique(prepared.trials("train")["ids"])).tolist())
    assert set(keys) <= reference_test and train_keys <= reference_train and len(train_keys) == 34


def test_same_seed_same_images_and_the_subject_keeps_its_own_draws(studies, tmp_path: Path) -> None:
    _, bids, root = studies
    again = simulate_bids_study(tmp_path / "again", seed=2, progress=False, nsd_study=root / "nsd_study",
                                **SMALL_BIDS)
    plain = simulate_bids_study(tmp_path / "plain", seed=2, progress=False, image_size=64, **SMALL_BIDS)
    np.testing.assert_array_equal(_nsd_ids(again), _nsd_ids(bids))
    with h5py.File(bids.truth_paths[0], "r") as a, h5py.File(plain.truth_paths[0], "r") as b:
        np.testing.assert_array_equal(a["voxels/ijk"][()], b["voxels/ijk"][()])  # same anatomy draw
        np.testing.assert_array_equal(a["trials/image_id"][()], b["trials/image_id"][()])  # same design
        assert "nsd_id" not in b


def test_bad_nsd_study_is_one_line(studies, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, root = studies
    with pytest.raises(InvalidArgumentError, match=r"8 shared and 292 other images.*--n-test <= 8"):
        simulate_bids_study(tmp_path / "a", nsd_study=root / "nsd_study", progress=False,
                            **{**SMALL_BIDS, "n_test": 9})
    with pytest.raises(InvalidArgumentError, match=r"--image-size 32: the images of --nsd-study .* are 64 px"):
        simulate_bids_study(tmp_path / "b", nsd_study=root / "nsd_study", image_size=32, progress=False,
                            **SMALL_BIDS)
    with pytest.raises(MissingFileError, match=r"--nsd-study .*bids_study: no nsd; expected a folder written by"):
        simulate_bids_study(tmp_path / "c", nsd_study=root / "bids_study", progress=False, **SMALL_BIDS)
    assert main(["simulate", "--format", "bids", "--out", str(tmp_path / "d"),
                 "--nsd-study", str(root / "nsd_study")]) == 2  # the demo's 30 test images: 8 shared only
    assert "--n-test <= 8" in one_error_line(capsys, "simulate")
    assert main(["simulate", "--out", str(tmp_path / "e"), "--nsd-study", str(root / "nsd_study")]) == 2
    assert "--nsd-study applies to --format bids only" in one_error_line(capsys, "simulate")
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()
