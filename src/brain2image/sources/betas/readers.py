"""Open single-trial betas by kind: a 4D NIfTI, a ``.npy`` or ``.h5`` array, a GLMsingle output folder.

Each becomes a :class:`~.betafile.BetaFile` (headers read only).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np

from ...errors import DataFormatError, MissingFileError
from .betafile import BetaFile
from .glmsingle import open_glmsingle

__all__ = ["open_betas", "EXPECTED_BETAS", "H5_DATASET"]

#: What ``[source] betas`` may be, for one-line errors.
EXPECTED_BETAS = ("a 4D NIfTI (one volume per trial), a .npy or .h5 array (n_trials, n_voxels) or a GLMsingle "
                  "output folder")
#: The dataset of an ``.h5`` betas file.
H5_DATASET = "betas"


def _dataobj(path: Path) -> Any:
    """The lazy array proxy of a NIfTI image (sliced without reading the file whole)."""
    img = nib.load(path)
    assert isinstance(img, (nib.Nifti1Image, nib.Nifti2Image))
    return img.dataobj


def _nifti(path: Path) -> BetaFile:
    try:
        img = nib.load(path)
    except Exception as error:  # nibabel raises many kinds for a file that is not an image
        raise DataFormatError(f"{path}: not a NIfTI image ({type(error).__name__}); expected {EXPECTED_BETAS}") \
            from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataFormatError(f"{path}: a {type(img).__name__}, not a NIfTI image; expected {EXPECTED_BETAS}")
    if len(img.shape) != 4:
        raise DataFormatError(f"{path}: shape {tuple(img.shape)} is not 4D (X, Y, Z, n_trials); expected one "
                              "volume per trial")
    return BetaFile(path, int(img.shape[3]), tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine),
                    True, lambda: contextlib.nullcontext(_dataobj(path)))


def _check_matrix(path: Path, shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    if len(shape) != 2 or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise DataFormatError(f"{path}: {what} has shape {tuple(shape)} and dtype {dtype}; expected a real array "
                              "of shape (n_trials, n_voxels)")


def _npy(path: Path) -> BetaFile:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise DataFormatError(f"{path}: not a plain .npy array ({' '.join(str(error).split())[:120]}); expected "
                              "an array of shape (n_trials, n_voxels) saved with numpy.save") from None
    _check_matrix(path, array.shape, array.dtype, "the array")
    return BetaFile(path, int(array.shape[0]), (int(array.shape[1]),), None, False,
                    lambda: contextlib.nullcontext(np.load(path, mmap_mode="r", allow_pickle=False)))


@contextlib.contextmanager
def _h5_dataset(path: Path, name: str) -> Iterator[h5py.Dataset]:
    with h5py.File(path, "r") as handle:
        yield handle[name]


def _h5(path: Path) -> BetaFile:
    try:
        with h5py.File(path, "r") as handle:
            if H5_DATASET not in handle or not isinstance(handle[H5_DATASET], h5py.Dataset):
                raise DataFormatError(f"{path}: no dataset '{H5_DATASET}'; expected the betas as dataset "
                                      f"'{H5_DATASET}' of shape (n_trials, n_voxels) (has: {sorted(handle)})")
            shape, dtype = handle[H5_DATASET].shape, handle[H5_DATASET].dtype
    except OSError as error:
        raise DataFormatError(f"{path}: not an HDF5 file ({' '.join(str(error).split())[:120]}); expected "
                              f"{EXPECTED_BETAS}") from None
    _check_matrix(path, shape, dtype, f"dataset '{H5_DATASET}'")
    return BetaFile(path, int(shape[0]), (int(shape[1]),), None, False, lambda: _h5_dataset(path, H5_DATASET))


def open_betas(path: str | os.PathLike) -> BetaFile:
    """The reader of ``path`` by its kind: a GLMsingle folder, ``.nii``/``.nii.gz``, ``.npy``, ``.h5``/``.hdf5``.

    Reads headers only (a GLMsingle ``.npy`` is unpickled whole: GLMsingle's format allows nothing else).

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    DataFormatError
        An unknown file kind, or a file of the wrong shape.
    """
    path = Path(path)
    if path.is_dir():
        return open_glmsingle(path)
    if not path.is_file():
        raise MissingFileError(f"betas = {str(path)!r}: not found; expected {EXPECTED_BETAS}")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _nifti(path)
    if name.endswith(".npy"):
        return _npy(path)
    if name.endswith((".h5", ".hdf5")):
        return _h5(path)
    raise DataFormatError(f"betas = {str(path)!r}: unknown file kind; expected {EXPECTED_BETAS}")
