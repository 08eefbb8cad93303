"""Decoder files ``decoders/subjXX_<target>_<roi>.h5``: one fitted ridge decoder and its test scores.

One class, :class:`DecoderFile`, holds the contents, writes its own file
(:meth:`DecoderFile.write`, atomically) and reads it back (:meth:`DecoderFile.read`); nothing
else in the package opens a decoder file. Layout (HDF5):

======================  ====================================  =======
dataset                 shape                                 dtype
======================  ====================================  =======
``alphas``              (n_targets,)                          float64
``coef``                (n_voxels, n_targets)                 float32
``x_mean``, ``x_std``   (n_voxels,)                           float64
``intercept``           (n_targets,)                          float32
``cv_score``            (n_targets,) (optional on read)       float64
``test/ids``            (n_test,)                             int64
``test/pred``           (n_test, *target_shape)               float32
``test/corr``           (n_targets,)                          float64
======================  ====================================  =======

with ``n_targets = prod(target_shape)``. Attributes: ``decoder_config`` (JSON of
:class:`~brain2image.config.DecoderConfig`), ``target_shape``, ``mean_test_corr``,
``median_alpha``, ``brain2image_version`` (all four written by :meth:`DecoderFile.write`), plus
the provenance the fit records (``roi``, ``target``, ``subject``, ``alpha_grid``,
``n_train_rows``, ``n_train_images``, ``fit_seconds``, ``backend``, ``dtype``,
``prepared_file``, ``feature_store``, ``feature_attrs``) and the study of its inputs
(``stimuli_identity``, ``nsd_root``; absent from files written before they were recorded).

The fitted estimator is rebuilt from a file by the method layer
(:func:`brain2image.decoding.estimator_from_file`): formats import no method code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from .._io import atomic_path
from ..config import DecoderConfig, config_from_dict, config_to_json
from ..errors import DataFormatError, InvalidArgumentError, MissingFileError
from ._hdf5 import has_datasets, open_hdf5

__all__ = ["DecoderFile", "DECODER_DATASETS", "WEIGHT_DATASETS"]

#: Datasets every decoder file must have.
DECODER_DATASETS = ("alphas", "x_mean", "test/ids", "test/pred", "test/corr")
#: Datasets read only with ``load_weights=True`` (also required then).
WEIGHT_DATASETS = ("coef", "intercept", "x_std")
#: Attributes :meth:`DecoderFile.write` computes itself (never taken from ``attrs``).
_COMPUTED_ATTRS = ("decoder_config", "target_shape", "mean_test_corr", "median_alpha", "brain2image_version")


def _expected_shapes(n_voxels: int, n_targets: int, n_test: int) -> dict[str, tuple[int, ...]]:
    return {"alphas": (n_targets,), "x_mean": (n_voxels,), "x_std": (n_voxels,), "coef": (n_voxels, n_targets),
            "intercept": (n_targets,), "cv_score": (n_targets,), "test/ids": (n_test,), "test/corr": (n_targets,)}


def _check_shapes(shapes: dict[str, tuple[int, ...]], source: str, error: type[Exception]) -> None:
    """Check the datasets' shapes against each other (``shapes`` holds those present)."""
    pred = shapes["test/pred"]
    if len(pred) < 2:
        raise error(f"{source}: field 'test/pred' has shape {pred}; expected (n_test, *target_shape)")
    n_targets = int(np.prod(pred[1:]))
    n_voxels = shapes["x_mean"][0] if len(shapes["x_mean"]) == 1 else -1
    for key, expected in _expected_shapes(n_voxels, n_targets, pred[0]).items():
        if key in shapes and tuple(shapes[key]) != expected:
            raise error(f"{source}: field '{key}' has shape {tuple(shapes[key])}; expected {expected} "
                        f"(n_voxels={n_voxels}, n_targets=prod(target_shape {pred[1:]})={n_targets}, "
                        f"n_test={pred[0]})")


def _require(handle: h5py.File, path: Path, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in handle or not isinstance(handle[key], h5py.Dataset):
            raise DataFormatError(f"{path}: missing dataset '/{key}'; expected a decoder file with datasets "
                                  f"{list(DECODER_DATASETS + WEIGHT_DATASETS)}")


def _read_config(handle: h5py.File, path: Path) -> DecoderConfig:
    if "decoder_config" not in handle.attrs:
        raise DataFormatError(f"{path}: missing attribute 'decoder_config'; expected the JSON of a DecoderConfig")
    text = handle.attrs["decoder_config"]
    try:
        values = json.loads(text.decode() if isinstance(text, bytes) else text)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: attribute 'decoder_config' is not valid JSON ({error}); "
                              "expected the JSON of a DecoderConfig") from None
    return config_from_dict(DecoderConfig, _current_keys(values), where=str(path))


