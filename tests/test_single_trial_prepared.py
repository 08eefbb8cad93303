"""write_single_trial_prepared: a trial table + per-session betas -> the prepared file, read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.formats.prepared import load_prepared
from brain2image.sources.single_trial import RoiSelection, TrialTable, write_single_trial_prepared

#: Two sessions of five trials; images 0 (3 times) and 1 (twice) repeat.
IMAGES = np.array([0, 1, 2, 3, 0, 4, 1, 5, 0, 6])
SESSIONS = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
RUNS = np.array([1, 1, 1, 2, 2, 1, 1, 1, 2, 2])
POSITIONS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 2, 2], [1, 2, 0]])
ATTRS = {"subject": "01", "space": "T1w", "source": "bids", "volume_shape": np.array([3, 3, 3]),
         "affine": np.diag([2.0, 2.0, 2.0, 1.0]), "stimuli_identity": "7:abc", "stimuli": "/data/stimuli"}


def _betas(seed: int = 0) -> np.ndarray:
    """(10 trials, 6 voxels): voxel 1 follows the image strongly, voxel 3 is its copy, voxel 5 is constant."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=7)[IMAGES]
    betas = rng.normal(size=(len(IMAGES), len(POSITIONS)))
    betas[:, 1] = 3 * signal + 0.3 * betas[:, 1]
    betas[:, 2] = signal + betas[:, 2]
    betas[:, 3] = betas[:, 1]
    betas[:, 5] = 4.0
    return betas.astype(np.float32)


def _reader(betas: np.ndarray, calls: list[int] | None = None) -> Callable[[int], np.ndarray]:
    def read(session: int) -> np.ndarray:
        if calls is not None:
            calls.append(session)
        return betas[SESSIONS == session]
    return read


def _zscore_by_session(betas: np.ndarray) -> np.ndarray:
    out = np.empty(betas.shape)
    for s in np.unique(SESSIONS):
        rows = betas[SESSIONS == s].astype(np.float64)
        std = rows.std(axis=0)
        out[SESSIONS == s] = (rows - rows.mean(axis=0)) / np.where(std == 0, 1, std)
    return out


def _hand_ncsnr(betas: np.ndarray) -> np.ndarray:
    """NSD's definition, written out: z within sessions, mean repeat variance over repeated images."""
    z = _zscore_by_session(betas)
    variances = [z[IMAGES == image].var(axis=0, ddof=1) for image in (0, 1)]
    noise = np.mean(variances, axis=0)
    signal = np.sqrt(np.maximum(0, 1 - noise))
    return np.array([s / np.sqrt(n) if n > 0 else 0.0 for s, n in zip(signal, noise)])


def _write(tmp_path: Path, betas: np.ndarray, rois: list[RoiSelection], **kwargs: object) -> Path:
    trials = kwargs.pop("trials", TrialTable(image_id=IMAGES, session=SESSIONS, run=RUNS))
    read = kwargs.pop("read_session", _reader(betas))
    return write_single_trial_prepared(tmp_path / "prepared.h5", trials=trials, read_session=read,  # type: ignore[arg-type]
                                       positions=POSITIONS, rois=rois, attrs=ATTRS, progress=False,
                                       where="sub-01", **kwargs)  # type: ignore[arg-type]


