"""The trial table: which 0-based 73k image each trial of each session showed.

Built from ``nsd_expdesign.mat`` (1-based ``masterordering``, ``subjectim``, ``sharedix``) and
cross-checked against the subject's ``responses.tsv`` (1-based ``73KID``) when it is on disk.
:func:`expected_sessions` says which sessions a subject has, so that a session whose betas are
missing is noticed instead of silently left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from ...errors import DataFormatError, MissingFileError
from .layout import SESSIONS_PER_SUBJECT, TRIALS_PER_SESSION, NSDLayout

__all__ = ["ExpDesign", "ExpectedSessions", "expected_sessions", "format_sessions",
           "load_expdesign", "read_responses", "trial_table", "trials_from_expdesign"]

logger = logging.getLogger(__name__)

RESPONSE_COLUMNS = ("SESSION", "RUN", "TRIAL", "73KID")


@dataclass(frozen=True)
class ExpDesign:
    """The NSD experimental design, indices kept 1-based as on disk.

    Attributes
    ----------
    masterordering : ndarray of shape (n_trials_total,)
        Index (1-based) into the subject's 10k images of every trial.
    subjectim : ndarray of shape (n_subjects, n_images_per_subject)
        1-based 73k ids of each subject's images; the shared images come first.
    sharedix : ndarray of shape (n_shared,)
        1-based 73k ids of the shared images, sorted.
    path : Path
        The file read.
    """

    masterordering: np.ndarray
    subjectim: np.ndarray
    sharedix: np.ndarray
    path: Path


def load_expdesign(path: str | Path) -> ExpDesign:
    """Read ``nsd_expdesign.mat`` with scipy.io.loadmat.

    Raises
    ------
    MissingFileError, DataFormatError
        If the file is absent, unreadable, or lacks a field.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"experimental design {path} not found")
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["masterordering", "subjectim", "sharedix"])
    except Exception as error:  # scipy raises ValueError/TypeError/OSError on corrupt files
        raise DataFormatError(f"{path}: cannot be read as a MATLAB file ({error})") from error
    for field in ("masterordering", "subjectim", "sharedix"):
        if field not in mat:
            raise DataFormatError(f"{path}: field {field!r} missing (expected masterordering, "
                                  "subjectim, sharedix)")
    master = np.asarray(mat["masterordering"]).astype(np.int64).ravel()
    subjectim = np.asarray(mat["subjectim"]).astype(np.int64)
    sharedix = np.asarray(mat["sharedix"]).astype(np.int64).ravel()
    if subjectim.ndim != 2:
        raise DataFormatError(f"{path}: field 'subjectim' must be 2-D (n_subjects, n_images), "
                              f"got shape {subjectim.shape}")
    if master.size and (master.min() < 1 or master.max() > subjectim.shape[1]):
        raise DataFormatError(f"{path}: field 'masterordering' must hold 1-based indices in "
                              f"1..{subjectim.shape[1]}, got {master.min()}..{master.max()}")
    return ExpDesign(masterordering=master, subjectim=subjectim, sharedix=sharedix, path=path)


def read_responses(path: str | Path) -> pd.DataFrame:
    """Read a subject's ``responses.tsv`` (tab separated, header row).

    Raises
    ------
    MissingFileError, DataFormatError
        If absent, or a required column (SESSION, RUN, TRIAL, 73KID) is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"behaviour file {path} not found")
    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as error:
        raise DataFormatError(f"{path}: cannot be read as a tab-separated table ({error})") from error
    missing = [c for c in RESPONSE_COLUMNS if c not in table.columns]
    if missing:
        raise DataFormatError(f"{path}: columns {missing} missing; expected at least "
                              f"{list(RESPONSE_COLUMNS)}, found {list(table.columns)}")
    return table


def trials_from_expdesign(design: ExpDesign, subject: int, sessions: Sequence[int],
                          trials_per_session: int = TRIALS_PER_SESSION) -> pd.DataFrame:
    """Trial table of some sessions from the design alone.

    Returns
    -------
    DataFrame with columns ``session`` (1-based), ``trial`` (1-based in session),
    ``id73k`` (0-based), ``is_shared`` (bool); one row per trial, sessions in the given order.
    """
    n_total = design.masterordering.size
    needed = max(sessions) * trials_per_session
    if needed > n_total:
        raise DataFormatError(f"{design.path}: field 'masterordering' has {n_total} trials, "
                              f"session {max(sessions)} needs {needed} "
                              f"({trials_per_session} per session)")
    if not 1 <= subject <= design.subjectim.shape[0]:
        raise DataFormatError(f"{design.path}: field 'subjectim' has {design.subjectim.shape[0]} "
                              f"subjects, subject {subject} requested")
    session = np.repeat(np.asarray(sessions, dtype=np.int64), trials_per_session)
    trial = np.tile(np.arange(1, trials_per_session + 1, dtype=np.int64), len(sessions))
    global_trial = (session - 1) * trials_per_session + (trial - 1)  # 0-based into masterordering
    id73k = design.subjectim[subject - 1, design.masterordering[global_trial] - 1] - 1
    is_shared = np.isin(id73k, design.sharedix - 1)
    return pd.DataFrame({"session": session, "trial": trial, "id73k": id73k, "is_shared": is_shared})


def _check_against_responses(table: pd.DataFrame, responses: pd.DataFrame, path: Path,
                             sessions: Sequence[int], trials_per_session: int) -> None:
    """Compare the design's ids with responses.tsv for the sessions present in both."""
    for session in sessions:
        rows = responses[responses["SESSION"] == session].sort_values(["RUN", "TRIAL"], kind="stable")
        if rows.empty:
            logger.info("%s has no rows for session %d; not cross-checked", path, session)
            continue
        if len(rows) != trials_per_session:
            raise DataFormatError(f"{path}: session {session} has {len(rows)} trials, "
                                  f"expected {trials_per_session}")
        expected = table.loc[table["session"] == session, "id73k"].to_numpy()
        found = rows["73KID"].to_numpy(dtype=np.int64) - 1
        bad = np.flatnonzero(found != expected)
        if bad.size:
            t = int(bad[0])
            raise DataFormatError(
                f"{path}: session {session} trial {t + 1}: 73KID-1 = {found[t]} but the design "
                f"gives {expected[t]} (subjectim[s-1, masterordering[t]-1]-1); "
                f"{bad.size} of {trials_per_session} trials disagree")


