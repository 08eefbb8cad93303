"""``prepare``: NSD tree -> ``prepared_subjXX.h5`` (ROI-masked single-trial betas, train/test split).

Sessions are read one at a time, only at the union of the requested ROIs' voxels, and written
straight into the output file, so memory stays at one masked session plus the test rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ...errors import DataFormatError, MissingFileError
from ...formats.prepared import PreparedRoi, PreparedWriter, TrialIndex
from ...stats import average_repeats
from .betas import (
    beta_file_info,
    read_surface_betas,
    read_surface_map,
    read_volume_betas,
    read_volume_map,
    require_finite,
    scale_betas,
    zscore_trials,
)
from .design import ExpectedSessions, expected_sessions, format_sessions, trial_table
from .layout import DEFAULT_BETA_VERSION, HEMIS, TRIALS_PER_SESSION, NSDLayout
from .rois import CHECK_HINT, RoiMask, load_roi_masks, parse_roi_spec
from .stimuli import study_provenance

__all__ = ["DEFAULT_ROIS", "SessionGap", "average_repeats", "find_session_gap", "prepare_subject",
           "resolve_sessions"]

logger = logging.getLogger(__name__)

#: ROIs of the paper: early visual (z decoder), ventral (c decoder), and all of nsdgeneral.
DEFAULT_ROIS = ("streams:early", "streams:ventral", "nsdgeneral")
#: Missing files named in one message, at most.
MAX_NAMED = 4


@dataclass(frozen=True)
class SessionGap:
    """Sessions the subject has (per its behaviour / design file) whose beta files are not on disk.

    Attributes
    ----------
    expected : ExpectedSessions
    on_disk : tuple of int
        Sessions whose beta files are all present.
    missing : tuple of int
        Expected sessions not on disk (empty when nothing is missing).
    absent : tuple of Path
        The beta files of ``missing`` that are not there.
    """

    expected: ExpectedSessions
    on_disk: tuple[int, ...]
    missing: tuple[int, ...]
    absent: tuple[Path, ...]

    def advice(self) -> str:
        """How to proceed: download the files, or ``--sessions`` naming only the sessions on disk."""
        kept = list(self.on_disk)
        if kept == list(range(1, len(kept) + 1)):
            option = str(len(kept))  # a count: sessions 1..n
        elif len(kept) == 1:
            option = f"{kept[0]}-{kept[0]}"  # a lone number would be a count
        else:
            option = format_sessions(kept)
        return ("download " + ("it" if len(self.absent) == 1 else "them")
                + (f", or prepare only the sessions on disk with --sessions {option}" if kept else ""))

    def message(self) -> str:
        """One line naming the missing files, where they were looked for and how to proceed."""
        names = ", ".join(p.name for p in self.absent[:MAX_NAMED])
        more = f" and {len(self.absent) - MAX_NAMED} more" if len(self.absent) > MAX_NAMED else ""
        folder = self.absent[0].parent if self.absent else ""
        return (f"{len(self.missing)} session(s) missing ({format_sessions(self.missing)}): {names}{more} "
                f"not found in {folder} ({self.expected.describe()}); {self.advice()}")


def find_session_gap(layout: NSDLayout, beta_format: str = "hdf5",
                     trials_per_session: int = TRIALS_PER_SESSION) -> SessionGap:
    """Compare the sessions on disk with those the subject's ``responses.tsv`` / design lists.

    Raises
    ------
    MissingFileError, DataFormatError
        If neither the behaviour nor the design file can say which sessions exist.
    """
    on_disk = layout.sessions_on_disk(beta_format)
    expected = expected_sessions(layout, trials_per_session, on_disk)
    missing = tuple(s for s in expected.sessions if s not in on_disk)
    absent = tuple(p for s in missing for p in layout.session_files(s, beta_format) if not p.is_file())
    return SessionGap(expected, tuple(on_disk), missing, absent)


def resolve_sessions(layout: NSDLayout, sessions: int | Sequence[int] | None,
                     beta_format: str = "hdf5", trials_per_session: int = TRIALS_PER_SESSION) -> list[int]:
    """Turn a session request into a sorted list of 1-based sessions.

    Parameters
    ----------
    layout : NSDLayout
    sessions : int, sequence of int or None
        A count ``n`` (sessions 1..n), an explicit list, or None: every session on disk, which
        must include every session the subject's ``responses.tsv`` (or design) lists.
    beta_format : str
    trials_per_session : int

    Raises
    ------
    MissingFileError
        If a requested session's beta file is absent, no session is on disk, or (``sessions``
        None) a listed session has no betas: a gap would silently drop its trials, so it is an
        error naming the files and the ``--sessions`` that proceeds without them.
    """
    if sessions is None:
        if not layout.sessions_on_disk(beta_format):
            raise MissingFileError(f"no beta files ({beta_format}) in {layout.betas_dir()}")
        gap = find_session_gap(layout, beta_format, trials_per_session)
        if gap.missing:
            raise MissingFileError(gap.message())
        return list(gap.on_disk)
    wanted = list(range(1, int(sessions) + 1)) if isinstance(sessions, (int, np.integer)) \
        else sorted({int(s) for s in sessions})
    if not wanted or wanted[0] < 1:
        raise ValueError(f"sessions must be a positive count or 1-based session numbers, "
                         f"got {sessions!r}")
    missing = [str(p) for s in wanted for p in layout.session_files(s, beta_format)
               if not p.is_file()]
    if missing:
        raise MissingFileError(f"{len(missing)} beta file(s) missing: {', '.join(missing[:5])}"
                               + (" ..." if len(missing) > 5 else ""))
    return wanted


def _check_session_files(layout: NSDLayout, sessions: list[int], beta_format: str,
                         masks: list[RoiMask], shape: tuple[int, ...],
                         trials_per_session: int) -> None:
    """Cheap header checks of every session file before any data is read."""
    atlas = masks[0].source
    for session in sessions:
        if layout.is_surface:
            for hemi_index, path in enumerate(layout.session_files(session)):
                info = beta_file_info(path, "mgh")
                if info.spatial_shape[0] != shape[hemi_index]:
                    raise DataFormatError(
                        f"{path}: {info.spatial_shape[0]} vertices but {atlas[hemi_index]} has "
                        f"{shape[hemi_index]}; {CHECK_HINT}")
                _check_trials(info.n_trials, path, trials_per_session)
        else:
            path = layout.betas_session(session, beta_format)
            info = beta_file_info(path, beta_format)
            if tuple(info.spatial_shape) != tuple(shape):
                raise DataFormatError(f"{path}: volume shape (X, Y, Z) {info.spatial_shape} "
                                      f"differs from ROI atlas {atlas[0]} shape {tuple(shape)}; {CHECK_HINT}")
            _check_trials(info.n_trials, path, trials_per_session)


def _check_trials(n_trials: int, path: Path, trials_per_session: int) -> None:
    if n_trials != trials_per_session:
        raise DataFormatError(f"{path}: {n_trials} trials on the betas' trial axis but the "
                              f"behaviour has {trials_per_session} per session")


def _read_session(layout: NSDLayout, session: int, beta_format: str, positions: np.ndarray,
                  shape: tuple[int, ...], trials_per_session: int) -> np.ndarray:
    """Raw betas of one session at the union's positions, shape (n_trials, n_union); finite or an error."""
    if not layout.is_surface:
        path = layout.betas_session(session, beta_format)
        raw = read_volume_betas(path, positions, beta_format, n_trials=trials_per_session,
                                volume_shape=_volume3(shape))
        require_finite(raw, path, session, "voxels")
        return raw
    parts = []
    for hemi, vertices, n_vertices in _per_hemisphere(positions, shape):
        path = layout.surface_betas(session, hemi)
        part = read_surface_betas(path, vertices, n_trials=trials_per_session, n_vertices=n_vertices)
        require_finite(part, path, session, "vertices")
        parts.append(part)
    return np.concatenate(parts, axis=1)