def test_splits_ncsnr_and_attrs(tmp_path: Path) -> None:
    betas = _betas()
    calls: list[int] = []
    rois = [RoiSelection("all", columns=np.arange(6)), RoiSelection("some", columns=np.array([4, 0]))]
    path = _write(tmp_path, betas, rois, read_session=_reader(betas, calls))
    assert calls == [1, 2, 1, 2]  # the ncsnr pass, then the writing pass
    data = load_prepared(path)
    test = np.isin(IMAGES, [0, 1])
    X, ids = data.train("all")
    np.testing.assert_array_equal(ids, IMAGES[~test])
    np.testing.assert_allclose(X, betas[~test])
    assert data.trials("train")["trial"].tolist() == [3, 4, 1, 3, 5]
    assert data.trials("train")["session"].tolist() == [1, 1, 2, 2, 2]
    X, ids = data.test_trials("all")
    np.testing.assert_array_equal(ids, IMAGES[test])
    np.testing.assert_allclose(X, betas[test])
    X, ids = data.test("all")
    np.testing.assert_array_equal(ids, [0, 1])
    np.testing.assert_array_equal(data.n_repeats(), [3, 2])
    np.testing.assert_allclose(X, [betas[IMAGES == 0].mean(axis=0), betas[IMAGES == 1].mean(axis=0)], rtol=1e-6)
    np.testing.assert_allclose(data.ncsnr("all"), _hand_ncsnr(betas), rtol=1e-5)
    assert data.ncsnr("all")[5] == 0 and data.ncsnr("all")[1] > data.ncsnr("all")[0]
    np.testing.assert_array_equal(data.ijk("some"), POSITIONS[[4, 0]])
    np.testing.assert_allclose(data.train("some")[0], betas[~test][:, [4, 0]])
    assert data.subject == "01" and data.space == "T1w" and data.volume_shape == (3, 3, 3)
    np.testing.assert_array_equal(data.affine, ATTRS["affine"])
    assert data.attrs["sessions"] == [1, 2] and data.attrs["stimuli_identity"] == "7:abc"
    assert data.attrs["rois"] == ["all", "some"] and data.attrs["zscore_sessions"] is False


def test_reliable_selection_ties_by_voxel_order(tmp_path: Path) -> None:
    betas = _betas()
    path = _write(tmp_path, betas, [RoiSelection("top1", reliable=1), RoiSelection("top3", reliable=3)])
    data = load_prepared(path)
    expected = _hand_ncsnr(betas)
    assert expected[1] == expected[3]  # voxel 3 copies voxel 1: the tie goes to voxel 1
    np.testing.assert_array_equal(data.ijk("top1"), POSITIONS[[1]])
    top3 = np.sort(np.lexsort((np.arange(6), -expected))[:3])
    np.testing.assert_array_equal(data.ijk("top3"), POSITIONS[top3])
    np.testing.assert_allclose(data.ncsnr("top3"), expected[top3], rtol=1e-5)
    np.testing.assert_allclose(data.train("top3")[0], betas[~np.isin(IMAGES, [0, 1])][:, top3])
    assert data.attrs["roi_specs"] == ["reliable:1", "reliable:3"]


def test_zscore_sessions(tmp_path: Path) -> None:
    betas = _betas(1)
    data = load_prepared(_write(tmp_path, betas, [RoiSelection("all", columns=np.arange(6))], zscore_sessions=True))
    z = _zscore_by_session(betas)
    test = np.isin(IMAGES, [0, 1])
    np.testing.assert_allclose(data.train("all")[0], z[~test], atol=1e-5)
    np.testing.assert_allclose(data.test("all")[0], [z[IMAGES == 0].mean(axis=0), z[IMAGES == 1].mean(axis=0)],
                               atol=1e-5)
    assert data.attrs["zscore_sessions"] is True


def test_split_column_chooses_test(tmp_path: Path) -> None:
    betas = _betas(2)
    split = np.where(np.isin(IMAGES, [5, 6, 1]), "test", "train")
    trials = TrialTable(image_id=IMAGES, session=SESSIONS, run=RUNS, split=split)
    data = load_prepared(_write(tmp_path, betas, [RoiSelection("all", columns=np.arange(6))], trials=trials))
    is_test = split == "test"
    np.testing.assert_array_equal(data.train("all")[1], IMAGES[~is_test])
    np.testing.assert_array_equal(data.test("all")[1], [1, 5, 6])
    np.testing.assert_array_equal(data.n_repeats(), [2, 1, 1])
    np.testing.assert_allclose(data.test("all")[0][1], betas[IMAGES == 5][0])
    np.testing.assert_allclose(data.ncsnr("all"), _hand_ncsnr(betas), rtol=1e-5)  # every repeated image counts


