"""Helpers shared by the HDF5 format owners."""

from __future__ import annotations

import os
from pathlib import Path

import h5py

__all__ = ["has_datasets"]


def has_datasets(path: str | os.PathLike, names: tuple[str, ...]) -> bool:
    """Whether ``path`` is an HDF5 file holding every dataset of ``names`` (False for anything else)."""
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        return all(name in f for name in names)
