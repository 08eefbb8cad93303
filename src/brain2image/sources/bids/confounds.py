"""fMRIPrep's ``*_desc-confounds_timeseries.tsv``: the nuisance columns of the GLM, and the dummy volumes.

Columns are chosen by name or by fnmatch pattern (``a_comp_cor_0*``); every name or pattern asked
for must match a column. ``n/a`` (fMRIPrep writes it in the first row of derivatives and
``framewise_displacement``) is read as 0. The ``non_steady_state_outlier_XX`` columns mark dummy
volumes (one-hot): those volumes are dropped from the BOLD and the confounds, and the columns are
never regressors themselves.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DataFormatError

__all__ = ["RunConfounds", "read_confounds_table", "select_columns", "read_confounds", "DUMMY_PREFIX"]

#: fMRIPrep's one-hot columns of non-steady-state (dummy) volumes.
DUMMY_PREFIX = "non_steady_state_outlier"


@dataclass(frozen=True)
class RunConfounds:
    """A run's regressors and the volumes kept.

    Attributes
    ----------
    names : list of str
        The columns selected, in file order.
    values : array of shape (n_volumes, n_confounds), float64
        All volumes (``n/a`` as 0).
    keep : array of shape (n_volumes,), bool
        False on the dummy volumes.
    """

    names: list[str]
    values: np.ndarray
    keep: np.ndarray

    @property
    def n_dummy(self) -> int:
        """Dummy volumes marked."""
        return int((~self.keep).sum())


def read_confounds_table(path: Path) -> pd.DataFrame:
    """The confounds table, every column numeric (``n/a`` as NaN).

    Raises
    ------
    DataFormatError
        Not a tab-separated table, or a column that is not numeric.
    """
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, quoting=csv.QUOTE_NONE)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataFormatError(f"{path}: cannot be read as fMRIPrep's tab-separated confounds table "
                              f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        raise DataFormatError(f"{path}: column {text[0]!r} is not numeric; expected numbers or n/a in every confound "
                              "column")
    return table


def select_columns(columns: Sequence[str], wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """The columns that names or patterns of ``wanted`` match (file order), and the ones matching nothing.

    Dummy-volume columns (:data:`DUMMY_PREFIX`) are never selected.
    """
    chosen = [c for c in columns if not c.startswith(DUMMY_PREFIX) and any(fnmatchcase(c, w) for w in wanted)]
    absent = [w for w in wanted if not any(fnmatchcase(c, w) for c in columns)]
    return chosen, absent


def _dummy(table: pd.DataFrame) -> np.ndarray:
    """Keep mask: False on a volume any ``non_steady_state_outlier_XX`` column marks."""
    columns = [c for c in table.columns if str(c).startswith(DUMMY_PREFIX)]
    if not columns:
        return np.ones(len(table), dtype=bool)
    return ~(table[columns].fillna(0).to_numpy() != 0).any(axis=1)


def read_confounds(path: Path, wanted: Sequence[str], n_volumes: int | None = None) -> RunConfounds:
    """Read the selected confounds and the dummy volumes of a run.

    Parameters
    ----------
    path : Path
    wanted : sequence of str
        Column names or fnmatch patterns (each must match a column).
    n_volumes : int, optional
        The BOLD's volumes; the table must have one row each.

    Raises
    ------
    DataFormatError
        An unreadable table, a name or pattern matching no column, a row count that is not the BOLD's.
    """
    table = read_confounds_table(path)
    names, absent = select_columns([str(c) for c in table.columns], wanted)
    if absent:
        raise DataFormatError(f"{path}: no confound column {absent[0]!r}"
                              + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else "")
                              + "; remove it from [source] confounds (--confounds) or rerun fMRIPrep")
    if n_volumes is not None and len(table) != n_volumes:
        raise DataFormatError(f"{path}: {len(table)} rows but the run's BOLD has {n_volumes} volumes; expected one "
                              "row per volume (confounds and BOLD of the same run)")
    keep = _dummy(table)
    if keep.sum() < 2:
        raise DataFormatError(f"{path}: {DUMMY_PREFIX}_* columns mark {int((~keep).sum())} of {len(keep)} volumes as "
                              "dummy; expected a few at the start of the run")
    values = table[names].fillna(0.0).to_numpy(dtype=np.float64)
    return RunConfounds(names=names, values=values, keep=keep)
