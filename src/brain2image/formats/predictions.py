"""Read features to reconstruct from: a decoder file's test predictions or a feature store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, MissingFileError
from .decoder_file import DecoderFile
from .feature_store import FeatureStore

__all__ = ["read_predictions"]


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
    if DecoderFile.is_decoder_file(path):
        return DecoderFile.read_predictions(path)
    if not FeatureStore.is_feature_store(path):
        raise DataFormatError(f"{path}: expected datasets 'test/ids' + 'test/pred' (decoder file) or "
                              "'ids' + 'features' (feature store)")
    store = FeatureStore.open(path)
    return np.asarray(store.ids, np.int64), np.asarray(store.read(), np.float32)
