"""Helpers shared by the HDF5 format owners."""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from ..errors import DataFormatError

__all__ = ["has_datasets", "open_hdf5"]


def open_hdf5(path: str | os.PathLike, what: str = "HDF5 file") -> h5py.File:
    """Open ``path`` for reading; a truncated or corrupt file is a one-line :class:`DataFormatError`.

    Parameters
    ----------
    path : path-like
        An existing file.
    what : str
        What the file should be, for the message ("decoder file", "feature store", ...).
    """
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataFormatError(f"{path}: not a readable {what} (truncated or corrupt HDF5: "
                              f"{' '.join(str(error).split())}); write it again") from error


def has_datasets(path: str | os.PathLike, names: tuple[str, ...]) -> bool:
    """Whether ``path`` is an HDF5 file holding every dataset of ``names`` (False for anything else).

    Raises
    ------
    DataFormatError
        If ``path`` starts like an HDF5 file but cannot be opened (truncated or corrupt).
    """
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    with open_hdf5(path) as f:
        return all(name in f for name in names)
