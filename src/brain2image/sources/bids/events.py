"""A run's ``*_events.tsv`` -> its image trials: onsets, durations, image ids and (optionally) split.

BIDS events are tab-separated with a header row and ``n/a`` for missing values. ``onset`` and
``duration`` (s, from the first volume of the run) are required. The stimulus column (``stim_file``
by default: a path relative to the root's ``stimuli/``) names each trial's image; rows whose stimulus
is ``n/a`` (fixation, instructions) are not trials. An optional split column holds ``train`` / ``test``,
an optional identity column each image's 0-based NSD id (read as text; checked by
:func:`~brain2image.sources.single_trial.nsd_identity`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...errors import DataFormatError

if TYPE_CHECKING:
    from ..stimulus_folder import FolderStimuli

__all__ = ["RunEvents", "read_events", "read_events_table", "SPLIT_VALUES"]

#: Values of a split column (case-insensitive).
SPLIT_VALUES = ("train", "test")


@dataclass(frozen=True)
class RunEvents:
    """The image trials of one run, in onset order.

    Attributes
    ----------
    path : Path
    onsets, durations : arrays of shape (n_trials,), float64
        Seconds from the run's first volume.
    image_ids : array of shape (n_trials,), int64
    split : array of shape (n_trials,) of str, or None
        ``"train"`` / ``"test"`` per trial when a split column is read.
    identity : list of str or None
        The identity column's value per trial (``""`` for ``n/a``) when one is read.
    """

    path: Path
    onsets: np.ndarray
    durations: np.ndarray
    image_ids: np.ndarray
    split: np.ndarray | None
    identity: list[str] | None = None

    def __len__(self) -> int:
        return len(self.onsets)

    def shared_onsets(self) -> list[float]:
        """Onsets (s) that two trials or more share (a GLM cannot tell such trials apart)."""
        values, counts = np.unique(np.round(self.onsets, 3), return_counts=True)
        return [float(v) for v in values[counts > 1]]


def read_events_table(path: Path) -> pd.DataFrame:
    """The events file as strings, ``n/a`` (and empty cells) as missing.

    Raises
    ------
    DataFormatError
        Not a tab-separated table with a header row.
    """
    try:
        return pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False,
                           quoting=csv.QUOTE_NONE)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataFormatError(f"{path}: cannot be read as a tab-separated events table "
                              f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); expected a "
                              "header row with onset, duration and the stimulus column") from None


def _require_column(table: pd.DataFrame, path: Path, column: str, option: str) -> None:
    if column not in table.columns:
        raise DataFormatError(f"{path}: no column {column!r} (columns: {', '.join(map(str, table.columns))}); "
                              f"{option}")


def _numbers(table: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataFormatError(f"{path}: column {column!r} row {row + 1} of the image trials is "
                              f"{table[column].iloc[row]!r}; expected a number of seconds on every trial row")
    return values


def _split(table: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    _require_column(table, path, column, "add the split column or change [source] split_column (--split-column)")
    values = table[column].fillna("n/a").str.strip().str.lower().to_numpy(dtype=str)
    bad = [v for v in values if v not in SPLIT_VALUES]
    if bad:
        raise DataFormatError(f"{path}: column {column!r} holds {str(bad[0])!r} on an image trial; expected 'train' or "
                              "'test' on every trial row")
    return values


def read_events(path: Path, stimuli: FolderStimuli, stimulus_column: str = "stim_file",
                split_column: str | None = None, identity_column: str | None = None) -> RunEvents:
    """Read a run's image trials.

    Parameters
    ----------
    path : Path
        The run's ``*_events.tsv``.
    stimuli : FolderStimuli
        The root's ``stimuli/`` (maps each stimulus value to an image id).
    stimulus_column : str
        Column naming each trial's image (rows with ``n/a`` are not trials).
    split_column : str or None
        Column holding ``train`` / ``test`` per trial.
    identity_column : str or None
        Column holding each trial's image as a 0-based NSD id (``n/a``: none).

    Returns
    -------
    RunEvents
        Trials sorted by onset (stable).

    Raises
    ------
    DataFormatError
        A required column is absent, an onset or duration is not a number, a stimulus is not a file of
        ``stimuli/``, a split value is neither ``train`` nor ``test``, or the run has no image trial.
    """
    table = read_events_table(path)
    for column in ("onset", "duration"):
        _require_column(table, path, column, "BIDS events need onset and duration (seconds)")
    _require_column(table, path, stimulus_column,
                    "name the column holding each trial's image with [source] stimulus_column (--stimulus-column)")
    table = table[table[stimulus_column].notna() & (table[stimulus_column].str.strip() != "")]
    if table.empty:
        raise DataFormatError(f"{path}: no row names an image in column {stimulus_column!r} (all n/a); expected "
                              "one row per image trial")
    table = table.iloc[np.argsort(_numbers(table, path, "onset"), kind="stable")]
    ids = stimuli.ids_of(table[stimulus_column].tolist(), where=f"{path} column {stimulus_column!r}")
    if identity_column is not None:
        _require_column(table, path, identity_column, "add it or change [source] identity_column (--identity-column)")
    return RunEvents(path=path, onsets=_numbers(table, path, "onset"), durations=_numbers(table, path, "duration"),
                     image_ids=ids, split=None if split_column is None else _split(table, path, split_column),
                     identity=None if identity_column is None else table[identity_column].fillna("").tolist())
