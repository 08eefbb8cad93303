"""Feature stores of the images a subject saw: one per decoder target (no diffusion sampling here).

What each target's features are is the target's own (:mod:`brain2image.targets`; the built-ins z
and c in :mod:`brain2image.ldm.targets`); this module writes them to a resumable, shardable store.
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
from ..interrupts import say_skipped
from ..sources import StimulusSource
from ..targets import get_target
from .loading import LatentDiffusionModel

__all__ = ["CAPTION_REDUCTIONS", "extract_features", "feature_store_path"]

logger = logging.getLogger(__name__)

#: How the embeddings of an image's captions are combined into c: ``mean`` over the captions (the
#: paper) or the ``first`` caption in COCO annotation-id order.
CAPTION_REDUCTIONS = ("mean", "first")


def extract_features(stimuli: StimulusSource, ids: Sequence[int] | np.ndarray, model: LatentDiffusionModel,
                     feature: str, out_path: str | os.PathLike, config: FeatureConfig | None = None,
                     progress: bool = True, shard: tuple[int, int] | None = None) -> Path:
    """Compute one feature of every image and write it to a (resumable) feature store.

    Parameters
    ----------
    stimuli : StimulusSource
        The run's images and captions (:func:`brain2image.sources.stimuli_of`).
    ids : array of shape (n_images,)
        Image ids (sorted and de-duplicated; NSD: 0-based 73k ids).
    model : LatentDiffusionModel
    feature : str
        A registered target (:func:`brain2image.targets.get_target`): ``"z"``, ``"c"``, ...
    out_path : path-like
        Final store path ``<features_dir>/<dataset>_<model>_<feature>.h5``.
    config : FeatureConfig, optional
    progress : bool
        Show a tqdm bar.
    shard : (i, n), optional
        Compute only the contiguous part i (1-based) of n of the ids, cut at multiples of
        ``config.batch_size`` (:func:`~brain2image.formats.partitions.shard_ids`: each shard's
        batches are those of one pass over all ids; a part may be empty), into
        ``<name>.shard-i-of-n.h5`` (attributes ``shard``, ``shard_total_ids``,
        ``shard_ids_sha256``); join shards with :func:`merge_stores`.

    The store records the study (:meth:`StimulusSource.identity <brain2image.sources.StimulusSource.identity>`:
    ``nsd_root`` and ``stimuli_identity`` for NSD) beside the feature settings.

    Returns
    -------
    Path of the finished store, one row per image of the target's shape (z: (latent_channels,
    r / f, r / f) with r the z resolution and f the VAE factor; c: (text_seq_len, text_width)).
    """
    config = FeatureConfig() if config is None else config
    target = get_target(feature)
    if config.caption_reduction not in CAPTION_REDUCTIONS:
        raise InvalidArgumentError(f"caption_reduction {config.caption_reduction!r}: expected one of "
                                   f"{list(CAPTION_REDUCTIONS)}")
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    path, extra = Path(out_path), stimuli.identity()
    if shard is not None:
        extra.update(shard_attrs(ids, shard))
        ids = shard_ids(ids, shard, config.batch_size)  # at the batch grid: batched as one pass batches them
        path = shard_path(path, shard)
    shape = target.shape(model, config)
    attrs = {"feature": feature, "model": model.name, "resolution": target.resolution(model, config),
             "seed": int(config.seed),
             "config": config_to_json(config), "scaling_factor": model.scaling_factor,
             "latent_sample": config.latent_sample, "caption_reduction": config.caption_reduction, **extra}
    # The inputs are checked before the store is created, so a bad stimulus file or captions file
    # leaves no partial store behind.
    state = None if path.exists() else target.check_inputs(stimuli, ids)
    store = FeatureStore.create(path, ids, shape, attrs)
    if store.is_complete:
        logger.info("%s already complete", path)
        return path
    todo = store.missing_ids()
    logger.info("%s: %d of %d images to compute", path, len(todo), len(ids))
    if len(todo) < len(ids):
        part = "" if shard is None else f" (shard {shard[0]}/{shard[1]})"
        say_skipped(progress, f"features {feature}{part}: {len(ids) - len(todo)} of {len(ids)} images already done")
    bar = tqdm(total=len(todo), desc=f"{feature} features", unit="img", disable=not progress)
    with torch.inference_mode():
        for batch_ids, values in target.batches(model, stimuli, todo, config, state):
            store.write(batch_ids, values)
            bar.update(len(batch_ids))
    bar.close()
    return store.finalize()
