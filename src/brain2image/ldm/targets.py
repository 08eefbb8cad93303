"""The built-in decoder targets of Takagi & Nishimoto: the VAE latent z and the caption embedding c.

- **z**: the VAE latent (posterior mean, or a seeded draw) of the image resized to the z
  resolution with LANCZOS, pixels in [-1, 1], times ``vae.config.scaling_factor``.
- **c**: the text encoder's last hidden state of each caption of the image, averaged over the
  image's captions (or its first caption).

Each is a :class:`~brain2image.targets.Target`, registered through the ``brain2image.targets``
entry points (``pyproject.toml``). Torch is imported when they compute, so listing the registered
targets stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataFormatError
from ..targets import BUILTIN_TARGET_ROIS, Target

if TYPE_CHECKING:
    import torch

    from ..config import FeatureConfig
    from ..sources import StimulusSource
    from .loading import LatentDiffusionModel

__all__ = ["LatentTarget", "CaptionTarget", "image_seed"]


def image_seed(seed: int, image_id: int) -> int:
    """A 32-bit seed derived from (``seed``, ``image_id``)."""
    return int(np.random.SeedSequence([int(seed), int(image_id)]).generate_state(1)[0])


def _rows(values: Any, n: int, what: str) -> torch.Tensor:
    """``values`` as a float32 tensor with ``n`` rows."""
    import torch

    tensor = torch.as_tensor(np.asarray(values, dtype=np.float32))
    if tensor.shape[0] != n:
        raise DataFormatError(f"{what} has {tensor.shape[0]} rows, expected {n} (one per id)")
    return tensor


class LatentTarget(Target):
    """``z``: the VAE latent of each image at the z resolution (``[features] z_resolution``)."""

    name = "z"
    default_roi = BUILTIN_TARGET_ROIS["z"]
    description = "VAE latent"

    def resolution(self, model: LatentDiffusionModel, config: FeatureConfig) -> int:
        """``[features] z_resolution``, else the model's."""
        return int(config.z_resolution or model.z_resolution)

    def shape(self, model: LatentDiffusionModel, config: FeatureConfig) -> tuple[int, ...]:
        """(latent_channels, r / f, r / f) with r the z resolution and f the VAE's factor."""
        return tuple(model.z_shape(self.resolution(model, config)))

    def batches(self, model: LatentDiffusionModel, stimuli: StimulusSource, ids: np.ndarray,
                config: FeatureConfig, state: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encode the images with the VAE (a seeded draw per image with ``latent_sample = "sample"``)."""
        import torch

        resolution = self.resolution(model, config)
        for batch_ids, images in stimuli.batches(ids, config.batch_size):
            generator = None
            if config.latent_sample == "sample":
                generator = [torch.Generator().manual_seed(image_seed(config.seed, i)) for i in batch_ids]
            z = model.encode_images(images, resolution=resolution, sample=config.latent_sample, generator=generator)
            yield batch_ids, z.numpy()

    def as_model_input(self, model: LatentDiffusionModel, values: Any, n: int, what: str) -> torch.Tensor:
        """(n, latent_channels, h, w); flattened rows of a square latent are reshaped."""
        z = _rows(values, n, what)
        if z.ndim == 2:
            side = int(round((z.shape[1] / model.latent_channels) ** 0.5))
            if model.latent_channels * side * side != z.shape[1]:
                raise DataFormatError(f"{what} rows have {z.shape[1]} values; expected latent_channels "
                                      f"({model.latent_channels}) x side x side")
            z = z.reshape(n, model.latent_channels, side, side)
        if z.ndim != 4 or z.shape[1] != model.latent_channels:
            raise DataFormatError(f"{what} has shape {tuple(z.shape)}; expected (n, {model.latent_channels}, h, w)")
        return z


def reduce_captions(hidden: torch.Tensor, owner: torch.Tensor, n_images: int, reduction: str) -> torch.Tensor:
    """Combine the caption embeddings (n_captions, seq, width) of each image: ``mean`` or ``first``."""
    import torch

    if reduction == "first":  # owner is sorted: each image's first caption is where its run starts
        return hidden[torch.searchsorted(owner, torch.arange(n_images))]
    summed = torch.zeros((n_images, *hidden.shape[1:]), dtype=hidden.dtype)
    summed.index_add_(0, owner, hidden)
    counts = torch.bincount(owner, minlength=n_images).to(hidden.dtype)
    return summed / counts[:, None, None]


class CaptionTarget(Target):
    """``c``: the text encoder's embedding of each image's captions (``[features] caption_reduction``)."""

    name = "c"
    default_roi = BUILTIN_TARGET_ROIS["c"]
    description = "caption embedding"
    fit_in_parts = True

    def shape(self, model: LatentDiffusionModel, config: FeatureConfig) -> tuple[int, ...]:
        """(text_seq_len, text_width)."""
        return tuple(model.c_shape)

    def check_inputs(self, stimuli: StimulusSource, ids: np.ndarray) -> dict[int, list[str]]:
        """The captions of ``ids`` (read once, checked for every id)."""
        return dict(zip(ids.tolist(), stimuli.captions(ids))) if len(ids) else {}

    def batches(self, model: LatentDiffusionModel, stimuli: StimulusSource, ids: np.ndarray,
                config: FeatureConfig, state: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encode every caption of a batch of images at once, then reduce per image."""
        import torch

        captions = state if state is not None else self.check_inputs(stimuli, ids)
        for start in range(0, len(ids), config.batch_size):
            batch_ids = ids[start:start + config.batch_size]
            batch_caps = [captions[i] for i in batch_ids.tolist()]
            flat = [text for caps in batch_caps for text in caps]
            owner = torch.repeat_interleave(torch.arange(len(batch_caps)),
                                            torch.tensor([len(caps) for caps in batch_caps]))
            hidden = model.encode_text(flat)
            yield batch_ids, reduce_captions(hidden, owner, len(batch_caps), config.caption_reduction).numpy()

    def as_model_input(self, model: LatentDiffusionModel, values: Any, n: int, what: str) -> torch.Tensor:
        """(n, text_seq_len, text_width); flattened rows are reshaped."""
        c = _rows(values, n, what)
        c = c.reshape(n, *model.c_shape) if c.ndim == 2 and c.shape[1] == int(np.prod(model.c_shape)) else c
        if tuple(c.shape[1:]) != model.c_shape:
            raise DataFormatError(f"{what} has shape {tuple(c.shape)}; expected (n, {model.c_shape[0]}, "
                                  f"{model.c_shape[1]}) for {model.name}")
        return c
