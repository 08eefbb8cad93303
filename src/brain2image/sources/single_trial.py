"""Single-trial betas of any source -> the prepared file: :func:`write_single_trial_prepared`.

A source that has one beta per trial (estimated by :mod:`brain2image.glm` from BIDS runs, or read
from precomputed betas) describes its trials with a :class:`TrialTable` and its ROIs with
:class:`RoiSelection` (explicit voxels, or the ``reliable`` voxels of highest ncsnr), and hands a
function reading one session's betas. Sessions are read twice: a first pass keeps the trials of
repeated images to compute NSD's ncsnr (each session z-scored over all its trials, as NSD does),
the second writes the rows session by session; memory stays at one session plus the repeated
trials.

Every image of the file gets a stimulus key (``/stimulus_keys``, :meth:`PreparedData.stimulus_keys
<brain2image.formats.prepared.PreparedData.stimulus_keys>`), its identity across data sets:
``"nsd:<0-based 73k id>"`` when the trials name its NSD id (``[source] identity_column``,
:func:`nsd_identity`), else ``"sha256:<hex>"`` of its file's bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import DataFormatError, InvalidArgumentError
from ..formats.prepared import PreparedRoi, PreparedWriter, TrialIndex
from ..stats import average_repeats
from .nsd.betas import zscore_trials

__all__ = ["TrialTable", "RoiSelection", "write_single_trial_prepared", "REQUIRED_ATTRS", "NSD_IMAGES",
           "nsd_identity", "stimulus_keys"]

logger = logging.getLogger(__name__)

#: File attributes the caller must give (see :func:`write_single_trial_prepared`).
REQUIRED_ATTRS = ("subject", "space", "source", "volume_shape", "affine", "stimuli_identity")
#: How the split column's values must be written.
_SPLIT_VALUES = ("train", "test")
#: NSD's image space: 0-based 73k ids are 0 .. NSD_IMAGES - 1.
NSD_IMAGES = 73000
#: Values of an identity column that mean "no NSD id" (case-insensitive, after stripping).
_MISSING = ("", "n/a", "nan", "none")


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


@dataclass(frozen=True)
class TrialTable:
    """One row per trial, in scanning order (sessions contiguous and non-decreasing).

    Attributes
    ----------
    image_id : array of shape (n_trials,)
        Stimulus id of each trial (:meth:`FolderStimuli.ids_of <.stimulus_folder.FolderStimuli.ids_of>`).
    session : array of shape (n_trials,)
        1-based session of each trial (the position of the session in scanning order).
    run : array of shape (n_trials,)
        Run of each trial within its session.
    split : array of shape (n_trials,) of str, or None
        ``"train"`` / ``"test"`` per trial; None: images shown twice or more are test (as NSD's shared images).
    identity : array of shape (n_trials,), int64, or None
        Each trial's image as a 0-based NSD 73k id, -1 where none is given (:func:`nsd_identity`);
        one id per image. None: no identity column.
    """

    image_id: np.ndarray
    session: np.ndarray
    run: np.ndarray
    split: np.ndarray | None = None
    identity: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(np.asarray(self.image_id).reshape(-1))
        columns = {"image_id": self.image_id, "session": self.session, "run": self.run}
        if self.split is not None:
            columns["split"] = self.split
        if self.identity is not None:
            columns["identity"] = self.identity
        for name, values in columns.items():
            if np.asarray(values).ndim != 1 or len(values) != n:
                raise InvalidArgumentError(f"trial table: column {name!r} has shape {np.shape(values)}; expected "
                                           f"({n},), one value per trial")
        for name in ("image_id", "session", "run"):
            if n and not np.issubdtype(np.asarray(columns[name]).dtype, np.integer):
                raise InvalidArgumentError(f"trial table: column {name!r} has dtype {np.asarray(columns[name]).dtype};"
                                           " expected integers")
        self._check_values()

    def _check_values(self) -> None:
        if len(self.image_id) and int(np.min(self.image_id)) < 0:
            raise InvalidArgumentError("trial table: negative image_id; expected stimulus ids >= 0")
        session = np.asarray(self.session)
        if len(session) and (session.min() < 1 or np.any(np.diff(session) < 0)):
            raise InvalidArgumentError("trial table: column 'session' must hold 1-based sessions in scanning order "
                                       "(non-decreasing, >= 1)")
        if self.split is not None:
            bad = sorted(set(np.asarray(self.split).astype(str).tolist()) - set(_SPLIT_VALUES))
            if bad:
                raise InvalidArgumentError(f"trial table: split value {bad[0]!r}; expected 'train' or 'test'")

    def __len__(self) -> int:
        return len(self.image_id)

    def image_identity(self) -> tuple[np.ndarray, np.ndarray]:
        """The sorted unique image ids and each one's NSD id (-1: none), both int64.

        Raises
        ------
        InvalidArgumentError
            An image with two NSD ids (:func:`nsd_identity` refuses them with the file's name).
        """
        ids, inverse = np.unique(np.asarray(self.image_id, dtype=np.int64), return_inverse=True)
        nsd = np.full(len(ids), -1, dtype=np.int64)
        if self.identity is None:
            return ids, nsd
        np.maximum.at(nsd, inverse.reshape(-1), np.asarray(self.identity, dtype=np.int64))
        given = np.asarray(self.identity) >= 0
        if np.any(np.asarray(self.identity)[given] != nsd[inverse.reshape(-1)][given]):
            raise InvalidArgumentError("trial table: an image has two NSD ids in column 'identity'; expected one "
                                       "per image")
        return ids, nsd

    def repeated(self) -> np.ndarray:
        """Whether each trial's image is shown twice or more, bool of shape (n_trials,)."""
        _, inverse, counts = np.unique(np.asarray(self.image_id), return_inverse=True, return_counts=True)
        return counts[inverse.reshape(-1)] >= 2

    def is_test(self) -> np.ndarray:
        """Test trials, bool of shape (n_trials,): the split column's ``"test"`` rows, else :meth:`repeated`."""
        if self.split is not None:
            return np.asarray(self.split).astype(str) == "test"
        return self.repeated()

    def sessions(self) -> list[int]:
        """The sessions, in scanning order."""
        return [int(s) for s in dict.fromkeys(np.asarray(self.session).tolist())]

    def trial_in_session(self) -> np.ndarray:
        """1-based index of each trial within its session, shape (n_trials,)."""
        session = np.asarray(self.session)
        starts = {int(s): int(np.argmax(session == s)) for s in self.sessions()}
        return np.arange(len(session)) - np.array([starts[int(s)] for s in session], dtype=np.int64) + 1


@dataclass(frozen=True)
class RoiSelection:
    """One ROI of the prepared file: explicit voxel columns, or the ``reliable`` voxels of highest ncsnr.

    Attributes
    ----------
    key : str
        Its group name under ``/rois``.
    columns : array of shape (n_roi_voxels,) or None
        Indices into the ``positions`` given to :func:`write_single_trial_prepared`.
    reliable : int or None
        The N voxels of highest ncsnr among all ``positions`` (ties broken by voxel order).
    atlas : str
        Where the ROI comes from (a mask path), recorded as the ROI's ``atlas`` attribute.
    """

    key: str
    columns: np.ndarray | None = None
    reliable: int | None = None
    atlas: str = ""

    def __post_init__(self) -> None:
        if (self.columns is None) == (self.reliable is None):
            raise InvalidArgumentError(f"ROI {self.key!r}: give exactly one of columns or reliable (got "
                                       f"columns={'None' if self.columns is None else 'an array'}, "
                                       f"reliable={self.reliable!r})")
        if self.reliable is not None and int(self.reliable) < 1:
            raise InvalidArgumentError(f"ROI {self.key!r}: reliable:{self.reliable}; expected a positive voxel count")

    def spec(self) -> str:
        """How the ROI was asked for (``reliable:N`` or its atlas), for the file's ``roi_specs``."""
        return f"reliable:{self.reliable}" if self.reliable is not None else (self.atlas or "columns")


def _nsd_id(value: object, origin: str, column: str) -> int:
    """One identity-column value as a 0-based NSD id; -1 for a missing one (n/a, empty)."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    if text.lower() in _MISSING:
        return -1
    number = int(text) if text.isdigit() else -1
    if not 0 <= number < NSD_IMAGES:
        raise DataFormatError(f"{origin}: column {column!r} holds {text!r} on a trial row; expected a 0-based NSD "
                              f"73k id (0..{NSD_IMAGES - 1}) or n/a")
    return number


def nsd_identity(image_ids: np.ndarray, values: Sequence[object], origins: Sequence[str], column: str,
                 name_of: Callable[[int], str] = str) -> np.ndarray:
    """Each trial's image as a 0-based NSD 73k id, from an identity column (:attr:`TrialTable.identity`).

    Parameters
    ----------
    image_ids : array of shape (n_trials,)
        Each trial's image id.
    values : sequence of length n_trials
        The column's value on each trial row (``n/a``, empty or None: no id).
    origins : sequence of str, length n_trials
        The file each row comes from, for messages.
    column : str
        The column's name, for messages.
    name_of : callable
        An image id's name in messages (its stimulus file).

    Returns
    -------
    array of shape (n_trials,), int64
        -1 where the row gives no id.

    Raises
    ------
    DataFormatError
        A value that is not an id; an image given two ids, or one id given to two images (naming
        the file, the column and both values).
    """
    image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    out = np.array([_nsd_id(v, o, column) for v, o in zip(values, origins)], dtype=np.int64).reshape(-1)
    first: dict[int, tuple[int, str]] = {}
    owner: dict[int, tuple[int, str]] = {}
    for image, nsd, origin in zip(image_ids.tolist(), out.tolist(), origins):
        if nsd < 0:
            continue
        seen, where = first.setdefault(image, (nsd, origin))
        if seen != nsd:
            raise DataFormatError(f"{origin}: column {column!r} gives {name_of(image)} NSD id {nsd}, but {where} "
                                  f"gives it {seen}; expected one NSD id per image")
        other, where = owner.setdefault(nsd, (image, origin))
        if other != image:
            raise DataFormatError(f"{origin}: column {column!r} gives NSD id {nsd} to {name_of(image)}, but {where} "
                                  f"gives it to {name_of(other)}; expected one image per NSD id")
    return out


def stimulus_keys(trials: TrialTable, content_keys: Callable[[np.ndarray], Sequence[str]]
                  ) -> tuple[np.ndarray, list[str]]:
    """Every image's identity across data sets: ``"nsd:<id>"`` from the trials, else ``content_keys``.

    Parameters
    ----------
    trials : TrialTable
    content_keys : callable
        ``content_keys(ids)`` -> a key per id for the images without an NSD id
        (:meth:`FolderStimuli.content_keys <.stimulus_folder.FolderStimuli.content_keys>`).

    Returns
    -------
    ids : array of shape (n_images,), int64
        The sorted unique image ids of the trials.
    keys : list of str, length n_images
    """
    ids, nsd = trials.image_identity()
    keys = [f"nsd:{n}" if n >= 0 else "" for n in nsd.tolist()]
    rest = np.flatnonzero(nsd < 0)
    if len(rest):
        hashed = list(content_keys(ids[rest]))
        if len(hashed) != len(rest):
            raise InvalidArgumentError(f"content_keys gave {len(hashed)} keys for {len(rest)} images; expected one "
                                       "per image")
        for row, key in zip(rest.tolist(), hashed):
            keys[row] = str(key)
    return ids, keys


def _check_attrs(attrs: Mapping[str, Any], positions: np.ndarray, where: str) -> None:
    """One-line errors unless ``attrs`` has every :data:`REQUIRED_ATTRS` and the positions fit ``volume_shape``."""
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise InvalidArgumentError(f"{_prefix(where)}prepared-file attrs lack {missing}; expected "
                                   f"{list(REQUIRED_ATTRS)}")
    shape = np.asarray(attrs["volume_shape"])
    affine = np.asarray(attrs["affine"], dtype=np.float64)
    if shape.shape != (3,) or np.any(shape < 1):
        raise InvalidArgumentError(f"{_prefix(where)}attr volume_shape is {shape.tolist()}; expected (X, Y, Z)")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InvalidArgumentError(f"{_prefix(where)}attr affine has shape {affine.shape}; expected a finite 4x4")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise InvalidArgumentError(f"{_prefix(where)}positions have shape {positions.shape}; expected (n_voxels, 3)")
    if len(positions) and (positions.min() < 0 or np.any(positions.max(axis=0) >= shape)):
        raise InvalidArgumentError(f"{_prefix(where)}voxel positions reach {positions.max(axis=0).tolist()}, outside "
                                   f"volume_shape {shape.tolist()}")


def _check_split(trials: TrialTable, test: np.ndarray, where: str) -> None:
    """No test trial, or no training trial, is a one-line error saying how images repeat."""
    counts = np.unique(np.asarray(trials.image_id), return_counts=True)[1]
    shown = f"{len(counts)} images shown {counts.min()}..{counts.max()} times" if len(counts) else "no trial"
    how = ("the split column's 'test' rows" if trials.split is not None
           else "the images shown >= 2 times (give a split column to choose them)")
    if not test.any():
        raise DataFormatError(f"{_prefix(where)}no test trial: the test set is {how}, and the trials have {shown}; "
                              "show some images twice or more, or mark test trials in a split column")
    if test.all():
        raise DataFormatError(f"{_prefix(where)}no training trial: every trial is a test trial ({how}; {shown}); "
                              "expected images shown once for training, or 'train' rows in the split column")


def _read_checked(read_session: Callable[[int], np.ndarray], session: int, n_trials: int, n_voxels: int,
                  where: str) -> np.ndarray:
    """``read_session(session)`` as float32 (n_trials, n_voxels); wrong shapes and NaN/inf are one-line errors."""
    betas = np.asarray(read_session(session))
    if betas.shape != (n_trials, n_voxels):
        raise DataFormatError(f"{_prefix(where)}betas of session {session} have shape {betas.shape}; expected "
                              f"({n_trials}, {n_voxels}): the session's trials in table order x the voxels")
    betas = betas.astype(np.float32, copy=False)
    bad = ~np.isfinite(betas)
    if bad.any():
        raise DataFormatError(f"{_prefix(where)}betas of session {session} hold {int(bad.sum())} NaN/inf values in "
                              f"{int(bad.any(axis=0).sum())} of {n_voxels} voxels; expected finite betas "
                              "(leave voxels outside the brain out of the mask)")
    return betas


def _ncsnr(z: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """NSD's ncsnr of session-z-scored repeated trials ``z`` (n_trials, n_voxels), float32 (0 for constant voxels)."""
    from ..glm.reliability import repeat_noise_variance

    _, image_index, counts = np.unique(image_ids, return_inverse=True, return_counts=True)
    noise = repeat_noise_variance(z.astype(np.float64), image_index.reshape(-1), counts)
    signal = np.sqrt(np.maximum(0.0, 1.0 - noise))
    return np.divide(signal, np.sqrt(noise), out=np.zeros_like(noise), where=noise > 0).astype(np.float32)


def _repeat_ncsnr(trials: TrialTable, read_session: Callable[[int], np.ndarray], n_voxels: int, where: str,
                  progress: bool) -> tuple[np.ndarray | None, tuple[int, np.ndarray] | None]:
    """First pass: NSD's ncsnr of every voxel (None when no image repeats).

    Each session is z-scored over all its trials (NSD's definition), then only the trials of
    repeated images are kept. Returns the ncsnr and, when the table has a single session, that
    session's betas (so it is read once).
    """
    repeated = trials.repeated()
    sessions = trials.sessions()
    if not repeated.any():
        return None, None
    session = np.asarray(trials.session)
    parts, kept = [], None
    for s in tqdm(sessions, desc="ncsnr (repeated images)", unit="session", disable=not progress):
        rows = session == s
        if not repeated[rows].any():
            continue
        betas = _read_checked(read_session, s, int(rows.sum()), n_voxels, where)
        kept = (s, betas) if len(sessions) == 1 else None
        parts.append(zscore_trials(betas)[repeated[rows]])
    return _ncsnr(np.concatenate(parts), np.asarray(trials.image_id)[repeated]), kept


def _columns(roi: RoiSelection, ncsnr: np.ndarray | None, n_voxels: int, where: str) -> np.ndarray:
    """The ROI's columns: its own, or the top-``reliable`` ncsnr voxels in voxel order."""
    if roi.reliable is None:
        columns = np.asarray(roi.columns, dtype=np.int64).reshape(-1)
        valid = len(columns) and columns.min() >= 0 and columns.max() < n_voxels
        if not valid or len(np.unique(columns)) < len(columns):
            raise InvalidArgumentError(f"{_prefix(where)}ROI {roi.key!r}: {len(columns)} columns; expected distinct "
                                       f"voxel indices in 0..{n_voxels - 1}, at least one")
        return columns
    if ncsnr is None:
        raise DataFormatError(f"{_prefix(where)}ROI {roi.key!r} = reliable:{roi.reliable} needs the ncsnr of repeated "
                              "images, but no image is shown twice or more; give a mask instead")
    if roi.reliable > n_voxels:
        raise InvalidArgumentError(f"{_prefix(where)}ROI {roi.key!r} = reliable:{roi.reliable} but only {n_voxels} "
                                   "voxels are candidates; ask for fewer")
    score = np.where(np.isfinite(ncsnr), ncsnr, -np.inf)
    order = np.lexsort((np.arange(n_voxels), -score))  # highest first, ties by voxel order
    return np.sort(order[:roi.reliable])


def _prepared_rois(rois: Sequence[RoiSelection], positions: np.ndarray, ncsnr: np.ndarray | None,
                   where: str) -> list[PreparedRoi]:
    keys = [roi.key for roi in rois]
    if not keys or len(set(keys)) != len(keys):
        raise InvalidArgumentError(f"{_prefix(where)}ROI keys {keys}; expected at least one, each once")
    out = []
    for roi in rois:
        columns = _columns(roi, ncsnr, len(positions), where)
        out.append(PreparedRoi(key=roi.key, atlas=roi.atlas or roi.spec(), label="",
                               label_values=np.zeros(0, dtype=np.int64), columns=columns,
                               positions={"ijk": positions[columns]},
                               ncsnr=None if ncsnr is None else ncsnr[columns]))
    return out


def _trial_index(trials: TrialTable, rows: np.ndarray, trial: np.ndarray) -> TrialIndex:
    return TrialIndex(ids=np.asarray(trials.image_id, dtype=np.int64)[rows],
                      session=np.asarray(trials.session, dtype=np.int16)[rows], trial=trial[rows].astype(np.int16))


def write_single_trial_prepared(out: str | Path, *, trials: TrialTable, read_session: Callable[[int], np.ndarray],
                                positions: np.ndarray, rois: Sequence[RoiSelection], attrs: Mapping[str, Any],
                                zscore_sessions: bool = False, progress: bool = True, where: str = "",
                                content_keys: Callable[[np.ndarray], Sequence[str]] | None = None) -> Path:
    """Write a prepared file (:mod:`brain2image.formats.prepared`) from single-trial betas.

    Train rows are the trials not in the test set, in table order; ``test`` holds each test image's
    mean over its trials (sorted unique ids, ``n_repeats``); ``test_trials`` the single test trials.
    Every ROI gets the ncsnr of its voxels (NSD's formula over the session-z-scored trials of every
    image shown twice or more, train or test) when some image repeats.

    Parameters
    ----------
    out : path-like
        The prepared file (written atomically: nothing is left there on failure).
    trials : TrialTable
        Every trial, in scanning order.
    read_session : callable
        ``read_session(session)`` -> array of shape (n_trials of that session, n_voxels): the
        session's betas in table order at ``positions``. Called twice per session (once when the
        table has a single session, or no image repeats).
    positions : array of shape (n_voxels, 3)
        Voxel indices (i, j, k) of the betas' columns in the volume ``attrs["volume_shape"]``.
    rois : sequence of RoiSelection
    attrs : mapping
        File attributes. Required (:data:`REQUIRED_ATTRS`): ``subject`` (str or int), ``space`` (e.g.
        ``"T1w"``), ``source`` (the source kind, ``"bids"`` / ``"betas"``), ``volume_shape`` (X, Y, Z)
        and ``affine`` (4x4, voxel to world; the encoding maps need both), ``stimuli_identity``
        (from :meth:`StimulusSource.identity`, which also gives ``stimuli``). Anything else is
        recorded as given. Written here (and overriding the caller's): ``sessions``,
        ``zscore_sessions``, ``rois``, ``roi_specs``, ``n_trials``.
    zscore_sessions : bool
        Z-score every voxel over each session's trials before writing.
    progress : bool
        Progress bars over sessions.
    where : str
        What the data is (``"sub-01 of /data/bids"``), leading every error.
    content_keys : callable, optional
        ``content_keys(ids)`` -> the stimulus key of each image without an NSD id in ``trials.identity``
        (:func:`stimulus_keys`); the file's ``/stimulus_keys`` are written when it is given. None: no
        ``/stimulus_keys`` (the file cannot be matched to other subjects' by stimulus).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InvalidArgumentError
        Missing or malformed ``attrs``, positions, ROIs.
    DataFormatError
        No test trial or no training trial, ``read_session`` giving the wrong shape or non-finite
        betas (naming the session), ``reliable:N`` without repeated images.
    """
    positions = np.asarray(positions, dtype=np.int64)
    _check_attrs(attrs, positions, where)
    test = trials.is_test()
    _check_split(trials, test, where)
    keys = None if content_keys is None else stimulus_keys(trials, content_keys)
    ncsnr, kept = _repeat_ncsnr(trials, read_session, len(positions), where, progress)
    prepared_rois = _prepared_rois(rois, positions, ncsnr, where)
    trial = trials.trial_in_session()
    file_attrs = {**attrs, "sessions": np.asarray(trials.sessions(), dtype=np.int16),
                  "zscore_sessions": bool(zscore_sessions), "rois": [roi.key for roi in rois],
                  "roi_specs": [roi.spec() for roi in rois], "n_trials": len(trials)}
    logger.info("%s%d sessions, %d train trials, %d test trials, %d voxels", _prefix(where), len(trials.sessions()),
                int((~test).sum()), int(test.sum()), len(positions))
    out = Path(out)
    with PreparedWriter(out, file_attrs, _trial_index(trials, ~test, trial), _trial_index(trials, test, trial),
                        prepared_rois) as writer:
        session = np.asarray(trials.session)
        for s in tqdm(trials.sessions(), desc="prepare", unit="session", disable=not progress):
            rows = session == s
            betas = kept[1] if kept is not None and kept[0] == s else \
                _read_checked(read_session, s, int(rows.sum()), len(positions), where)
            betas = zscore_trials(betas) if zscore_sessions else betas
            writer.write_session(betas[~test[rows]], betas[test[rows]])
        test_ids = np.asarray(trials.image_id, dtype=np.int64)[test]
        unique_ids, counts = np.unique(test_ids, return_counts=True)
        writer.write_test(unique_ids, counts, {roi.key: average_repeats(writer.read_test_trials(roi.key), test_ids)[0]
                                               for roi in prepared_rois})
        if keys is not None:
            writer.write_stimulus_keys(*keys)
    logger.info("wrote %s", out)
    return out