def _per_hemisphere(positions: np.ndarray, shape: tuple[int, ...]) -> Iterator[tuple[str, np.ndarray, int]]:
    """(hemi, vertex indices within it, its vertex count) of positions over the lh + rh concatenation."""
    n_lh = shape[0]
    for hemi_index, hemi in enumerate(HEMIS):
        in_hemi = positions[(positions >= n_lh) == bool(hemi_index)] - n_lh * hemi_index
        yield hemi, in_hemi, shape[hemi_index]


def _read_ncsnr(layout: NSDLayout, positions: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Ncsnr at the union's positions, or None when the space's ncsnr file(s) are not on disk."""
    if not all(path.is_file() for path in layout.ncsnr_files()):
        return None
    if not layout.is_surface:
        return read_volume_map(layout.ncsnr(), positions, _volume3(shape))
    return np.concatenate([read_surface_map(layout.surface_ncsnr(hemi), vertices, n_vertices)
                           for hemi, vertices, n_vertices in _per_hemisphere(positions, shape)])


def _trial_index(table: pd.DataFrame) -> TrialIndex:
    return TrialIndex(ids=table["id73k"].to_numpy(np.int64), session=table["session"].to_numpy(np.int16),
                      trial=table["trial"].to_numpy(np.int16))


def _roi_positions(positions: np.ndarray, is_surface: bool, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``ijk`` of volume voxels, or fsaverage ``vertex`` + ``hemi`` of union positions."""
    if not is_surface:
        return {"ijk": positions}
    # Index arithmetic in int64: an int8 hemi times the vertex count overflows.
    hemi = (positions >= shape[0]).astype(np.int64)
    return {"vertex": positions - shape[0] * hemi, "hemi": hemi}


def _prepared_rois(masks: list[RoiMask], union: np.ndarray, positions: np.ndarray, is_surface: bool,
                   shape: tuple[int, ...], ncsnr: np.ndarray | None) -> list[PreparedRoi]:
    rois = []
    for mask in masks:
        columns = np.flatnonzero(mask.mask[union])
        rois.append(PreparedRoi(
            key=mask.spec.key, atlas=mask.spec.atlas, label=mask.spec.label or "",
            label_values=np.asarray(mask.values, dtype=np.int64), columns=columns,
            positions=_roi_positions(positions[columns], is_surface, shape),
            ncsnr=None if ncsnr is None else ncsnr[columns]))
    return rois


def _volume3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A volume shape (X, Y, Z) as a 3-tuple."""
    x, y, z = shape
    return x, y, z


def _space_attrs(layout: NSDLayout, shape: tuple[int, ...], affine: np.ndarray | None) -> dict:
    """``n_vertices`` per hemisphere (fsaverage), or the volume's ``volume_shape`` and ``affine``."""
    if layout.is_surface:
        return {"n_vertices": np.asarray(shape, dtype=np.int64)}
    return {"volume_shape": np.asarray(shape, dtype=np.int64), "affine": affine}


def _write_test_means(writer: PreparedWriter, test_table: pd.DataFrame, rois: list[PreparedRoi]) -> None:
    """Average the shared-image trials written so far by image, and write the test split."""
    test_ids = test_table["id73k"].to_numpy(np.int64)
    unique_ids, counts = np.unique(test_ids, return_counts=True)
    means = {roi.key: average_repeats(writer.read_test_trials(roi.key), test_ids)[0] for roi in rois}
    writer.write_test(unique_ids, counts, means)


def prepare_subject(
    nsd_root: str | os.PathLike | None,
    subject: int,
    out_path: str | os.PathLike,
    rois: Sequence[str] = DEFAULT_ROIS,
    sessions: int | Sequence[int] | None = None,
    beta_version: str = DEFAULT_BETA_VERSION,
    beta_format: str = "hdf5",
    space: str = "func1pt8mm",
    scale: str = "percent",
    zscore_sessions: bool = False,
    trials_per_session: int = TRIALS_PER_SESSION,
    progress: bool = True,
) -> Path:
    """Write a subject's prepared file from an NSD tree.

    Parameters
    ----------
    nsd_root : path-like or None
        NSD root; None reads ``$NSD_ROOT``.
    subject : int
        1..8.
    out_path : path-like
        Output ``.h5`` (written atomically: nothing is left there on failure).
    rois : sequence of str
        ROI specs, ``atlas:label`` or ``atlas`` (every value > 0).
    sessions : int, sequence of int or None
        A count (1..n), a list of 1-based sessions, or None for every session on disk; then a
        session that ``responses.tsv`` (or the design) lists but whose betas are missing is an
        error (see :func:`resolve_sessions`): pass the sessions to leave it out on purpose.
    beta_version : str
    beta_format : {"hdf5", "nifti"}
        Volume spaces only; fsaverage always reads ``.mgh``.
    space : {"func1pt8mm", "func1mm", "MNI", "fsaverage"}
    scale : {"percent", "raw"}
        ``percent`` divides the int16 betas by 300; ``raw`` keeps the stored values.
    zscore_sessions : bool
        Z-score every voxel over each session's trials.
    trials_per_session : int
        750 in NSD; smaller in test trees.
    progress : bool
        Show a progress bar over sessions.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    MissingFileError
        A requested or listed session's betas are missing.
    DataFormatError
        A file does not match the format, or float betas hold NaN / inf at the ROI voxels (an
        error, not zero-filled: see :func:`~.betas.require_finite`); nothing is written then.
    """
    if beta_format not in ("hdf5", "nifti"):
        raise ValueError(f"beta_format must be 'hdf5' or 'nifti', got {beta_format!r}")
    layout = NSDLayout(nsd_root, subject, space=space, beta_version=beta_version)
    session_list = resolve_sessions(layout, sessions, beta_format, trials_per_session)
    specs = [parse_roi_spec(r) for r in rois]
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"ROI keys must be unique, got {keys} from {list(rois)}")
    masks, affine, shape = load_roi_masks(layout, specs)
    _check_session_files(layout, session_list, beta_format, masks, shape, trials_per_session)
    table = trial_table(layout, session_list, trials_per_session)

    union = np.logical_or.reduce([m.mask for m in masks])
    positions = np.argwhere(union) if not layout.is_surface else np.flatnonzero(union)
    shared = table["is_shared"].to_numpy()
    train_table, test_table = table[~shared], table[shared]
    ncsnr = _read_ncsnr(layout, positions, shape)
    prepared_rois = _prepared_rois(masks, union, positions, layout.is_surface, shape, ncsnr)
    logger.info("subject %d: %d sessions, %d train trials, %d test trials, %d voxels in the ROI "
                "union", subject, len(session_list), len(train_table), len(test_table), len(positions))
    attrs = {
        "subject": subject, "nsd_root": str(layout.root), "space": space, "beta_version": beta_version,
        "beta_format": "mgh" if layout.is_surface else beta_format,
        "sessions": np.asarray(session_list, dtype=np.int16), "scale": scale,
        "zscore_sessions": bool(zscore_sessions), "rois": keys, "roi_specs": [str(s) for s in specs],
        "trials_per_session": trials_per_session, **_space_attrs(layout, shape, affine),
        **study_provenance(layout.root)}

    out_path = Path(out_path)
    with PreparedWriter(out_path, attrs, _trial_index(train_table), _trial_index(test_table), prepared_rois) as writer:
        for session in tqdm(session_list, desc=f"prepare subj{subject:02d}", unit="session",
                            disable=not progress):
            betas = scale_betas(_read_session(layout, session, beta_format, positions, shape,
                                              trials_per_session), scale)
            in_session = shared[(table["session"] == session).to_numpy()]
            betas = zscore_trials(betas) if zscore_sessions else betas
            writer.write_session(betas[~in_session], betas[in_session])
        _write_test_means(writer, test_table, prepared_rois)
    logger.info("wrote %s", out_path)
    return out_path
