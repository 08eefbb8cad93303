"""Read single-trial betas of one session, only at the voxels (or vertices) asked for.

HDF5 betas are stored in MATLAB order, so h5py sees ``(n_trials, Z, Y, X)``; every function here
takes voxel indices ``ijk`` in NIfTI order ``(X, Y, Z)`` and does the axis reversal in one place
(:func:`read_volume_betas`). HDF5 files are read in slabs along Z restricted to the mask's bounding
box, so a session is never held whole in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import h5py
import nibabel as nib
import numpy as np

from ...errors import DataFormatError, MissingFileError
from ._mgh import mgh_header, mgh_read
from .layout import BETA_SCALE

__all__ = [
    "BetaFileInfo",
    "beta_file_info",
    "read_surface_betas",
    "read_surface_map",
    "read_volume_betas",
    "read_volume_map",
    "require_finite",
    "scale_betas",
    "zscore_trials",
]

logger = logging.getLogger(__name__)

#: Upper bound of one slab read from an HDF5 beta file, in bytes.
SLAB_BYTES = 64 * 2**20

ReadStrategy = Literal["slab", "box", "full"]


@dataclass(frozen=True)
class BetaFileInfo:
    """Header facts of one beta file.

    Attributes
    ----------
    path : Path
    spatial_shape : tuple of int
        (X, Y, Z) for volumes (NIfTI order, whatever the file's order), (n_vertices,) for surfaces.
    n_trials : int
    dtype : numpy dtype
    """

    path: Path
    spatial_shape: tuple[int, ...]
    n_trials: int
    dtype: np.dtype


def _require(path: Path) -> None:
    if not path.is_file():
        raise MissingFileError(f"beta file {path} not found")


def _h5_betas(handle: h5py.File, path: Path) -> h5py.Dataset:
    if "betas" not in handle:
        raise DataFormatError(f"{path}: dataset 'betas' missing (found {list(handle.keys())})")
    dataset = handle["betas"]
    if dataset.ndim != 4:
        raise DataFormatError(f"{path}: dataset 'betas' must be 4-D (n_trials, Z, Y, X), "
                              f"got shape {dataset.shape}")
    return dataset


def _open_h5(path: Path) -> h5py.File:
    _require(path)
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataFormatError(f"{path}: not a readable HDF5 file (truncated or corrupt?): "
                              f"{error}") from error


def beta_file_info(path: str | Path, beta_format: str) -> BetaFileInfo:
    """Read the shape and dtype of a beta file without reading its data.

    Parameters
    ----------
    path : path-like
    beta_format : {"hdf5", "nifti", "mgh"}

    Raises
    ------
    MissingFileError, DataFormatError
    """
    path = Path(path)
    if beta_format == "hdf5":
        with _open_h5(path) as handle:
            dataset = _h5_betas(handle, path)
            n_trials, z, y, x = dataset.shape
            return BetaFileInfo(path, (int(x), int(y), int(z)), int(n_trials), dataset.dtype)
    _require(path)
    try:
        if beta_format == "mgh":
            shape, dtype, _ = mgh_header(path)
        else:
            image = cast(Any, nib.load(path))
            shape, dtype = image.shape, image.get_data_dtype()
    except Exception as error:
        raise DataFormatError(f"{path}: cannot be read as {beta_format} ({error})") from error
    if beta_format == "nifti":
        if len(shape) != 4:
            raise DataFormatError(f"{path}: betas must be 4-D (X, Y, Z, n_trials), got {shape}")
        return BetaFileInfo(path, tuple(int(n) for n in shape[:3]), int(shape[3]), np.dtype(dtype))
    if beta_format == "mgh":
        if len(shape) != 4 or shape[1:3] != (1, 1):
            raise DataFormatError(f"{path}: surface betas must have shape "
                                  f"(n_vertices, 1, 1, n_trials), got {shape}")
        return BetaFileInfo(path, (int(shape[0]),), int(shape[3]), np.dtype(dtype))
    raise ValueError(f"unknown beta format {beta_format!r}")


def _bounds(ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ijk.min(axis=0), ijk.max(axis=0) + 1


def _read_hdf5(path: Path, ijk: np.ndarray, strategy: ReadStrategy) -> np.ndarray:
    with _open_h5(path) as handle:
        dataset = _h5_betas(handle, path)
        n_trials = dataset.shape[0]
        i, j, k = ijk[:, 0], ijk[:, 1], ijk[:, 2]
        (x0, y0, z0), (x1, y1, z1) = _bounds(ijk)
        try:
            if strategy == "full":
                return dataset[()][:, k, j, i]
            if strategy == "box":
                return dataset[:, z0:z1, y0:y1, x0:x1][:, k - z0, j - y0, i - x0]
            out = np.empty((n_trials, len(ijk)), dtype=dataset.dtype)
            plane = n_trials * (y1 - y0) * (x1 - x0) * dataset.dtype.itemsize
            step = max(1, SLAB_BYTES // plane)
            order = np.argsort(k, kind="stable")
            edges = np.searchsorted(k[order], np.arange(z0, z1 + step, step))
            for block, za in enumerate(range(z0, z1, step)):
                cols = order[edges[block]:edges[block + 1]]
                if cols.size == 0:
                    continue
                zb = min(za + step, z1)
                slab = dataset[:, za:zb, y0:y1, x0:x1]
                out[:, cols] = slab[:, k[cols] - za, j[cols] - y0, i[cols] - x0]
            return out
        except OSError as error:
            raise DataFormatError(f"{path}: dataset 'betas' cannot be read (truncated or "
                                  f"corrupt?): {error}") from error


def _read_nifti(path: Path, ijk: np.ndarray) -> np.ndarray:
    _require(path)
    (x0, y0, z0), (x1, y1, z1) = _bounds(ijk)
    try:
        image = cast(Any, nib.load(path))
        box = np.asarray(image.dataobj[x0:x1, y0:y1, z0:z1, :])
    except Exception as error:
        raise DataFormatError(f"{path}: cannot be read as NIfTI (truncated or corrupt?): "
                              f"{error}") from error
    return box[ijk[:, 0] - x0, ijk[:, 1] - y0, ijk[:, 2] - z0, :].T


def read_volume_betas(path: str | Path, ijk: np.ndarray, beta_format: str = "hdf5", *,
                      n_trials: int | None = None, volume_shape: tuple[int, int, int] | None = None,
                      strategy: ReadStrategy = "slab") -> np.ndarray:
    """Read one session's betas at some voxels, in the file's dtype.

    Parameters
    ----------
    path : path-like
        ``betas_sessionNN.hdf5`` (h5py sees (n_trials, Z, Y, X)) or ``.nii.gz`` ((X, Y, Z, n_trials)).
    ijk : array of shape (n_voxels, 3)
        Voxel indices in NIfTI order (X, Y, Z).
    beta_format : {"hdf5", "nifti"}
    n_trials : int, optional
        Expected trial count; a mismatch raises DataFormatError.
    volume_shape : tuple of int, optional
        Expected (X, Y, Z); a mismatch raises DataFormatError.
    strategy : {"slab", "box", "full"}
        HDF5 only: slabs along Z within the mask's bounding box (default, bounded memory),
        the whole bounding box at once, or the whole session (for benchmarks).

    Returns
    -------
    ndarray of shape (n_trials, n_voxels)
    """
    path = Path(path)
    ijk = np.asarray(ijk, dtype=np.int64)
    info = beta_file_info(path, beta_format)
    if volume_shape is not None and tuple(info.spatial_shape) != tuple(volume_shape):
        raise DataFormatError(f"{path}: volume shape (X, Y, Z) {info.spatial_shape}, "
                              f"expected {tuple(volume_shape)}")
    if n_trials is not None and info.n_trials != n_trials:
        raise DataFormatError(f"{path}: {info.n_trials} trials on the trial axis, "
                              f"expected {n_trials} (the behaviour's trials per session)")
    if beta_format == "hdf5":
        return _read_hdf5(path, ijk, strategy)
    if beta_format == "nifti":
        return _read_nifti(path, ijk)
    raise ValueError(f"beta_format must be 'hdf5' or 'nifti', got {beta_format!r}")


def read_surface_betas(path: str | Path, vertices: np.ndarray, *, n_trials: int | None = None,
                       n_vertices: int | None = None) -> np.ndarray:
    """Read one hemisphere's fsaverage betas (``.mgh``, (n_vertices, 1, 1, n_trials)) at some vertices.

    Returns
    -------
    ndarray of shape (n_trials, len(vertices))
    """
    path = Path(path)
    vertices = np.asarray(vertices, dtype=np.int64)
    info = beta_file_info(path, "mgh")
    if n_vertices is not None and info.spatial_shape[0] != n_vertices:
        raise DataFormatError(f"{path}: {info.spatial_shape[0]} vertices, expected {n_vertices} "
                              "(the vertex count of the fsaverage labels)")
    if n_trials is not None and info.n_trials != n_trials:
        raise DataFormatError(f"{path}: {info.n_trials} trials on the trial axis, "
                              f"expected {n_trials} (the behaviour's trials per session)")
    if vertices.size == 0:
        return np.empty((info.n_trials, 0), dtype=info.dtype)
    v0, v1 = int(vertices.min()), int(vertices.max()) + 1
    try:
        block = mgh_read(path, (slice(v0, v1), 0, 0, slice(None)))
    except Exception as error:
        raise DataFormatError(f"{path}: cannot be read as MGH (truncated or corrupt?): "
                              f"{error}") from error
    return block[vertices - v0, :].T


def read_volume_map(path: str | Path, ijk: np.ndarray,
                    volume_shape: tuple[int, int, int]) -> np.ndarray:
    """Read a 3-D map (e.g. ``ncsnr.nii.gz``) at some voxels.

    Returns
    -------
    ndarray of shape (n_voxels,) float32
    """
    path = Path(path)
    _require(path)
    try:
        image = cast(Any, nib.load(path))
        shape = image.shape
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:
        raise DataFormatError(f"{path}: cannot be read as NIfTI ({error})") from error
    if tuple(shape[:3]) != tuple(volume_shape) or any(s != 1 for s in shape[3:]):
        raise DataFormatError(f"{path}: shape {shape}, expected (X, Y, Z) {tuple(volume_shape)}")
    data = data.reshape(shape[:3])
    ijk = np.asarray(ijk, dtype=np.int64)
    return data[ijk[:, 0], ijk[:, 1], ijk[:, 2]]


def read_surface_map(path: str | Path, vertices: np.ndarray, n_vertices: int) -> np.ndarray:
    """Read one hemisphere's per-vertex map (e.g. ``lh.ncsnr.mgh``, (n_vertices, 1, 1)) at some vertices.

    Returns
    -------
    ndarray of shape (len(vertices),) float32
    """
    path = Path(path)
    _require(path)
    try:
        shape, _, _ = mgh_header(path)
        data = mgh_read(path)
    except Exception as error:
        raise DataFormatError(f"{path}: cannot be read as MGH ({error})") from error
    if shape[0] != n_vertices or any(s != 1 for s in shape[1:]):
        raise DataFormatError(f"{path}: shape {shape}, expected ({n_vertices}, 1, 1) (the vertex count of "
                              "the fsaverage labels)")
    return np.asarray(data, dtype=np.float32).reshape(-1)[np.asarray(vertices, dtype=np.int64)]


def require_finite(raw: np.ndarray, path: str | Path, session: int, unit: str = "voxels") -> None:
    """Refuse betas that hold NaN or inf.

    NSD's int16 betas cannot hold them, but float betas (NIfTI or HDF5 written as floats, fsaverage
    ``.mgh``) can. They are an error rather than being zeroed or dropped: a NaN cannot be scaled,
    averaged over repeats or fitted, and replacing it would silently change the data.

    Parameters
    ----------
    raw : ndarray of shape (n_trials, n_columns)
        Betas of one file as read (columns: the voxels or vertices read).
    path : path-like
        The file, for the message.
    session : int
        1-based session, for the message.
    unit : str
        What a column is (``voxels`` or ``vertices``).

    Raises
    ------
    DataFormatError
        Naming the file, the session, the count of non-finite values and of columns affected.
    """
    if not np.issubdtype(raw.dtype, np.floating):
        return
    bad = ~np.isfinite(raw)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        n_columns = int(np.count_nonzero(bad.any(axis=0)))
        raise DataFormatError(f"{path}: session {session} has {n_bad} non-finite values (NaN or inf) "
                              f"in {n_columns} of the {raw.shape[1]} {unit} read; expected finite "
                              f"betas: repair the file, or leave session {session} out with --sessions")


def scale_betas(raw: np.ndarray, scale: str = "percent") -> np.ndarray:
    """Convert betas to float32.

    Parameters
    ----------
    raw : ndarray of shape (n_trials, n_voxels)
    scale : {"percent", "raw"}
        ``percent``: integer betas are divided by 300 (NSD stores % signal change x 300);
        float betas (fsaverage ``.mgh``) are already in percent and kept. ``raw``: values as stored.
    """
    if scale == "raw":
        return raw.astype(np.float32)
    if scale != "percent":
        raise ValueError(f"scale must be 'percent' or 'raw', got {scale!r}")
    if np.issubdtype(raw.dtype, np.integer):
        return (raw.astype(np.float32) / np.float32(BETA_SCALE)).astype(np.float32)
    return raw.astype(np.float32)


def zscore_trials(x: np.ndarray) -> np.ndarray:
    """Z-score each column over the rows (a session's trials); constant columns become 0.

    Parameters
    ----------
    x : ndarray of shape (n_trials, n_voxels)

    Returns
    -------
    ndarray of shape (n_trials, n_voxels) float32
    """
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return ((x - mean) / std).astype(np.float32)
