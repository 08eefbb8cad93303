"""z and c features of the images a subject saw (no diffusion sampling here).

- **z**: the VAE latent (posterior mean, or a seeded draw) of the image resized to the z
  resolution with LANCZOS, pixels in [-1, 1], times ``vae.config.scaling_factor``.
- **c**: the text encoder's last hidden state of each COCO caption of the image, averaged
  over the image's captions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import FeatureConfig, config_to_json
from ..errors import InvalidArgumentError
from ..formats.feature_store import FeatureStore, feature_store_path
from ..formats.partitions import shard_attrs, shard_ids, shard_path
from ..sources import StimulusSource
from .loading import LatentDiffusionModel

__all__ = ["FEATURES", "CAPTION_REDUCTIONS", "extract_features", "feature_store_path",
           "image_seed"]

logger = logging.getLogger(__name__)

#: Feature names.
FEATURES = ("z", "c")
#: How the embeddings of an image's captions are combined into c: ``mean`` over the captions (the
#: paper) or the ``first`` caption in COCO annotation-id order.
CAPTION_REDUCTIONS = ("mean", "first")


def image_seed(seed: int, image_id: int) -> int:
    """A 32-bit seed derived from (``seed``, ``image_id``)."""
    return int(np.random.SeedSequence([int(seed), int(image_id)]).generate_state(1)[0])


def _z_batches(model: LatentDiffusionModel, stimuli: StimulusSource, ids, config: FeatureConfig, resolution: int):
    for batch_ids, images in stimuli.batches(ids, config.batch_size):
        generator = None
        if config.latent_sample == "sample":
            generator = [torch.Generator().manual_seed(image_seed(config.seed, i)) for i in batch_ids]
        z = model.encode_images(images, resolution=resolution, sample=config.latent_sample, generator=generator)
        yield batch_ids, z.numpy()


def _reduce_captions(hidden: torch.Tensor, owner: torch.Tensor, n_images: int, reduction: str) -> torch.Tensor:
    """Combine the caption embeddings (n_captions, seq, width) of each image: mean or first."""
    if reduction == "first":  # owner is sorted: each image's first caption is where its run starts
        return hidden[torch.searchsorted(owner, torch.arange(n_images))]
    summed = torch.zeros((n_images, *hidden.shape[1:]), dtype=hidden.dtype)
    summed.index_add_(0, owner, hidden)
    counts = torch.bincount(owner, minlength=n_images).to(hidden.dtype)
    return summed / counts[:, None, None]


def _c_batches(model: LatentDiffusionModel, ids: np.ndarray, captions: list[list[str]], config: FeatureConfig):
    for start in range(0, len(ids), config.batch_size):
        batch_ids = ids[start:start + config.batch_size]
        batch_caps = captions[start:start + config.batch_size]
        flat = [text for caps in batch_caps for text in caps]
        owner = torch.repeat_interleave(torch.arange(len(batch_caps)),
                                        torch.tensor([len(caps) for caps in batch_caps]))
        hidden = model.encode_text(flat)
        yield batch_ids, _reduce_captions(hidden, owner, len(batch_caps), config.caption_reduction).numpy()


def extract_features(stimuli: StimulusSource, ids: Sequence[int] | np.ndarray, model: LatentDiffusionModel,
                     feature: str, out_path: str | os.PathLike, config: FeatureConfig | None = None,
                     progress: bool = True, shard: tuple[int, int] | None = None) -> Path:
    """Compute one feature of every image and write it to a (resumable) feature store.

    Parameters
    ----------
    stimuli : StimulusSource
        The run's images (z) and captions (c) (:func:`brain2image.sources.stimuli_of`).
    ids : array of shape (n_images,)
        Image ids (sorted and de-duplicated; NSD: 0-based 73k ids).
    model : LatentDiffusionModel
    feature : {"z", "c"}
    out_path : path-like
        Final store path ``<features_dir>/<dataset>_<model>_<feature>.h5``.
    config : FeatureConfig, optional
    progress : bool
        Show a tqdm bar.
    shard : (i, n), optional
        Compute only the contiguous part i (1-based) of n of the ids, into
        ``<name>.shard-i-of-n.h5`` (attributes ``shard``, ``shard_total_ids``,
        ``shard_ids_sha256``); join shards with :func:`merge_stores`.

    The store records the study (:meth:`StimulusSource.identity <brain2image.sources.StimulusSource.identity>`:
    ``nsd_root`` and ``stimuli_identity`` for NSD) beside the feature settings.

    Returns
    -------
    Path of the finished store. Rows: z of shape (latent_channels, r / f, r / f) with r the z
    resolution and f the VAE factor; c of shape (text_seq_len, text_width).
    """
    config = FeatureConfig() if config is None else config
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    if config.caption_reduction not in CAPTION_REDUCTIONS:
        raise InvalidArgumentError(f"caption_reduction {config.caption_reduction!r}: expected one of "
                                   f"{list(CAPTION_REDUCTIONS)}")
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    path, extra = Path(out_path), stimuli.identity()
    if shard is not None:
        extra.update(shard_attrs(ids, shard))
        ids = shard_ids(ids, shard)
        path = shard_path(path, shard)
    if feature == "z":
        resolution = int(config.z_resolution or model.z_resolution)
        shape: tuple[int, ...] = model.z_shape(resolution)
    else:
        resolution = 0
        shape = model.c_shape
    attrs = {"feature": feature, "model": model.name, "resolution": resolution, "seed": int(config.seed),
             "config": config_to_json(config), "scaling_factor": model.scaling_factor,
             "latent_sample": config.latent_sample, "caption_reduction": config.caption_reduction, **extra}
    # The inputs are checked before the store is created, so a bad stimulus file or captions file
    # leaves no partial store behind.
    captions: dict[int, list[str]] = {}
    if not path.exists() and feature == "z":
        stimuli.check(ids)
    elif not path.exists() and len(ids):
        captions = dict(zip(ids.tolist(), stimuli.captions(ids)))
    store = FeatureStore.create(path, ids, shape, attrs)
    if store.is_complete:
        logger.info("%s already complete", path)
        return path
    todo = store.missing_ids()
    logger.info("%s: %d of %d images to compute", path, len(todo), len(ids))
    bar = tqdm(total=len(todo), desc=f"{feature} features", unit="img", disable=not progress)
    with torch.inference_mode():
        if feature == "z":
            for batch_ids, z in _z_batches(model, stimuli, todo, config, resolution):
                store.write(batch_ids, z)
                bar.update(len(batch_ids))
        else:
            for batch_ids, c in _c_batches(model, todo, [captions[i] for i in todo.tolist()], config):
                store.write(batch_ids, c)
                bar.update(len(batch_ids))
    bar.close()
    return store.finalize()