def test_single_session_read_once(tmp_path: Path) -> None:
    images = np.array([0, 1, 0, 2, 1, 3])
    betas = np.random.default_rng(3).normal(size=(6, 6)).astype(np.float32)
    calls: list[int] = []
    trials = TrialTable(image_id=images, session=np.ones(6, dtype=int), run=np.ones(6, dtype=int))
    data = load_prepared(_write(tmp_path, betas, [RoiSelection("all", columns=np.arange(6))], trials=trials,
                                read_session=lambda s: calls.append(s) or betas))
    assert calls == [1]
    np.testing.assert_allclose(data.train("all")[0], betas[[3, 5]])


def _one_line_error(tmp_path: Path, error: type[Exception], **kwargs: object) -> str:
    rois = kwargs.pop("rois", [RoiSelection("all", columns=np.arange(6))])
    with pytest.raises(error) as info:
        _write(tmp_path, kwargs.pop("betas", _betas()), rois, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value) and not (tmp_path / "prepared.h5").exists()
    return str(info.value)


def test_no_test_or_no_train_trial(tmp_path: Path) -> None:
    once = TrialTable(image_id=np.arange(10), session=SESSIONS, run=RUNS)
    message = _one_line_error(tmp_path, DataFormatError, trials=once)
    assert "no test trial" in message and "shown 1..1 times" in message and "split column" in message
    all_test = TrialTable(image_id=IMAGES, session=SESSIONS, run=RUNS, split=np.full(10, "test"))
    assert "no training trial" in _one_line_error(tmp_path, DataFormatError, trials=all_test)


def test_bad_session_betas_name_the_session(tmp_path: Path) -> None:
    betas = _betas()
    message = _one_line_error(tmp_path, DataFormatError, read_session=lambda s: betas[SESSIONS == s][:, :4])
    assert "session 1" in message and "(5, 6)" in message
    bad = betas.copy()
    bad[7, 2] = np.nan
    message = _one_line_error(tmp_path, DataFormatError, betas=bad)
    assert "session 2" in message and "NaN" in message


def test_bad_rois_and_attrs(tmp_path: Path) -> None:
    assert "reliable:7" in _one_line_error(tmp_path, InvalidArgumentError, rois=[RoiSelection("r", reliable=7)])
    assert "columns" in _one_line_error(tmp_path, InvalidArgumentError, rois=[RoiSelection("c", columns=np.array([6]))])
    split = np.where(np.isin(IMAGES, [0, 1]), "test", "train")
    unique = TrialTable(image_id=np.arange(10), session=SESSIONS, run=RUNS, split=split)
    message = _one_line_error(tmp_path, DataFormatError, trials=unique, rois=[RoiSelection("r", reliable=2)])
    assert "shown twice" in message
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        RoiSelection("x")
    with pytest.raises(InvalidArgumentError) as info:
        write_single_trial_prepared(tmp_path / "p.h5", trials=TrialTable(IMAGES, SESSIONS, RUNS),
                                    read_session=_reader(_betas()), positions=POSITIONS,
                                    rois=[RoiSelection("all", columns=np.arange(6))],
                                    attrs={k: v for k, v in ATTRS.items() if k != "affine"}, progress=False)
    assert "affine" in str(info.value) and not (tmp_path / "p.h5").exists()


def test_trial_table_validation() -> None:
    with pytest.raises(InvalidArgumentError, match="scanning order"):
        TrialTable(image_id=IMAGES, session=SESSIONS[::-1], run=RUNS)
    with pytest.raises(InvalidArgumentError, match="'maybe'"):
        TrialTable(image_id=IMAGES, session=SESSIONS, run=RUNS, split=np.full(10, "maybe"))
    with pytest.raises(InvalidArgumentError, match="'run'"):
        TrialTable(image_id=IMAGES, session=SESSIONS, run=RUNS[:3])
    table = TrialTable(image_id=IMAGES, session=SESSIONS, run=RUNS)
    assert table.is_test().tolist() == np.isin(IMAGES, [0, 1]).tolist()
    assert table.trial_in_session().tolist() == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
