"""The prepared file (``prepared/subjXX.h5``): its layout, its writer and a lazy reader.

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
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from .. import __version__
from .._io import atomic_path
from ..errors import DataFormatError, InvalidArgumentError, MissingFileError

__all__ = ["PreparedData", "load_prepared", "PreparedWriter", "PreparedRoi", "TrialIndex"]

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
        A file written by a data source (:meth:`brain2image.sources.DataSource.prepare`).

    Raises
    ------
    MissingFileError, DataFormatError
        If the file is absent, unreadable, or lacks the train/test groups.
    """

    def __init__(self, path: str | os.PathLike) -> None:
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
    def subject(self) -> int | str:
        """Subject label: an int (NSD's 1..8), or the data source's string label."""
        value = self.attrs["subject"]
        return value if isinstance(value, str) else int(value)

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

    def read_rows(self, roi: str, split: str, rows: np.ndarray) -> np.ndarray:
        """Only rows ``rows`` (sorted row numbers) of the ROI's ``split``: (len(rows), n_voxels) float32.

        What a subset of the trials needs (the first sessions of a subject), never the whole split.
        """
        with h5py.File(self.path, "r") as handle:
            data = self._roi(handle, roi).get(split)
            if data is None:
                raise DataFormatError(f"{self.path}: no dataset '/rois/{roi}/{split}'; expected a file written by "
                                      "`brain2image prepare`")
            rows = np.asarray(rows, np.int64)
            out = data[rows] if len(rows) else np.zeros((0, data.shape[1]), np.float32)
        return np.asarray(out, np.float32)

    def stimulus_keys(self, ids: np.ndarray) -> np.ndarray:
        """The identity of each image across subjects and data sets (the transfer stage matches on it).

        NSD's prepared files (no ``source`` attribute, or ``"nsd"``) name an image by its 73k id:
        ``"nsd:<0-based id>"``. Other sources write ``/stimulus_keys/ids`` and
        ``/stimulus_keys/keys`` (:meth:`PreparedWriter.write_stimulus_keys`).

        Parameters
        ----------
        ids : array of int
            Image ids of this file.

        Returns
        -------
        ndarray of str, shape (len(ids),)

        Raises
        ------
        DataFormatError
            For a file of another source without ``/stimulus_keys``, or an id it does not name.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if str(self.attrs.get("source", "nsd")) == "nsd":
            return np.asarray([f"nsd:{i}" for i in ids.tolist()], dtype=object)
        with h5py.File(self.path, "r") as handle:
            if "stimulus_keys" not in handle:
                raise DataFormatError(f"{self.path}: no '/stimulus_keys' (source {self.attrs.get('source')!r}); "
                                      "expected the identity of each image, written by `brain2image prepare` "
                                      "of this version (prepare again)")
            known = handle["stimulus_keys/ids"][()].astype(np.int64)
            keys = np.asarray([_decode(k) for k in handle["stimulus_keys/keys"][()]], dtype=object)
        order = np.argsort(known, kind="stable")
        where = np.clip(np.searchsorted(known[order], ids), 0, max(len(known) - 1, 0))
        if len(known) == 0 or np.any(known[order][where] != ids):
            missing = ids[(len(known) == 0) | (known[order][where] != ids)][:5].tolist()
            raise DataFormatError(f"{self.path}: '/stimulus_keys/ids' lacks image id(s) {missing}; expected "
                                  "every image id of the file")
        return keys[order][where]

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
        """Fsaverage vertex index and hemisphere (0 lh, 1 rh), each of shape (n_voxels,)."""
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


@dataclass
class TrialIndex:
    """Row metadata of one split of single trials.

    Attributes
    ----------
    ids : array of shape (n_rows,)
        0-based 73k id of each trial.
    session, trial : arrays of shape (n_rows,)
        1-based session and trial within the session.
    """

    ids: np.ndarray
    session: np.ndarray
    trial: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PreparedRoi:
    """One ROI of a prepared file.

    Attributes
    ----------
    key : str
        Group name under ``/rois``.
    atlas, label : str
        Where the ROI comes from (``label`` empty for a whole atlas).
    label_values : array of int
        Atlas values that make up the ROI.
    columns : array of shape (n_voxels,)
        Columns of the ROI within the rows handed to :meth:`PreparedWriter.write_session`.
    positions : mapping
        ``{"ijk": (n_voxels, 3)}`` for volume spaces or ``{"vertex": ..., "hemi": ...}``.
    ncsnr : array of shape (n_voxels,) or None
    """

    key: str
    atlas: str
    label: str
    label_values: np.ndarray
    columns: np.ndarray
    positions: Mapping[str, np.ndarray]
    ncsnr: np.ndarray | None = None


_POSITION_DTYPES = {"ijk": np.int32, "vertex": np.int32, "hemi": np.int8}


class PreparedWriter:
    """Write a prepared file session by session; the file appears only when complete.

    Use as a context manager: the layout is created on entry, rows are appended with
    :meth:`write_session`, the repeat-averaged test rows are given with :meth:`write_test`, and
    the temporary file is renamed into place on a clean exit (removed on an error).

    Parameters
    ----------
    path : path-like
        Final path of the prepared file.
    attrs : mapping
        File attributes (``subject``, ``nsd_root``, ``space``, ...; ``brain2image_version`` is added).
    train, test_trials : TrialIndex
        Rows of the training trials and of the single shared-image trials, in write order.
    rois : sequence of PreparedRoi
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any], train: TrialIndex,
                 test_trials: TrialIndex, rois: Sequence[PreparedRoi]) -> None:
        self.path = Path(path)
        self.attrs = dict(attrs)
        self.train, self.test_trials = train, test_trials
        self.rois = list(rois)
        self._rows = {"train": 0, "test_trials": 0}
        self._handle: h5py.File | None = None

    def __enter__(self) -> PreparedWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._handle = h5py.File(tmp, "w")
            self._write_layout(self._handle)
        except BaseException as error:
            # __exit__ is not called when __enter__ fails: remove the temporary file here (a full
            # disk becomes the one-line error naming the path).
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        self._atomic.__exit__(kind, error, traceback)

    def _write_layout(self, handle: h5py.File) -> None:
        handle.attrs.update({**self.attrs, "brain2image_version": __version__})
        for name, index in (("train", self.train), ("test_trials", self.test_trials)):
            group = handle.create_group(name)
            group.create_dataset("ids", data=np.asarray(index.ids, dtype=np.int64))
            group.create_dataset("session", data=np.asarray(index.session, dtype=np.int16))
            group.create_dataset("trial", data=np.asarray(index.trial, dtype=np.int16))
        for roi in self.rois:
            group = handle.create_group(f"rois/{roi.key}")
            group.attrs.update({"atlas": roi.atlas, "label": roi.label,
                                "label_values": np.asarray(roi.label_values, dtype=np.int64)})
            n_vox = roi.columns.size
            group.create_dataset("train", shape=(len(self.train), n_vox), dtype=np.float32)
            group.create_dataset("test_trials", shape=(len(self.test_trials), n_vox), dtype=np.float32)
            for name, values in roi.positions.items():
                group.create_dataset(name, data=np.asarray(values).astype(_POSITION_DTYPES[name]))
            if roi.ncsnr is not None:
                group.create_dataset("ncsnr", data=np.asarray(roi.ncsnr, dtype=np.float32))

    def write_session(self, train_rows: np.ndarray, test_rows: np.ndarray) -> None:
        """Append one session's rows, each of shape (n_rows, n_columns) over every ROI's columns."""
        assert self._handle is not None, "use PreparedWriter as a context manager"
        for split, rows in (("train", train_rows), ("test_trials", test_rows)):
            start = self._rows[split]
            for roi in self.rois:
                self._handle["rois"][roi.key][split][start:start + len(rows)] = rows[:, roi.columns]
            self._rows[split] = start + len(rows)

    def read_test_trials(self, key: str) -> np.ndarray:
        """The single shared-image trials written so far for ROI ``key``, (n_test_trials, n_voxels)."""
        assert self._handle is not None, "use PreparedWriter as a context manager"
        return self._handle["rois"][key]["test_trials"][()]

    def write_stimulus_keys(self, ids: np.ndarray, keys: Sequence[str]) -> None:
        """Write the identity of each image across data sets (:meth:`PreparedData.stimulus_keys`)."""
        assert self._handle is not None, "use PreparedWriter as a context manager"
        if len(ids) != len(keys):
            raise InvalidArgumentError(f"{self.path}: {len(ids)} stimulus ids but {len(keys)} keys; expected one "
                                       "key per id")
        self._handle.create_dataset("stimulus_keys/ids", data=np.asarray(ids, dtype=np.int64))
        self._handle.create_dataset("stimulus_keys/keys", data=[str(k) for k in keys],
                                    dtype=h5py.string_dtype("utf-8"))

    def write_test(self, ids: np.ndarray, n_repeats: np.ndarray, means: Mapping[str, np.ndarray]) -> None:
        """Write the unique test ids, their repeat counts and each ROI's repeat-averaged rows."""
        assert self._handle is not None, "use PreparedWriter as a context manager"
        self._handle.create_dataset("test/ids", data=np.asarray(ids, dtype=np.int64))
        self._handle.create_dataset("test/n_repeats", data=np.asarray(n_repeats).astype(np.int16))
        for key, mean in means.items():
            self._handle["rois"][key].create_dataset("test", data=mean)
