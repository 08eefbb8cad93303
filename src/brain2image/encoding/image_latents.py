"""The z (VAE latent) of image files, computed as the ``features`` stage computes it for stimuli.

The settings (z resolution, posterior mean or seeded draw, seed) are those recorded in the z
feature store, so the latents of reconstructions live in the same space as the stimuli's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataFormatError, MissingFileError

if TYPE_CHECKING:
    from ..ldm.loading import LatentDiffusionModel

__all__ = ["LatentSettings", "read_rgb", "image_latents"]


@dataclass(frozen=True)
class LatentSettings:
    """How a z feature store's latents were computed.

    Attributes
    ----------
    model : str
        The model's name (``LatentDiffusionModel.name``).
    resolution : int
        Side the images are resized to before VAE encoding.
    latent_sample : {"mean", "sample"}
    seed : int
        Seed of the draws (``latent_sample = "sample"``), per 73k id.
    """

    model: str
    resolution: int
    latent_sample: str
    seed: int

    @classmethod
    def of_store(cls, attrs: Mapping[str, Any], where: str = "z feature store") -> LatentSettings:
        """The settings in a z store's attributes.

        Raises
        ------
        DataFormatError
            When the store is not a z store or lacks a setting.
        """
        if attrs.get("feature") != "z":
            raise DataFormatError(f"{where}: attribute 'feature' is {attrs.get('feature')!r}; expected 'z'")
        missing = [k for k in ("model", "resolution", "latent_sample", "seed") if k not in attrs]
        if missing:
            raise DataFormatError(f"{where}: attributes {missing} missing; expected a store written by "
                                  "`brain2image features`")
        return cls(str(attrs["model"]), int(attrs["resolution"]), str(attrs["latent_sample"]), int(attrs["seed"]))


def read_rgb(path: Path) -> np.ndarray:
    """An image file as a uint8 array of shape (H, W, 3)."""
    from PIL import Image

    if not path.is_file():
        raise MissingFileError(f"{path} listed in index.csv not found; rerun `brain2image reconstruct`")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def image_latents(model: LatentDiffusionModel, images: Mapping[int, Sequence[Path]], settings: LatentSettings,
                  *, batch_size: int = 16, progress: bool = False, desc: str = "z of images") -> np.ndarray:
    """The z of every sample of every image (:meth:`~brain2image.ldm.loading.LatentDiffusionModel.encode_images`).

    Parameters
    ----------
    model : LatentDiffusionModel
        The model named by ``settings`` (checked).
    images : mapping 73k id -> sequence of Path
        The files of each id (its samples); the same count per id.
    settings : LatentSettings
        From the z store (:meth:`LatentSettings.of_store`); a draw of id ``i`` is seeded with
        :func:`~brain2image.ldm.targets.image_seed` ``(seed, i)``, as for the stimulus ``i``.
    batch_size : int
        Images per VAE call.
    progress : bool
    desc : str
        Label of the progress bar.

    Returns
    -------
    array of shape (n_ids, n_samples, *z_shape), float32, ids in the mapping's order
    """
    import torch

    from ..ldm.targets import image_seed

    if model.name != settings.model:
        raise DataFormatError(f"the z feature store was computed with model {settings.model!r}, this run loads "
                              f"{model.name!r}; expected the same model")
    counts = {len(paths) for paths in images.values()}
    if len(counts) > 1:
        raise DataFormatError(f"images have varying sample counts {sorted(counts)}; expected the same per id")
    files = [(int(i), Path(p)) for i, paths in images.items() for p in paths]
    out = []
    for start in tqdm(range(0, len(files), batch_size), desc=desc, unit="batch", disable=not progress):
        batch = files[start:start + batch_size]
        generator = None
        if settings.latent_sample == "sample":
            generator = [torch.Generator().manual_seed(image_seed(settings.seed, i)) for i, _ in batch]
        pixels = np.stack([read_rgb(path) for _, path in batch])
        z = model.encode_images(pixels, resolution=settings.resolution, sample=settings.latent_sample,
                                generator=generator)
        out.append(z.numpy())
    shape = model.z_shape(settings.resolution)
    latents = np.concatenate(out) if out else np.zeros((0, *shape), dtype=np.float32)
    return latents.reshape(len(images), counts.pop() if counts else 0, *latents.shape[1:])
