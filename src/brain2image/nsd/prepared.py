"""The prepared file (``prepared_subjXX.h5``): its layout and a lazy reader.

Layout (see ``docs/architecture.md``)::

    /train/{ids,session,trial}           one row per non-shared trial
    /test/{ids,n_repeats}                unique shared 73k ids (sorted), repetitions averaged
    /test_trials/{ids,session,trial}     single shared-image trials
    /rois/<key>/{train,test,test_trials} float32 (n_rows, n_voxels)
    /rois/<key>/ijk | vertex + hemi      voxel / vertex positions
    /rois/<key>/ncsnr                    when ncsnr is on disk
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataFormatError, MissingFileError

__all__ = ["PreparedData", "load_prepared"]

_SPLITS = ("train", "test", "test_trials")


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim == 1 else value
    if isinstance(value, np.generic):
        return value.item()
    return value


class PreparedData:
    """Lazy reader of a prepared file; each call opens the file, reads, and closes it.

    Parameters
    ----------
    path : path-like
        A file written by :func:`brain2image.nsd.prepare.prepare_subject`.

    Raises
    ------
    MissingFileError, DataFormatError
        If the file is absent, unreadable, or lacks the train/test groups.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"prepared file {self.path} not found")
        try:
            with h5py.File(self.path, "r") as handle:
                missing = [g for g in ("train", "test", "test_trials", "rois") if g not in handle]
                if missing:
                    raise DataFormatError(f"{self.path}: groups {missing} missing; not a prepared "
                                          "file (expected train, test, test_trials, rois)")
                self.attrs: dict[str, Any] = {k: _decode(v) for k, v in handle.attrs.items()}
                self.roi_keys: list[str] = list(handle["rois"].keys())
        except OSError as error:
            raise DataFormatError(f"{self.path}: not a readable HDF5 file ({error})") from error

    def __repr__(self) -> str:
        return f"PreparedData({str(self.path)!r}, subject={self.subject}, rois={self.roi_keys})"

    @property
    def subject(self) -> int:
        """Subject number."""
        return int(self.attrs["subject"])

    @property
    def space(self) -> str:
        """Space of the betas (``func1pt8mm``, ``fsaverage``...)."""
        return str(self.attrs["space"])

    def _roi(self, handle: h5py.File, roi: str) -> h5py.Group:
        if roi not in handle["rois"]:
            raise DataFormatError(f"{self.path}: no ROI '/rois/{roi}'; available: {self.roi_keys}")
        return handle["rois"][roi]

    def _dataset(self, handle: h5py.File, name: str) -> np.ndarray:
        if name not in handle:
            raise DataFormatError(f"{self.path}: no dataset '/{name}' (expected a file written by "
                                  "`brain2image prepare`)")
        return handle[name][()]

    def _split(self, roi: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        with h5py.File(self.path, "r") as handle:
            self._roi(handle, roi)
            X = self._dataset(handle, f"rois/{roi}/{split}")
            ids = self._dataset(handle, f"{split}/ids").astype(np.int64)
        if X.ndim != 2 or len(X) != len(ids):
            raise DataFormatError(f"{self.path}: '/rois/{roi}/{split}' has shape {X.shape} but "
                                  f"'/{split}/ids' has {len(ids)} entries; expected (n_rows, n_voxels) "
                                  "with one row per id")
        return X, ids

    def train(self, roi: str) -> tuple[np.ndarray, np.ndarray]:
        """Single training trials.

        Returns
        -------
        X : ndarray of shape (n_train, n_voxels) float32
        ids : ndarray of shape (n_train,) int64, 0-based 73k ids (images repeat)
        """
        return self._split(roi, "train")

    def test(self, roi: str) -> tuple[np.ndarray, np.ndarray]:
        """Shared images, averaged over their repetitions.

        Returns
        -------
        X : ndarray of shape (n_test, n_voxels) float32
        ids : ndarray of shape (n_test,) int64, sorted unique 0-based 73k ids
        """
        return self._split(roi, "test")

    def test_trials(self, roi: str) -> tuple[np.ndarray, np.ndarray]:
        """Single shared-image trials: X (n_test_trials, n_voxels), ids (n_test_trials,)."""
        return self._split(roi, "test_trials")

    def trials(self, split: str) -> dict[str, np.ndarray]:
        """Row metadata of a split: ``ids`` and ``session``/``trial`` or ``n_repeats``."""
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        with h5py.File(self.path, "r") as handle:
            return {name: data[()] for name, data in handle[split].items()}

    def n_repeats(self) -> np.ndarray:
        """Repetitions averaged into each test row, shape (n_test,)."""
        with h5py.File(self.path, "r") as handle:
            return self._dataset(handle, "test/n_repeats")

    def image_ids(self) -> np.ndarray:
        """Sorted unique 0-based 73k ids of every image the subject saw (train and test), int64."""
        with h5py.File(self.path, "r") as handle:
            parts = [self._dataset(handle, f"{split}/ids").astype(np.int64).reshape(-1)
                     for split in ("train", "test")]
        return np.unique(np.concatenate(parts))

    @property
    def volume_shape(self) -> tuple[int, ...] | None:
        """Shape (X, Y, Z) of the betas volume; None for surface spaces."""
        shape = self.attrs.get("volume_shape")
        return None if shape is None else tuple(int(v) for v in shape)

    @property
    def affine(self) -> np.ndarray | None:
        """4×4 voxel-to-world affine of the betas volume; None for surface spaces."""
        affine = self.attrs.get("affine")
        return None if affine is None else np.asarray(affine, dtype=np.float64)

    def positions(self, roi: str) -> dict[str, np.ndarray | None]:
        """Where an ROI's columns are: ``ijk`` (volume spaces) or ``vertex`` + ``hemi`` (surface).

        Absent entries are None; an ROI with neither is a DataFormatError.
        """
        with h5py.File(self.path, "r") as handle:
            group = self._roi(handle, roi)
            out = {name: (group[name][()] if name in group else None) for name in ("ijk", "vertex", "hemi")}
        if out["ijk"] is None and (out["vertex"] is None or out["hemi"] is None):
            raise DataFormatError(f"{self.path}: '/rois/{roi}' has neither 'ijk' nor 'vertex' + 'hemi'")
        return out

    def ncsnr(self, roi: str) -> np.ndarray | None:
        """Noise-ceiling SNR of the ROI's voxels, shape (n_voxels,), or None when not prepared."""
        with h5py.File(self.path, "r") as handle:
            group = self._roi(handle, roi)
            return group["ncsnr"][()] if "ncsnr" in group else None

    def ijk(self, roi: str) -> np.ndarray:
        """Voxel indices (X, Y, Z) in NIfTI order, shape (n_voxels, 3) (volume spaces)."""
        with h5py.File(self.path, "r") as handle:
            group = self._roi(handle, roi)
            if "ijk" not in group:
                raise DataFormatError(f"{self.path}: ROI {roi!r} has no 'ijk' (space "
                                      f"{self.space}); use vertices()")
            return group["ijk"][()]

    def vertices(self, roi: str) -> tuple[np.ndarray, np.ndarray]:
        """fsaverage vertex index and hemisphere (0 lh, 1 rh), each of shape (n_voxels,)."""
        with h5py.File(self.path, "r") as handle:
            group = self._roi(handle, roi)
            if "vertex" not in group:
                raise DataFormatError(f"{self.path}: ROI {roi!r} has no 'vertex' (space "
                                      f"{self.space}); use ijk()")
            return group["vertex"][()], group["hemi"][()]

    def roi_attrs(self, roi: str) -> dict[str, Any]:
        """``atlas``, ``label``, ``label_values`` of an ROI."""
        with h5py.File(self.path, "r") as handle:
            return {k: _decode(v) for k, v in self._roi(handle, roi).attrs.items()}

    def n_voxels(self, roi: str) -> int:
        """Voxel (or vertex) count of an ROI."""
        with h5py.File(self.path, "r") as handle:
            return int(self._roi(handle, roi)["train"].shape[1])

    def summary(self) -> str:
        """A short JSON description (attributes and shapes)."""
        with h5py.File(self.path, "r") as handle:
            shapes = {key: {s: list(handle["rois"][key][s].shape) for s in _SPLITS}
                      for key in self.roi_keys}
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.attrs.items()}
        return json.dumps({"path": str(self.path), "attrs": attrs, "rois": shapes}, indent=1)


def load_prepared(path: str | Path) -> PreparedData:
    """Open a prepared file lazily (see :class:`PreparedData`)."""
    return PreparedData(path)
