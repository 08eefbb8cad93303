"""NSD's stimuli: the ``imgBrick`` of ``nsd_stimuli.hdf5`` and the COCO captions of each image.

The brick is one HDF5 dataset, ``imgBrick`` of shape (73000, 425, 425, 3) uint8 (~39.5 GB): it is
only ever read in sorted index batches, never whole. Captions come from COCO's
``captions_{train,val}2017.json``, matched to 73k ids through ``nsd_stim_info_merged.csv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, MissingFileError
from .layout import CAPTIONS_RELDIR, STIM_INFO_RELPATH, STIMULI_RELPATH

__all__ = ["stimuli_path", "read_stimuli", "iter_stimuli", "load_captions"]

_BRICK = "imgBrick"


def stimuli_path(nsd_root: str | os.PathLike) -> Path:
    """Path of ``nsd_stimuli.hdf5`` under ``nsd_root``; raises MissingFileError if absent."""
    path = Path(nsd_root).expanduser() / STIMULI_RELPATH
    if not path.is_file():
        raise MissingFileError(f"NSD stimulus file {path} not found (expected dataset '{_BRICK}' "
                               "of shape (73000, H, W, 3) uint8)")
    return path


def _check_brick(path: Path, brick) -> None:
    if brick.ndim != 4 or brick.shape[-1] != 3 or brick.dtype != np.uint8:
        raise DataFormatError(f"{path}: dataset '{_BRICK}' has shape {brick.shape} dtype {brick.dtype}; "
                              "expected (n_images, H, W, 3) uint8")


def read_stimuli(path: str | os.PathLike, ids: np.ndarray) -> np.ndarray:
    """Read the images of ``ids`` from an NSD stimulus brick, in the order asked.

    Parameters
    ----------
    path : path-like
        ``nsd_stimuli.hdf5`` (dataset ``imgBrick``).
    ids : array of shape (n_images,)
        0-based 73k ids, any order, duplicates allowed.

    Returns
    -------
    images : array of shape (n_images, H, W, 3), uint8
    """
    import h5py

    path = Path(path)
    ids = np.asarray(ids, dtype=np.int64)
    unique, inverse = np.unique(ids, return_inverse=True)
    with h5py.File(path, "r") as f:
        if _BRICK not in f:
            raise DataFormatError(f"{path}: no dataset '{_BRICK}' (expected the NSD stimulus brick)")
        brick = f[_BRICK]
        _check_brick(path, brick)
        if len(unique) and (unique[0] < 0 or unique[-1] >= brick.shape[0]):
            bad = unique[(unique < 0) | (unique >= brick.shape[0])]
            raise DataFormatError(f"{path}: '{_BRICK}' has {brick.shape[0]} images; ids {bad[:5].tolist()} "
                                  f"are out of range [0, {brick.shape[0]})")
        if len(unique) == 0:
            return np.zeros((0, *brick.shape[1:]), dtype=np.uint8)
        rows = brick[unique]  # h5py fancy indexing: sorted unique indices
    return rows[inverse.reshape(-1)]


def iter_stimuli(path: str | os.PathLike, ids: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(batch_ids, images)`` for sorted unique ``ids`` in batches, one brick read each.

    Parameters
    ----------
    path : path-like
        ``nsd_stimuli.hdf5``.
    ids : array of shape (n_images,)
        0-based 73k ids.
    batch_size : int

    Yields
    ------
    batch_ids : array of shape (n_batch,)
    images : array of shape (n_batch, H, W, 3), uint8
    """
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        yield batch, read_stimuli(path, batch)


def load_captions(nsd_root: str | os.PathLike, ids: np.ndarray) -> list[list[str]]:
    """COCO captions of each 73k id, matched through ``nsd_stim_info_merged.csv``.

    Parameters
    ----------
    nsd_root : path-like
    ids : array of shape (n_images,)

    Returns
    -------
    list (n_images) of lists of captions, in COCO annotation-id order.

    Raises
    ------
    MissingFileError, DataFormatError
        Missing csv / captions JSON, or an id with no captions (naming the file and the id).
    """
    import pandas as pd

    root = Path(nsd_root).expanduser()
    csv = root / STIM_INFO_RELPATH
    if not csv.is_file():
        raise MissingFileError(f"stimulus info {csv} not found")
    info = pd.read_csv(csv, index_col=0)
    for column in ("cocoId", "cocoSplit"):
        if column not in info.columns:
            raise DataFormatError(f"{csv}: no column '{column}' (expected nsd_stim_info_merged.csv)")
    ids = np.asarray(ids, dtype=np.int64)
    absent = ids[~np.isin(ids, info.index.to_numpy())]
    if len(absent):
        raise DataFormatError(f"{csv}: no row for 73k ids {absent[:5].tolist()} (0-based first column)")
    rows = info.loc[ids]
    by_split: dict[str, dict[int, list[tuple[int, str]]]] = {}
    for split in sorted(set(rows["cocoSplit"].astype(str))):
        path = root / CAPTIONS_RELDIR / f"captions_{split}.json"
        if not path.is_file():
            raise MissingFileError(f"COCO captions {path} not found (NSD does not ship them: download "
                                   f"annotations_trainval2017.zip from cocodataset.org and copy captions_{split}.json)")
        try:
            annotations = json.loads(path.read_text())["annotations"]
        except (KeyError, json.JSONDecodeError) as error:
            raise DataFormatError(f"{path}: expected a COCO captions JSON with 'annotations'") from error
        table: dict[int, list[tuple[int, str]]] = {}
        for ann in annotations:
            table.setdefault(int(ann["image_id"]), []).append((int(ann.get("id", 0)), str(ann["caption"]).strip()))
        by_split[split] = table
    captions = []
    for image_id, coco_id, split in zip(ids, rows["cocoId"].astype(np.int64), rows["cocoSplit"].astype(str)):
        found = by_split[split].get(int(coco_id))
        if not found:
            path = root / CAPTIONS_RELDIR / f"captions_{split}.json"
            raise DataFormatError(f"{path}: no captions for cocoId {coco_id} (73k id {image_id})")
        captions.append([text for _, text in sorted(found)])
    return captions
