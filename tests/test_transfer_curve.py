"""The transfer learning curve on a simulated 4-subject cohort, and its bookkeeping.

Subject 1 is the new subject, subjects 2, 3 and 4 the references; every point is scored on the same
held-out test images. The slow test pins what the cohort shows (docs/transfer.md): more sessions
help the own decoder; with one session, the transfer decodes c nearly as well as the own decoder
of that session (measured: r 0.717 against 0.735) and its z + c images are well identified
(semantic 86.5%, own 91.3%).
"""

from __future__ import annotations

import dataclasses
import json
import os

import pandas as pd
import pytest

from brain2image.config import DecoderConfig, EncodingOptions, ReconstructionConfig, RunConfig
from brain2image.embedded.simulate.study import simulate_study
from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.pipeline import run_pipeline, subject_configs
from brain2image.transfer_curve import check_same_test_ids, curve_points, default_sessions, transfer_curve

#: The ``transfer`` preset at CPU-test size: 4 sessions (k = 1 and all), 120 shared images (60 held out).
COHORT = {"n_images": 1100, "n_shared": 120, "n_sessions": 4, "volume_shape": (20, 24, 16),
          "roi_sizes": {"early": 700, "ventral": 700, "midventral": 100, "lateral": 100}}


def _base_config(root, **changes) -> RunConfig:
    """The cohort's run settings: bundled model, z_plus_c only, 1 sample of 10 steps, no encoding."""
    return RunConfig(nsd_root=str(root / "study" / "nsd"), out_dir=str(root / "refs"), threads=2,
                     decoder=DecoderConfig(cv_folds=3),
                     reconstruction=ReconstructionConfig(methods=("z_plus_c",), n_samples=1, num_inference_steps=10),
                     encoding=EncodingOptions(enabled=False), **changes)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A simulated 4-subject cohort and its reference run (prepare, features, fit of every subject).

    The features of subject 1 are linked into the other subjects' folders (every subject saw every image).
    """
    root = tmp_path_factory.mktemp("transfer_curve")
    simulate_study(root / "study", preset="transfer", n_subjects=4, progress=False, **COHORT)
    study = _base_config(root, subjects=[1, 2, 3, 4])
    first, *others = subject_configs(study)
    run_pipeline(first, progress=False, stages=["prepare", "features"])
    for config in others:
        folder = root / "refs" / f"subj{config.subject:02d}" / "features"
        folder.mkdir(parents=True)
        for store in (root / "refs" / "subj01" / "features").glob("*.h5"):
            os.link(store, folder / store.name)
    for config in [first, *others]:  # one by one: a study run of some stages would end with its summary
        run_pipeline(config, progress=False, stages=["prepare", "features", "fit"])
    return root


@pytest.mark.slow
def test_one_session_transfer_decodes_close_to_the_own_decoder(cohort):
    config = dataclasses.replace(_base_config(cohort), stage_settings={"transfer": {"seed": 0, "test_fraction": 0.5}})
    out = cohort / "curve"
    curve = transfer_curve(config, out_dir=out, subject=1, references=[2, 3, 4], reference_run=cohort / "refs",
                           sessions=[1, "all"], progress=False)
    assert set(zip(curve["sessions"], curve["decoder"])) == {("1", "own"), ("1", "transfer"), ("all", "own"),
                                                              ("all", "transfer")}
    saved = json.loads((out / "curve.json").read_text())
    assert saved["n_test"] == len(saved["test_ids"]) == 60 and saved["split_seed"] == 0
    assert (curve["n_test"] == 60).all() and (out / "curve.png").stat().st_size > 0
    assert pd.read_csv(out / "curve.csv").shape == curve.shape
    assert "curve.png" in (out / "report.html").read_text()
    point = curve.set_index(["sessions", "decoder"])
    for column in ("r_c", "z_plus_c_id_semantic"):  # more sessions help the own decoder
        assert point.loc[("all", "own"), column] > point.loc[("1", "own"), column], column
    # one session through the references: decoded c close to the own decoder's, images well identified
    assert point.loc[("1", "transfer"), "r_c"] > point.loc[("1", "own"), "r_c"] - 0.03 > 0.6
    assert point.loc[("1", "transfer"), "z_plus_c_id_semantic"] > 0.8


def test_curve_points_and_default_sessions():
    assert default_sessions(40) == [1, 2, 4, 8, 16, 32, "all"] and default_sessions(1) == ["all"]
    points = curve_points([1, "all"], ["own", "transfer"], [100, 250], "all")
    assert [p.folder for p in points] == ["k1_own", "k1_transfer", "kall_own", "kall_transfer",
                                          "a100_kall_transfer", "a250_kall_transfer"]
    with pytest.raises(InvalidArgumentError, match="decoder 'mine'"):
        curve_points([1], ["mine"], None, "all")
    with pytest.raises(InvalidArgumentError, match="alignment size 0"):
        curve_points([1], ["own"], [0], "all")


def test_points_with_other_test_images_are_refused(tmp_path):
    for name, ids in (("a", [3, 1, 2]), ("b", [1, 2, 3]), ("c", [1, 2, 4])):
        (tmp_path / name / "transfer").mkdir(parents=True)
        (tmp_path / name / "transfer" / "split.json").write_text(json.dumps({"seed": 0, "test_ids": ids}))
    assert check_same_test_ids([tmp_path / "a", tmp_path / "b"])["test_ids"] == [1, 2, 3]
    with pytest.raises(DataFormatError, match="same held-out images"):
        check_same_test_ids([tmp_path / "a", tmp_path / "c"])