#: Keys of the decoder config of files written before ``[decoder] targets``: the ROI of z and of c.
_LEGACY_ROI_KEYS = {"z_roi": "z", "c_roi": "c"}


def _current_keys(values: dict) -> dict:
    """A decoder config as written by any version: ``z_roi`` / ``c_roi`` become ``targets`` (read-only)."""
    legacy = {target: values[key] for key, target in _LEGACY_ROI_KEYS.items() if key in values}
    if not legacy or not isinstance(values, dict):
        return values
    kept = {key: value for key, value in values.items() if key not in _LEGACY_ROI_KEYS}
    return {"targets": legacy, **kept}


@dataclass
class DecoderFile:
    """Contents of one decoder file (see the module docstring for the layout).

    Attributes
    ----------
    test_ids : ndarray of shape (n_test,)
        73k ids of the test images.
    test_pred : ndarray of shape (n_test, *target_shape)
        Decoded test features.
    test_corr : ndarray of shape (n_targets,)
        Pearson r of each target over the test images (NaN where constant).
    alphas : ndarray of shape (n_targets,)
        Chosen alpha of each target.
    cv_score : ndarray of shape (n_targets,)
        Pooled validation R^2 at the chosen alpha.
    config : DecoderConfig
    attrs : dict
        Provenance attributes (read back: every attribute of the file).
    coef : ndarray of shape (n_voxels, n_targets), optional
    intercept : ndarray of shape (n_targets,), optional
    x_mean, x_std : ndarrays of shape (n_voxels,), optional
        ``coef``, ``intercept``, ``x_mean`` and ``x_std`` are read only with ``load_weights=True``.
    n_voxels : int, optional
        Defaults to the length of ``x_mean`` (or the rows of ``coef``).
    path : Path, optional
        The file read (``None`` for contents not yet written).
    """

    test_ids: np.ndarray
    test_pred: np.ndarray
    test_corr: np.ndarray
    alphas: np.ndarray
    cv_score: np.ndarray
    config: DecoderConfig
    attrs: dict[str, Any] = field(default_factory=dict)
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None
    n_voxels: int | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.n_voxels is None:
            source = self.x_mean if self.x_mean is not None else self.coef
            self.n_voxels = None if source is None else int(np.shape(source)[0])

    # ------------------------------------------------------------------ names
    @staticmethod
    def filename(subject: int | str, target: str, roi: str) -> str:
        """``subjXX_<target>_<roi>.h5`` (architecture.md, decoder files); a non-numeric label names itself."""
        tag = subject if isinstance(subject, str) and not subject.isdigit() else f"subj{int(subject):02d}"
        return f"{tag}_{target}_{roi}.h5"

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one image's targets, ``test_pred.shape[1:]``."""
        return tuple(int(n) for n in np.shape(self.test_pred)[1:])

    # ------------------------------------------------------------------ writing
    def _computed_attrs(self) -> dict[str, Any]:
        corr = np.asarray(self.test_corr, dtype=np.float64)
        return {"decoder_config": config_to_json(self.config),
                "target_shape": np.asarray(self.target_shape, dtype=np.int64),
                "mean_test_corr": float(np.nanmean(corr)) if np.any(np.isfinite(corr)) else float("nan"),
                "median_alpha": float(np.median(self.alphas)),
                "brain2image_version": __version__}

    def write(self, path: str | os.PathLike) -> Path:
        """Write the decoder file atomically (no partial file is ever left at ``path``).

        Parameters
        ----------
        path : path-like
            Usually ``decoders/`` + :meth:`filename`.

        Returns
        -------
        Path
        """
        path = Path(path)
        arrays = {"alphas": self.alphas, "coef": self.coef, "x_mean": self.x_mean, "x_std": self.x_std,
                  "intercept": self.intercept, "cv_score": self.cv_score, "test/ids": self.test_ids,
                  "test/pred": self.test_pred, "test/corr": self.test_corr}
        missing = [key for key, value in arrays.items() if value is None]
        if missing:
            raise InvalidArgumentError(f"{path}: cannot write a decoder file without field(s) {missing}; "
                                       "expected contents read with load_weights=True or a fresh fit")
        _check_shapes({k: np.shape(v) for k, v in arrays.items() if v is not None}, str(path), InvalidArgumentError)
        float32 = ("coef", "intercept", "test/pred")
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=np.asarray(value, dtype=np.float32) if key in float32 else value)
            f.attrs.update({k: v for k, v in self.attrs.items() if k not in _COMPUTED_ATTRS})
            f.attrs.update(self._computed_attrs())
        return path

    # ------------------------------------------------------------------ reading
    @classmethod
    def read(cls, path: str | os.PathLike, load_weights: bool = False) -> DecoderFile:
        """Read a decoder file.

        Parameters
        ----------
        path : path-like
        load_weights : bool
            Also read ``coef`` (n_voxels, n_targets; large for c), ``intercept``, ``x_mean``,
            ``x_std``.

        Returns
        -------
        DecoderFile

        Raises
        ------
        MissingFileError
            If there is no file at ``path``.
        DataFormatError
            If a dataset or the ``decoder_config`` attribute is missing or a shape is inconsistent
            (the message names the file and the field).
        """
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"decoder file not found: {path}")
        with open_hdf5(path, "decoder file") as f:
            _require(f, path, DECODER_DATASETS + (WEIGHT_DATASETS if load_weights else ()))
            _check_shapes({k: f[k].shape for k in (*_expected_shapes(0, 0, 0), "test/pred") if k in f},
                          str(path), DataFormatError)
            config = _read_config(f, path)
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            out = cls(test_ids=f["test/ids"][()], test_pred=f["test/pred"][()], test_corr=f["test/corr"][()],
                      alphas=f["alphas"][()],
                      cv_score=f["cv_score"][()] if "cv_score" in f else np.full(f["alphas"].shape, np.nan),
                      config=config, attrs=attrs, n_voxels=int(f["x_mean"].shape[0]), path=path)
            if load_weights:
                out.coef, out.intercept = f["coef"][()], f["intercept"][()]
                out.x_mean, out.x_std = f["x_mean"][()], f["x_std"][()]
        return out

    @staticmethod
    def is_decoder_file(path: str | os.PathLike) -> bool:
        """Whether ``path`` is an HDF5 file with a decoder file's ``test/ids`` and ``test/pred``."""
        return has_datasets(path, ("test/ids", "test/pred"))

    @staticmethod
    def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
        """Only the attributes of a decoder file (strings decoded, numpy scalars unwrapped)."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"decoder file not found: {path}")
        with open_hdf5(path, "decoder file") as f:
            return {k: v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
                    for k, v in f.attrs.items()}

    @staticmethod
    def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
        """Only the test predictions of a decoder file.

        Returns
        -------
        ids : int64 ndarray of shape (n_test,)
        pred : float32 ndarray of shape (n_test, *target_shape)
        """
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"decoder file not found: {path}")
        with open_hdf5(path, "decoder file") as f:
            _require(f, path, ("test/ids", "test/pred"))
            ids, pred = np.asarray(f["test/ids"][()], np.int64), np.asarray(f["test/pred"][()], np.float32)
        if pred.ndim < 2 or len(pred) != len(ids):
            raise DataFormatError(f"{path}: field 'test/pred' has shape {pred.shape} but 'test/ids' has "
                                  f"{len(ids)} entries; expected (n_test, *target_shape) with one row per id")
        return ids, pred

    # ------------------------------------------------------------------ views
    def summary(self) -> dict[str, float]:
        """Test scores of the decoder: n_voxels, n_targets, mean / median r, share of r > 0.1, median alpha.

        Returns
        -------
        dict
            ``n_voxels``, ``n_targets``, ``mean_r``, ``median_r``, ``frac_r_above_0.1`` (over the
            finite test correlations; NaN if none) and ``median_alpha``.
        """
        corr = np.asarray(self.test_corr, dtype=np.float64)
        finite = corr[np.isfinite(corr)]
        if finite.size:
            scores = {"mean_r": float(finite.mean()), "median_r": float(np.median(finite)),
                      "frac_r_above_0.1": float((finite > 0.1).mean())}
        else:
            scores = dict.fromkeys(("mean_r", "median_r", "frac_r_above_0.1"), float("nan"))
        return {"n_voxels": -1 if self.n_voxels is None else int(self.n_voxels), "n_targets": int(corr.size),
                **scores, "median_alpha": float(np.median(np.asarray(self.alphas, dtype=np.float64)))}