def trial_table(layout: NSDLayout, sessions: Sequence[int],
                trials_per_session: int = TRIALS_PER_SESSION) -> pd.DataFrame:
    """The trial table of a subject's sessions, cross-checked against responses.tsv.

    Parameters
    ----------
    layout : NSDLayout
        Where the files are.
    sessions : sequence of int
        1-based sessions, in the order rows are wanted.
    trials_per_session : int
        Trials per session (750 in NSD).

    Returns
    -------
    DataFrame with columns ``session``, ``trial`` (both 1-based), ``id73k`` (0-based),
    ``is_shared``; shape (n_sessions * trials_per_session, 4).

    Raises
    ------
    DataFormatError
        If responses.tsv disagrees with the design, or a session's trial count is not
        ``trials_per_session``.
    """
    design = load_expdesign(layout.expdesign())
    table = trials_from_expdesign(design, layout.subject, sessions, trials_per_session)
    responses_path = layout.responses()
    if responses_path.is_file():
        _check_against_responses(table, read_responses(responses_path), responses_path, sessions,
                                 trials_per_session)
    else:
        logger.warning("%s not found; trial table taken from %s alone", responses_path,
                       design.path)
    return table


def format_sessions(sessions: Iterable[int]) -> str:
    """Sessions as the ``--sessions`` option writes them: ``[1, 2, 3, 5]`` -> ``1-3,5``."""
    parts: list[str] = []
    run: list[int] = []
    for session in sorted(set(int(s) for s in sessions)):
        if run and session != run[-1] + 1:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        run.append(session)
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


@dataclass(frozen=True)
class ExpectedSessions:
    """The sessions a subject has according to its behaviour or design file.

    Attributes
    ----------
    sessions : tuple of int
        1-based sessions, sorted.
    source : Path
        ``responses.tsv`` (its ``SESSION`` column) or ``nsd_expdesign.mat`` (its trial count).
    """

    sessions: tuple[int, ...]
    source: Path

    def describe(self) -> str:
        """``responses.tsv lists sessions 1-40`` (one phrase, for messages)."""
        return f"{self.source.name} lists sessions {format_sessions(self.sessions)}"


def expected_sessions(layout: NSDLayout, trials_per_session: int = TRIALS_PER_SESSION,
                      on_disk: Sequence[int] = ()) -> ExpectedSessions:
    """Which sessions the subject has, from its ``responses.tsv`` or else from the design.

    ``responses.tsv`` holds one row per trial of every session the subject did, so its
    ``SESSION`` values are the answer. Without it, the design's ``masterordering`` gives
    ``n_trials // trials_per_session`` sessions; NSD's design lists 40 sessions for every subject,
    so the subject's NSD count (:data:`~.layout.SESSIONS_PER_SUBJECT`) caps it when it is smaller and no session on
    disk lies beyond it (a simulated tree with fewer sessions keeps the design's count).

    Parameters
    ----------
    layout : NSDLayout
    trials_per_session : int
    on_disk : sequence of int
        Sessions whose beta files are on disk (for the NSD cross-check).

    Raises
    ------
    MissingFileError, DataFormatError
        If neither file can tell (no responses.tsv and no readable design).
    """
    responses_path = layout.responses()
    if responses_path.is_file():
        sessions = read_responses(responses_path)["SESSION"]
        try:
            values = sorted({int(s) for s in sessions})
        except (TypeError, ValueError) as error:
            raise DataFormatError(f"{responses_path}: column 'SESSION' must hold 1-based session "
                                  f"numbers ({error})") from error
        if not values or values[0] < 1:
            raise DataFormatError(f"{responses_path}: column 'SESSION' must hold 1-based session "
                                  f"numbers, got {values[:5]}")
        return ExpectedSessions(tuple(values), responses_path)
    design = load_expdesign(layout.expdesign())
    n_sessions = design.masterordering.size // trials_per_session
    nsd_count = SESSIONS_PER_SUBJECT[layout.subject]
    if nsd_count < n_sessions and all(s <= nsd_count for s in on_disk):
        n_sessions = nsd_count
    if n_sessions < 1:
        raise DataFormatError(f"{design.path}: field 'masterordering' has {design.masterordering.size} "
                              f"trials, expected at least one session of {trials_per_session}")
    return ExpectedSessions(tuple(range(1, n_sessions + 1)), design.path)
