"""NSD's stimuli: the ``imgBrick`` of ``nsd_stimuli.hdf5`` and the COCO captions of each image.

The brick is one HDF5 dataset, ``imgBrick`` of shape (73000, 425, 425, 3) uint8 (~39.5 GB): it is
only ever read in sorted index batches, never whole. Captions come from COCO's
``captions_{train,val}2017.json``, matched to 73k ids through ``nsd_stim_info_merged.csv``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import DataFormatError, MissingFileError
from .layout import CAPTIONS_RELDIR, STIM_INFO_RELPATH, STIMULI_RELPATH

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["captions_file", "check_stimuli", "iter_stimuli", "load_captions", "read_caption_file",
           "read_stim_info", "read_stimuli", "require_captions", "stimuli_identity", "stimuli_path",
           "study_provenance"]

_BRICK = "imgBrick"


def stimuli_path(nsd_root: str | os.PathLike) -> Path:
    """Path of ``nsd_stimuli.hdf5`` under ``nsd_root``; raises MissingFileError if absent."""
    path = Path(nsd_root).expanduser() / STIMULI_RELPATH
    if not path.is_file():
        raise MissingFileError(f"NSD stimulus file {path} not found (expected dataset '{_BRICK}' "
                               "of shape (73000, H, W, 3) uint8)")
    return path


#: Blocks read by :func:`stimuli_identity` and the size of each.
_IDENTITY_BLOCKS, _IDENTITY_BLOCK_BYTES = 16, 64 * 2**10


def stimuli_identity(path: str | os.PathLike) -> str:
    """A cheap identity of a stimulus file: its size and a SHA-256 of a fixed sample of its bytes.

    The sample is 16 blocks of 64 KiB at evenly spaced offsets (the whole file when smaller), so
    the 39 GB NSD brick costs 1 MiB of reads.

    Returns
    -------
    str
        ``"<size in bytes>:<sha256 hex of the sample>"``.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    step = max(0, size - _IDENTITY_BLOCK_BYTES) // max(1, _IDENTITY_BLOCKS - 1)
    offsets = sorted({i * step for i in range(_IDENTITY_BLOCKS)})
    with path.open("rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            digest.update(handle.read(_IDENTITY_BLOCK_BYTES))
    return f"{size}:{digest.hexdigest()}"


def study_provenance(nsd_root: str | os.PathLike) -> dict[str, str]:
    """The study a file was made from: ``nsd_root`` (resolved) and ``stimuli_identity``.

    ``stimuli_identity`` (:func:`stimuli_identity`) is left out when the tree has no stimulus file.
    """
    root = Path(nsd_root).expanduser().resolve()
    brick = root / STIMULI_RELPATH
    record = {"nsd_root": str(root)}
    if brick.is_file():
        record["stimuli_identity"] = stimuli_identity(brick)
    return record


def _check_brick(path: Path, brick: Any) -> None:
    """Raise DataFormatError unless ``brick`` is 4-D uint8 with 3 channels last."""
    if brick.ndim != 4 or brick.shape[-1] != 3 or brick.dtype != np.uint8:
        raise DataFormatError(f"{path}: dataset '{_BRICK}' has shape {brick.shape} dtype {brick.dtype}; "
                              "expected (n_images, H, W, 3) uint8")


def _require_ids(path: Path, n_images: int, ids: np.ndarray) -> None:
    """Raise DataFormatError naming ``path`` when an id is outside ``[0, n_images)``."""
    bad = ids[(ids < 0) | (ids >= n_images)]
    if len(bad):
        raise DataFormatError(f"{path}: '{_BRICK}' has {n_images} images; ids {np.unique(bad)[:5].tolist()} "
                              f"are out of range [0, {n_images})")


def check_stimuli(path: str | os.PathLike, ids: np.ndarray) -> tuple[tuple[int, ...], np.dtype]:
    """Check the brick's header (dataset, shape, dtype) and that it holds every id, reading no image.

    Parameters
    ----------
    path : path-like
        ``nsd_stimuli.hdf5``.
    ids : array of shape (n_images,)
        0-based 73k ids that will be read.

    Returns
    -------
    shape, dtype of ``imgBrick``.

    Raises
    ------
    MissingFileError, DataFormatError
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"NSD stimulus file {path} not found (expected dataset '{_BRICK}' "
                               "of shape (73000, H, W, 3) uint8)")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataFormatError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {error}") from error
    with handle:
        if _BRICK not in handle or not isinstance(handle[_BRICK], h5py.Dataset):
            raise DataFormatError(f"{path}: no dataset '{_BRICK}' (found {list(handle.keys())}); expected "
                                  "the NSD stimulus brick (73000, H, W, 3) uint8")
        brick = handle[_BRICK]
        _check_brick(path, brick)
        _require_ids(path, brick.shape[0], np.asarray(ids, dtype=np.int64))
        return tuple(int(n) for n in brick.shape), brick.dtype


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
        _require_ids(path, brick.shape[0], unique)
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


def read_stim_info(nsd_root: str | os.PathLike, ids: np.ndarray) -> pd.DataFrame:
    """The ``cocoId`` and ``cocoSplit`` of each 73k id, from ``nsd_stim_info_merged.csv``.

    Parameters
    ----------
    nsd_root : path-like
    ids : array of shape (n_images,)
        0-based 73k ids.

    Returns
    -------
    DataFrame indexed by the ids (in the order given), columns ``cocoId`` (int) and ``cocoSplit``.

    Raises
    ------
    MissingFileError, DataFormatError
        Missing file, missing column, or an id without a row.
    """
    import pandas as pd

    csv = Path(nsd_root).expanduser() / STIM_INFO_RELPATH
    if not csv.is_file():
        raise MissingFileError(f"stimulus info {csv} not found")
    try:
        info = pd.read_csv(csv, index_col=0)
    except Exception as error:  # pandas raises ParserError/UnicodeDecodeError/ValueError
        raise DataFormatError(f"{csv}: cannot be read as a CSV table ({error})") from error
    for column in ("cocoId", "cocoSplit"):
        if column not in info.columns:
            raise DataFormatError(f"{csv}: no column '{column}' (expected nsd_stim_info_merged.csv)")
    ids = np.asarray(ids, dtype=np.int64)
    absent = ids[~np.isin(ids, info.index.to_numpy())]
    if len(absent):
        raise DataFormatError(f"{csv}: no row for 73k ids {absent[:5].tolist()} (0-based first column)")
    rows = info.loc[ids, ["cocoId", "cocoSplit"]]
    return rows.assign(cocoId=rows["cocoId"].astype(np.int64), cocoSplit=rows["cocoSplit"].astype(str))


def captions_file(nsd_root: str | os.PathLike, split: str) -> Path:
    """Path of COCO's ``captions_<split>.json`` under ``nsd_root`` (it may not exist)."""
    return Path(nsd_root).expanduser() / CAPTIONS_RELDIR / f"captions_{split}.json"


def read_caption_file(path: str | os.PathLike) -> dict[int, list[tuple[int, str]]]:
    """COCO captions by image id: ``{image_id: [(annotation id, caption), ...]}``.

    Raises
    ------
    MissingFileError, DataFormatError
        Missing file, or not a JSON object with a list ``annotations`` of ``image_id`` / ``caption``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"COCO captions {path} not found (NSD does not ship them: download "
                               f"annotations_trainval2017.zip from cocodataset.org and copy {path.name})")
    try:
        annotations = json.loads(path.read_text())["annotations"]
        table: dict[int, list[tuple[int, str]]] = {}
        for ann in annotations:
            table.setdefault(int(ann["image_id"]), []).append((int(ann.get("id", 0)),
                                                               str(ann["caption"]).strip()))
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: expected a COCO captions JSON with 'annotations' "
                              f"(image_id, caption) ({type(error).__name__}: {error})") from error
    return table


def require_captions(path: Path, table: dict[int, list[tuple[int, str]]], rows: pd.DataFrame) -> None:
    """Raise DataFormatError naming ``path`` unless every row's ``cocoId`` has a caption in ``table``.

    Parameters
    ----------
    path : Path
        The captions file ``table`` was read from.
    table : dict
        :func:`read_caption_file` of it.
    rows : DataFrame
        :func:`read_stim_info` rows of the images whose captions must be there (index: 73k ids).
    """
    absent = [(int(coco), int(image)) for image, coco in zip(rows.index, rows["cocoId"])
              if not table.get(int(coco))]
    if absent:
        more = f" and {len(absent) - 1} more images" if len(absent) > 1 else ""
        raise DataFormatError(f"{path}: no captions for cocoId {absent[0][0]} (73k id {absent[0][1]}){more}; "
                              "expected at least one annotation per image (the COCO 2017 captions)")


def load_captions(nsd_root: str | os.PathLike, ids: np.ndarray) -> list[list[str]]:
    """COCO captions of each 73k id, matched through ``nsd_stim_info_merged.csv``.

    Every file is read and every id checked before anything is returned, so a caller that calls
    this before writing fails without leaving a partial output.

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
    rows = read_stim_info(nsd_root, ids)
    by_split: dict[str, dict[int, list[tuple[int, str]]]] = {}
    for split in sorted(set(rows["cocoSplit"])):
        path = captions_file(nsd_root, split)
        by_split[split] = read_caption_file(path)
        require_captions(path, by_split[split], rows[rows["cocoSplit"] == split])
    return [[text for _, text in sorted(by_split[split][coco_id])]
            for coco_id, split in zip(rows["cocoId"], rows["cocoSplit"])]
