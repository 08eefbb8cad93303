"""The trials of precomputed betas: a trials table (TSV) or a folder of BIDS ``*_events.tsv`` files.

A trials table has one row per trial in the betas' order, with the stimulus column (a path relative
to ``stimuli/``), ``session`` and ``run`` (and optionally a split column, ``train`` / ``test``).
An events folder is read as GLMsingle's design: the event files sorted by session and run (BIDS
entities), and in each the rows that name a stimulus, by onset, are the trials in chronological
order. ``n/a`` is a missing value. Either may carry an identity column: each image's 0-based NSD id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DataFormatError, InvalidArgumentError, MissingFileError

__all__ = ["BetaTrials", "read_trials", "read_trials_table", "read_events_folder", "EXPECTED_TRIALS"]

#: What ``[source] trials`` may be, for one-line errors.
EXPECTED_TRIALS = ("a TSV with one row per trial in the betas' order (stimulus, session, run columns) or a folder "
                   "of BIDS *_events.tsv files")
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class BetaTrials:
    """Every trial of the betas, in their order.

    Attributes
    ----------
    stim_files : list of str, length n_trials
        Each trial's stimulus (relative to ``stimuli/``).
    session : array of shape (n_trials,), int
        1-based position of each trial's session in scanning order.
    run : array of shape (n_trials,), int
        Each trial's run (its number when the table gives one, else its position in the session).
    split : array of shape (n_trials,) of str, or None
        ``"train"`` / ``"test"`` per trial, when a split column was asked for.
    session_labels : list of str
        The label of each session position (``session_labels[0]`` is session 1).
    source : str
        The file or folder read, for messages.
    identity : list of str or None
        The identity column's value per trial (``""`` for ``n/a``), when one was asked for.
    origins : list of str or None
        The file of each trial (events folders); None: ``source`` for every trial.
    """

    stim_files: list[str]
    session: np.ndarray
    run: np.ndarray
    split: np.ndarray | None
    session_labels: list[str]
    source: str
    identity: list[str] | None = None
    origins: list[str] | None = None

    def __len__(self) -> int:
        return len(self.stim_files)


def _read_tsv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: not a tab-separated table with a header row ({type(error).__name__}); "
                              f"expected {EXPECTED_TRIALS}") from None


def _require_columns(frame: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: no column {missing[0]!r} (columns: {list(frame.columns)}); expected "
                              f"{', '.join(repr(c) for c in columns)} (set stimulus_column / split_column to "
                              "name yours)")


def _values(frame: pd.DataFrame, column: str, path: Path) -> list[str]:
    """The column's values, stripped; a missing value is a one-line error naming its row."""
    values = frame[column]
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0]) + 2
        raise DataFormatError(f"{path}: column {column!r} is empty (n/a) on line {row}; expected a value on every "
                              "trial row")
    return [str(v).strip() for v in values]


def _label_key(label: str) -> tuple[float, str]:
    """Sort key of a BIDS label: numeric labels by number, then the others by text."""
    return (float(int(label)), label) if label.isdigit() else (float("inf"), label)


def _positions(labels: list[str], path: Path, what: str) -> tuple[np.ndarray, list[str]]:
    """1-based position of each label in order of first appearance; each label's rows must be contiguous."""
    order = list(dict.fromkeys(labels))
    index = {label: i + 1 for i, label in enumerate(order)}
    positions = np.array([index[label] for label in labels], dtype=np.int64)
    if len(positions) and np.any(np.diff(positions) < 0):
        row = int(np.flatnonzero(np.diff(positions) < 0)[0]) + 3
        raise DataFormatError(f"{path}: {what} {labels[row - 2]!r} comes back on line {row} after another {what}; "
                              f"expected each {what}'s trials together, in scanning order")
    return positions, order


def _runs(labels: list[str], session: np.ndarray) -> np.ndarray:
    """Run numbers: the labels' integers (``2``, ``run-02``), else positions within each session."""
    digits = [label.removeprefix("run-") for label in labels]
    if all(d.isdigit() for d in digits):
        return np.array([int(d) for d in digits], dtype=np.int64)
    runs = np.empty(len(labels), dtype=np.int64)
    for s in np.unique(session):
        rows = np.flatnonzero(session == s)
        order = {label: i + 1 for i, label in enumerate(dict.fromkeys(labels[r] for r in rows))}
        runs[rows] = [order[labels[r]] for r in rows]
    return runs


def _splits(values: list[str], path: Path, column: str) -> np.ndarray:
    split = np.array([v.lower() for v in values])
    bad = sorted(set(split.tolist()) - set(_SPLITS))
    if bad:
        raise DataFormatError(f"{path}: split column {column!r} holds {bad[0]!r}; expected 'train' or 'test' on "
                              "every trial row")
    return split


def read_trials_table(path: Path, stimulus_column: str, split_column: str | None,
                      identity_column: str | None = None) -> BetaTrials:
    """A trials TSV: one row per trial in the betas' order (stimulus column, ``session``, ``run``).

    Raises
    ------
    DataFormatError
        A missing column, an empty value, a session whose rows are not together, a bad split value.
    """
    frame = _read_tsv(path)
    _require_columns(frame, path, [stimulus_column, "session", "run"] + ([split_column] if split_column else [])
                     + ([identity_column] if identity_column else []))
    if frame.empty:
        raise DataFormatError(f"{path}: no trial rows; expected one row per trial in the betas' order")
    session, labels = _positions(_values(frame, "session", path), path, "session")
    run = _runs(_values(frame, "run", path), session)
    split = _splits(_values(frame, split_column, path), path, split_column) if split_column else None
    identity = frame[identity_column].fillna("").astype(str).tolist() if identity_column else None
    return BetaTrials(_values(frame, stimulus_column, path), session, run, split, labels, str(path), identity)


