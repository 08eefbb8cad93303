"""Read features to reconstruct from: a decoder file's test predictions or a feature store."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DataFormatError, MissingFileError
from .feature_store import FeatureStore

__all__ = ["read_predictions"]


def _kind(path: Path) -> str:
    try:
        with h5py.File(path, "r") as f:
            if "test/pred" in f and "test/ids" in f:
                return "decoder"
            if "features" in f and "ids" in f:
                return "store"
    except OSError as error:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({error})") from error
    raise DataFormatError(f"{path}: expected datasets 'test/ids' + 'test/pred' (decoder file) or "
                          "'ids' + 'features' (feature store)")


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Ids and features from a decoder file (its test predictions) or a feature store.

    Returns
    -------
    ids : array of shape (n_images,), int64
    values : array of shape (n_images, *feature_shape), float32
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found (expected a decoder file or a feature store)")
    if _kind(path) == "decoder":
        from .decoder_file import DecoderFile

        decoder = DecoderFile.read(path)
        return np.asarray(decoder.test_ids, np.int64), np.asarray(decoder.test_pred, np.float32)
    store = FeatureStore.open(path)
    return np.asarray(store.ids, np.int64), np.asarray(store.read(), np.float32)
