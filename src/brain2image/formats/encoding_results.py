"""The encoding results file (``encoding/results.h5``): per-voxel scores of each feature space.

Layout::

    /spaces/<name>/{r,r2,alpha,nc_fraction}       float32 (n_voxels,): scores of each feature space
    /partitions/<a>__<b>/{r2_a,r2_b,r2_joint,unique_a,unique_b,shared,r_joint,weight_a,weight_b}
                                                  float32 (n_voxels,); attrs a, b
    /noise_ceiling                                float32 (n_voxels,)
    /voxels/{ijk | vertex,hemi}                   the analysis ROI's voxel positions
    /models/<name>/weights                        float32 (n_features, n_voxels): ridge weights
    /models/<name>/intercept                      float32 (n_voxels,): the training mean response
    /models/<name>/feature_mean, feature_scale    float64 (n_features,): the model's input is
                                                  (x.ravel() - feature_mean) / feature_scale
    /models/<name>/voxel_keys                     int64 (n_voxels,): the voxels' position keys
                                                  attrs: feature_shape (one image's feature), form
                                                  ("primal" / "kernel": how it was solved)

``/models`` holds the fitted encoding models kept to predict responses to new images (the ``z``
space: :class:`EncodingModel`, read by :func:`read_encoding_model`). File attrs: ``config``,
``prepared``, ``roi``, ``feature_stores``, ``brain2image_version``.

A part file (``encoding/parts/<part>.h5``, :class:`EncodingPart`) holds what one task of an
analysis run one part per task fitted (:mod:`brain2image.encoding.parts`)::

    /values/<field>                               (n_voxels,), dtype as fitted: a space's r, r2,
                                                  alpha (nc_fraction); a pair's r_joint, weight_a,
                                                  weight_b
    /models/<part>/...                            a kept model, laid out as in results.h5

File attrs: ``part``, ``kind`` ("space" / "pair"), ``has_model``, ``brain2image_version`` and the
provenance strings the writer is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from .._io import atomic_path
from ..errors import DataFormatError, MissingFileError
from ._hdf5 import has_datasets, open_hdf5

__all__ = ["EncodingModel", "write_encoding_results", "read_encoding_model", "has_encoding_model", "MODEL_FIELDS",
           "EncodingPart", "PART_FIELDS", "write_encoding_part", "read_encoding_part", "encoding_part_attrs"]

#: Datasets of one ``/models/<name>`` group.
MODEL_FIELDS = ("weights", "intercept", "feature_mean", "feature_scale", "voxel_keys")

#: The ``/values`` every part file of each kind holds (a space's ``nc_fraction`` only with a noise ceiling).
PART_FIELDS = {"space": ("r", "r2", "alpha"), "pair": ("r_joint", "weight_a", "weight_b")}


@dataclass
class EncodingModel:
    """A fitted linear encoding model of one feature space: features of an image -> voxel responses.

    Attributes
    ----------
    weights : array of shape (n_features, n_voxels), float32
        Ridge weights on the standardised features.
    intercept : array of shape (n_voxels,), float32
        Added to every prediction (the mean training response).
    feature_mean, feature_scale : arrays of shape (n_features,), float64
        Standardisation: the model's input is ``(x.ravel() - feature_mean) / feature_scale``.
    voxel_keys : array of shape (n_voxels,), int64
        Position key of each voxel (:func:`brain2image.encoding.outputs.voxel_keys`).
    feature_shape : tuple of int
        Shape of one image's feature (``(4, 40, 40)`` for z).
    form : {"primal", "kernel"}
        How the ridge was solved (the weights are primal either way).
    roi : str
        The prepared file's ROI key the voxels come from (set when read from a file).
    """

    weights: np.ndarray
    intercept: np.ndarray
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    voxel_keys: np.ndarray
    feature_shape: tuple[int, ...]
    form: str = "primal"
    roi: str = ""

    @property
    def n_voxels(self) -> int:
        """Voxels the model predicts."""
        return int(self.weights.shape[1])

    def check(self, where: str = "encoding model") -> None:
        """Raise :class:`DataFormatError` when the arrays' shapes disagree."""
        n_features, n_voxels = self.weights.shape if self.weights.ndim == 2 else (-1, -1)
        expected = {"weights": (int(np.prod(self.feature_shape)), n_voxels), "intercept": (n_voxels,),
                    "feature_mean": (n_features,), "feature_scale": (n_features,), "voxel_keys": (n_voxels,)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise DataFormatError(f"{where}: field '{name}' has shape {tuple(getattr(self, name).shape)}; "
                                      f"expected {shape} (feature_shape {self.feature_shape})")


def _write_model(f: h5py.File, name: str, model: EncodingModel) -> None:
    model.check(f"encoding model {name!r}")
    g = f.create_group(f"models/{name}")
    g.create_dataset("weights", data=np.asarray(model.weights, dtype=np.float32))
    g.create_dataset("intercept", data=np.asarray(model.intercept, dtype=np.float32))
    g.create_dataset("feature_mean", data=np.asarray(model.feature_mean, dtype=np.float64))
    g.create_dataset("feature_scale", data=np.asarray(model.feature_scale, dtype=np.float64))
    g.create_dataset("voxel_keys", data=np.asarray(model.voxel_keys, dtype=np.int64))
    g.attrs["feature_shape"] = np.asarray(model.feature_shape, dtype=np.int64)
    g.attrs["form"] = model.form


def write_encoding_results(spaces: Mapping[str, Mapping[str, np.ndarray]],
                           partitions: Mapping[str, Mapping[str, np.ndarray]], noise_ceiling: np.ndarray | None,
                           path: str | os.PathLike, *, roi_data: dict | None = None,
                           attrs: Mapping | None = None, models: Mapping[str, EncodingModel] | None = None) -> Path:
    """Write ``results.h5`` atomically (layout in the module docstring).

    Parameters
    ----------
    spaces, partitions : mapping name -> mapping field -> array of shape (n_voxels,)
    noise_ceiling : array of shape (n_voxels,), optional
    path : path-like
    roi_data : dict, optional
        ``ijk`` or ``vertex`` + ``hemi`` of the voxels.
    attrs : mapping, optional
        File attributes.
    models : mapping name -> EncodingModel, optional
        Fitted models kept to predict new images (``/models/<name>``).
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, values in spaces.items():
            g = f.create_group(f"spaces/{name}")
            for key, arr in values.items():
                g.create_dataset(key, data=np.asarray(arr, dtype=np.float32))
        for key, values in partitions.items():
            g = f.create_group(f"partitions/{key.replace('|', '__')}")
            g.attrs["a"], g.attrs["b"] = key.split("|")
            for q, arr in values.items():
                g.create_dataset(q, data=np.asarray(arr, dtype=np.float32))
        if noise_ceiling is not None:
            f.create_dataset("noise_ceiling", data=np.asarray(noise_ceiling).astype(np.float32))
        if roi_data is not None:
            for key in ("ijk", "vertex", "hemi"):
                if roi_data.get(key) is not None:
                    f.create_dataset(f"voxels/{key}", data=roi_data[key])
        for name, model in (models or {}).items():
            _write_model(f, name, model)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.attrs["brain2image_version"] = __version__
    return Path(path)


def read_encoding_model(path: str | os.PathLike, space: str = "z") -> EncodingModel:
    """The fitted encoding model of ``space`` kept in a results file.

    Parameters
    ----------
    path : path-like
        ``encoding/results.h5``.
    space : str
        Feature space (``z``).

    Returns
    -------
    EncodingModel
        With ``roi`` from the file's attributes.

    Raises
    ------
    MissingFileError
        No results file.
    DataFormatError
        An unreadable file, a file without the model of ``space`` (written before models were
        kept, or without that space), or a model with a missing field or inconsistent shapes.
    """
    path = Path(path)
    rerun = f"run `brain2image encode` (with the {space} feature store) again to write it"
    if not path.is_file():
        raise MissingFileError(f"encoding results {path} not found; run `brain2image encode` first")
    with open_hdf5(path, "encoding results file") as f:
        if f"models/{space}" not in f:
            raise DataFormatError(f"{path}: no fitted model '/models/{space}' (the {space} encoding weights); {rerun}")
        g = f[f"models/{space}"]
        missing = [k for k in MODEL_FIELDS if k not in g] + [k for k in ("feature_shape",) if k not in g.attrs]
        if missing:
            raise DataFormatError(f"{path}: '/models/{space}' lacks {missing}; {rerun}")
        model = EncodingModel(**{k: g[k][()] for k in MODEL_FIELDS},
                              feature_shape=tuple(int(n) for n in g.attrs["feature_shape"]),
                              form=str(g.attrs.get("form", "primal")), roi=str(f.attrs.get("roi", "")))
    model.check(f"{path}: '/models/{space}'")
    return model


def has_encoding_model(path: str | os.PathLike, space: str = "z") -> bool:
    """Whether ``path`` is a readable results file holding every dataset of the model of ``space``."""
    try:
        return has_datasets(path, tuple(f"models/{space}/{name}" for name in MODEL_FIELDS))
    except DataFormatError:
        return False


@dataclass
class EncodingPart:
    """What one part of an encoding analysis fitted: one feature space, or the banded model of a pair.

    Attributes
    ----------
    name : str
        The part: a feature space (``z``) or a pair (``z|c``).
    kind : {"space", "pair"}
    values : dict field -> array of shape (n_voxels,)
        A space's ``r``, ``r2``, ``alpha`` (``nc_fraction``); a pair's ``r_joint``, ``weight_a``,
        ``weight_b``. Written and read back with their dtype (no rounding).
    attrs : dict str -> str
        Provenance (what the part was fitted from).
    model : EncodingModel or None
        A space's fitted model, when it is kept.
    """

    name: str
    kind: str
    values: dict[str, np.ndarray]
    attrs: dict[str, str] = field(default_factory=dict)
    model: EncodingModel | None = None


def write_encoding_part(path: str | os.PathLike, part: EncodingPart) -> Path:
    """Write a part file atomically (layout in the module docstring).

    Parameters
    ----------
    path : path-like
    part : EncodingPart

    Returns
    -------
    Path
    """
    if part.kind not in PART_FIELDS:
        raise ValueError(f"encoding part {part.name!r}: kind {part.kind!r}; expected one of {list(PART_FIELDS)}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        values = f.create_group("values", track_order=True)  # read back in the order fitted
        for key, arr in part.values.items():
            values.create_dataset(key, data=np.asarray(arr))
        if part.model is not None:
            _write_model(f, part.name, part.model)
        for key, value in part.attrs.items():
            f.attrs[key] = value
        f.attrs.update({"part": part.name, "kind": part.kind, "has_model": part.model is not None,
                        "brain2image_version": __version__})
    return Path(path)


def _part_missing(f: h5py.File) -> list[str]:
    """What an open part file lacks of its layout (attrs, values, a kept model's datasets)."""
    missing = [f"attribute '{k}'" for k in ("part", "kind", "has_model") if k not in f.attrs]
    if missing:
        return missing
    kind = str(f.attrs["kind"])
    if kind not in PART_FIELDS:
        return [f"a 'kind' of {list(PART_FIELDS)} (it is {kind!r})"]
    missing = [f"'/values/{k}'" for k in PART_FIELDS[kind] if f"values/{k}" not in f]
    if bool(f.attrs["has_model"]):
        name = str(f.attrs["part"])
        missing += [f"'/models/{name}/{k}'" for k in MODEL_FIELDS if f"models/{name}/{k}" not in f]
    return missing


def encoding_part_attrs(path: str | os.PathLike) -> dict[str, str] | None:
    """The attributes of a complete part file; ``None`` when ``path`` is missing, unreadable or incomplete.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict or None
    """
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return None
    try:
        with open_hdf5(path, "encoding part file") as f:
            if _part_missing(f):
                return None
            return {key: _attr_text(value) for key, value in f.attrs.items()}
    except DataFormatError:
        return None


def _attr_text(value: object) -> str:
    """An HDF5 attribute as text (strings as they are, anything else through ``str``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def read_encoding_part(path: str | os.PathLike) -> EncodingPart:
    """Read a part file written by :func:`write_encoding_part`.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    EncodingPart
        ``attrs`` holds every file attribute as text.

    Raises
    ------
    MissingFileError
        No file at ``path``.
    DataFormatError
        An unreadable file, or one that lacks part of the layout.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"encoding part file {path} not found; fit the part first")
    with open_hdf5(path, "encoding part file") as f:
        missing = _part_missing(f)
        if missing:
            raise DataFormatError(f"{path}: not a complete encoding part file (lacks {', '.join(missing)}); "
                                  "delete it and fit the part again")
        attrs = {key: _attr_text(value) for key, value in f.attrs.items()}
        values = {key: f["values"][key][()] for key in f["values"]}
        has_model = bool(f.attrs["has_model"])
    model = read_encoding_model(path, attrs["part"]) if has_model else None
    return EncodingPart(name=attrs["part"], kind=attrs["kind"], values=values, attrs=attrs, model=model)