def _select(files: list[tuple[Path, dict]], entity: str, wanted: str | None, folder: Path, key: str) -> list[
        tuple[Path, dict]]:
    """The event files of ``wanted`` (a subject or task label); without one, the only label there is."""
    labels = sorted({str(e.get(entity)) for _, e in files if e.get(entity) is not None})
    if wanted is not None and labels:
        wanted = str(wanted).removeprefix(f"{'sub' if entity == 'subject' else entity}-")
        same = [label for label in labels if label == wanted or (label.isdigit() and wanted.isdigit()
                                                                  and int(label) == int(wanted))]
        wanted = same[0] if same else wanted
        if wanted not in labels:
            raise DataFormatError(f"{folder}: no *_events.tsv of {entity} {wanted!r} (found: {labels}); set "
                                  f"{key} to one of them")
        return [(p, e) for p, e in files if str(e.get(entity)) == wanted]
    if len(labels) > 1:
        raise DataFormatError(f"{folder}: *_events.tsv files of several {entity} labels {labels}; set {key} to "
                              "the one the betas were fitted from")
    return files


def _event_files(folder: Path, subject: str | None, task: str | None) -> list[tuple[Path, dict]]:
    from bids.layout import parse_file_entities

    files = [(p, parse_file_entities(str(p))) for p in sorted(folder.rglob("*_events.tsv"))
             if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not files:
        raise MissingFileError(f"trials = {str(folder)!r}: no *_events.tsv file in it; expected {EXPECTED_TRIALS}")
    files = _select(files, "subject", subject, folder, "the run's subject")
    files = _select(files, "task", task, folder, "[source] task")
    return sorted(files, key=lambda f: (_label_key(str(f[1].get("session", ""))),
                                        int(f[1].get("run", 0)), str(f[0])))


def _run_trials(path: Path, stimulus_column: str, split_column: str | None,
                identity_column: str | None = None) -> pd.DataFrame:
    """The rows of one events file that name a stimulus, by onset."""
    frame = _read_tsv(path)
    _require_columns(frame, path, ["onset", stimulus_column] + ([split_column] if split_column else [])
                     + ([identity_column] if identity_column else []))
    frame = frame[frame[stimulus_column].notna() & (frame[stimulus_column].astype(str).str.strip() != "")]
    onset = pd.to_numeric(frame["onset"], errors="coerce")
    if onset.isna().any():
        raise DataFormatError(f"{path}: column 'onset' has a non-number on a trial row; expected onsets in seconds")
    return frame.assign(_onset=onset).sort_values("_onset", kind="stable")


def read_events_folder(folder: Path, stimulus_column: str, split_column: str | None, *, subject: str | None = None,
                       task: str | None = None, identity_column: str | None = None) -> BetaTrials:
    """GLMsingle's trials from the BIDS events they were fitted from: chronological trials of the sorted runs.

    Parameters
    ----------
    folder : Path
        Searched recursively for ``*_events.tsv``.
    stimulus_column, split_column : str, str or None
    subject, task : str or None
        Labels to keep when the folder holds several (``sub-`` prefix accepted).
    identity_column : str or None
        Column holding each trial's image as a 0-based NSD id.

    Raises
    ------
    MissingFileError
        No events file.
    DataFormatError
        Several subjects / tasks and none chosen, a missing column, a bad onset or split value.
    """
    parts: list[str] = []
    sessions: list[str] = []
    runs: list[str] = []
    splits: list[str] = []
    identity: list[str] = []
    origins: list[str] = []
    for position, (path, entities) in enumerate(_event_files(folder, subject, task)):
        trials = _run_trials(path, stimulus_column, split_column, identity_column)
        origins.extend([str(path)] * len(trials))
        if identity_column:
            identity.extend(trials[identity_column].fillna("").astype(str).tolist())
        parts.extend(str(v).strip() for v in trials[stimulus_column])
        sessions.extend([str(entities.get("session", "1"))] * len(trials))
        runs.extend([str(entities.get("run", position + 1))] * len(trials))
        if split_column:
            splits.extend(_splits(_values(trials, split_column, path), path, split_column).tolist())
    if not parts:
        raise DataFormatError(f"{folder}: its events files have no row with a {stimulus_column!r} value; expected "
                              "each trial's stimulus in that column")
    session, labels = _positions(sessions, folder, "session")
    return BetaTrials(parts, session, _runs(runs, session), np.array(splits) if split_column else None, labels,
                      str(folder), identity if identity_column else None, origins)


def read_trials(path: str | os.PathLike, stimulus_column: str = "stim_file", split_column: str | None = None, *,
                subject: str | None = None, task: str | None = None, identity_column: str | None = None) -> BetaTrials:
    """The trials of ``path``: a trials TSV (:func:`read_trials_table`) or an events folder.

    An events folder is read by :func:`read_events_folder`.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    InvalidArgumentError
        An empty stimulus column name.
    """
    if not stimulus_column:
        raise InvalidArgumentError("stimulus_column is empty; expected the column naming each trial's image")
    path = Path(path)
    if path.is_dir():
        return read_events_folder(path, stimulus_column, split_column, subject=subject, task=task,
                                  identity_column=identity_column)
    if not path.is_file():
        raise MissingFileError(f"trials = {str(path)!r}: not found; expected {EXPECTED_TRIALS}")
    return read_trials_table(path, stimulus_column, split_column, identity_column)
