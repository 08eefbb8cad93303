"""Image I/O for the latent-diffusion stage: NSD ``imgBrick`` reads and resizing helpers.

The NSD stimuli live in one HDF5 dataset, ``imgBrick`` of shape (73000, 425, 425, 3) uint8
(~39.5 GB): it is only ever read in sorted index batches, never whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError, MissingFileError
from ..nsd.layout import CAPTIONS_RELDIR, STIM_INFO_RELPATH, STIMULI_RELPATH

__all__ = [
    "STIMULI_RELPATH",
    "STIM_INFO_RELPATH",
    "CAPTIONS_RELDIR",
    "stimuli_path",
    "read_stimuli",
    "iter_stimuli",
    "resize_images",
    "images_to_tensor",
    "tensor_to_images",
]

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


def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB images with PIL's LANCZOS filter.

    Parameters
    ----------
    images : array of shape (n_images, H, W, 3), uint8
    size : int or (height, width)

    Returns
    -------
    array of shape (n_images, height, width, 3), uint8 (the input itself if sizes match)
    """
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"images have shape {images.shape} dtype {images.dtype}; "
                              "expected (n_images, H, W, 3) uint8")
    if images.shape[1:3] == (height, width):
        return images
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
    return out


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (n_images, H, W, 3) → float tensor (n_images, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """Float tensor (n_images, 3, H, W) in [-1, 1] → uint8 images (n_images, H, W, 3), rounded."""
    scaled = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
