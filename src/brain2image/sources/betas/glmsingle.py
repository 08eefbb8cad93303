"""A GLMsingle output folder as single-trial betas: ``betasmd`` of ``TYPED_FITHRF_GLMDENOISE_RR``.

GLMsingle (Prince et al. 2022) writes ``TYPED_FITHRF_GLMDENOISE_RR.npy`` (Python: a pickled dict,
read here without arbitrary unpickling), or ``.hdf5`` / ``.mat`` (MATLAB). ``betasmd`` holds one
beta per trial in chronological order, in percent signal change: shape (X, Y, Z, n_trials) for
volume data, (n_voxels, 1, 1, n_trials) or (n_voxels, n_trials) for data given as a voxel array.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...errors import DataFormatError, MissingFileError
from .betafile import BetaFile
from .safe_pickle import load_array_dict

__all__ = ["GLMSINGLE_STEM", "BETAS_KEY", "open_glmsingle"]

#: GLMsingle's final model (fitted HRF, GLMdenoise, ridge regression).
GLMSINGLE_STEM = "TYPED_FITHRF_GLMDENOISE_RR"
#: The single-trial betas in GLMsingle's outputs.
BETAS_KEY = "betasmd"


def _from_mat(path: Path) -> np.ndarray:
    """``betasmd`` of a MATLAB file: v5 through scipy, v7.3 (HDF5, axes reversed) through h5py."""
    from scipy.io import loadmat

    try:
        values = loadmat(path, variable_names=[BETAS_KEY])
    except NotImplementedError:  # v7.3: an HDF5 file whose arrays h5py sees with the axes reversed
        with h5py.File(path, "r") as handle:
            if BETAS_KEY not in handle:
                raise DataFormatError(f"{path}: no '{BETAS_KEY}' variable; expected GLMsingle's output") from None
            return np.asarray(handle[BETAS_KEY]).T
    except (ValueError, OSError) as error:
        raise DataFormatError(f"{path}: not a MATLAB file ({' '.join(str(error).split())[:120]}); expected "
                              "GLMsingle's output") from None
    if BETAS_KEY not in values:
        raise DataFormatError(f"{path}: no '{BETAS_KEY}' variable; expected GLMsingle's output")
    return np.asarray(values[BETAS_KEY])


def _spatial(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """The spatial layout of a ``betasmd`` of ``shape``: (X, Y, Z) or (n_voxels,)."""
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating) \
            or len(shape) not in (2, 4):
        raise DataFormatError(f"{path}: '{BETAS_KEY}' has shape {tuple(shape)} and dtype {dtype}; expected a real "
                              "array (X, Y, Z, n_trials), (n_voxels, 1, 1, n_trials) or (n_voxels, n_trials)")
    if len(shape) == 2 or shape[1:3] == (1, 1):
        return (int(shape[0]),)
    return tuple(int(n) for n in shape[:3])


def _in_memory(path: Path, betas: np.ndarray) -> BetaFile:
    spatial = _spatial(path, betas.shape, betas.dtype)
    return BetaFile(path, int(betas.shape[-1]), spatial, None, True, lambda: contextlib.nullcontext(betas))


@contextlib.contextmanager
def _h5_betas(path: Path) -> Any:
    with h5py.File(path, "r") as handle:
        yield handle[BETAS_KEY]


def _hdf5(path: Path) -> BetaFile:
    try:
        with h5py.File(path, "r") as handle:
            if BETAS_KEY not in handle:
                raise DataFormatError(f"{path}: no dataset '{BETAS_KEY}'; expected GLMsingle's output")
            shape, dtype = handle[BETAS_KEY].shape, handle[BETAS_KEY].dtype
    except OSError as error:
        raise DataFormatError(f"{path}: not an HDF5 file ({' '.join(str(error).split())[:120]})") from None
    return BetaFile(path, int(shape[-1]), _spatial(path, shape, dtype), None, True, lambda: _h5_betas(path))


def _from_npy(path: Path) -> BetaFile:
    outputs = load_array_dict(path)
    if BETAS_KEY not in outputs:
        raise DataFormatError(f"{path}: no '{BETAS_KEY}' in GLMsingle's outputs (has: {sorted(map(str, outputs))}); "
                              f"expected the {GLMSINGLE_STEM} model's file")
    return _in_memory(path, np.asarray(outputs[BETAS_KEY]))


def open_glmsingle(folder: Path) -> BetaFile:
    """The single-trial betas of a GLMsingle output folder.

    Looks for ``TYPED_FITHRF_GLMDENOISE_RR`` with the ending ``.npy``, then ``.hdf5``/``.h5``, then ``.mat``.
    A ``.npy`` or ``.mat`` is read whole into memory (their formats allow nothing else); an HDF5 file lazily.

    Raises
    ------
    MissingFileError
        None of these files is in ``folder``.
    DataFormatError
        A file without ``betasmd`` or of an unexpected shape.
    """
    for suffix in (".npy", ".hdf5", ".h5", ".mat"):
        path = folder / f"{GLMSINGLE_STEM}{suffix}"
        if path.is_file():
            if suffix == ".npy":
                return _from_npy(path)
            if suffix == ".mat":
                return _in_memory(path, _from_mat(path))
            return _hdf5(path)
    raise MissingFileError(f"betas = {str(folder)!r}: a folder without {GLMSINGLE_STEM}.npy (.hdf5, .mat); expected "
                           "a GLMsingle output folder, or a betas file")
