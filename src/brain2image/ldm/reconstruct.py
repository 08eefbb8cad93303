"""Reconstructions: every requested method's images of every test image, as PNGs or arrays.

The methods are the registered :class:`~brain2image.methods.ReconstructionMethod` s (the
built-ins are in :mod:`brain2image.ldm.methods`); this module knows none by name. It shapes the
features each method needs, builds the method's pipeline once, cuts the (image, sample) draws into
batches of ``batch_size`` (a method without diffusion: batches of images, each image given to
every sample) and writes what the method draws.

Every sample has its own ``torch.Generator`` seeded from (seed, test id, sample), so the same
seed gives the same pixels however images are batched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import ReconstructionConfig, config_to_dict
from ..errors import InvalidArgumentError
from ..formats.recon_index import ReconFolder
from ..interrupts import say_skipped
from ..methods import MethodBatch, ReconstructionMethod, builtin_methods, parse_methods
from ..targets import get_target
from .loading import LatentDiffusionModel

__all__ = ["sample_seed", "generate_reconstructions", "reconstruct"]

logger = logging.getLogger(__name__)



def sample_seed(seed: int, test_id: int, sample: int) -> int:
    """A 32-bit seed derived deterministically from (``seed``, ``test_id``, ``sample``)."""
    return int(np.random.SeedSequence([int(seed), int(test_id), int(sample)]).generate_state(1)[0])


def _draws(method: ReconstructionMethod, n: int, samples: list[int]) -> list[tuple[int, tuple[int, ...]]]:
    """A method's draws: (row, the samples its image is), one per sample, or per row without diffusion."""
    if not method.uses_diffusion:
        return [(row, tuple(samples)) for row in range(n)]
    return [(row, (s,)) for row in range(n) for s in samples]


def _iter_method(model: LatentDiffusionModel, method: ReconstructionMethod, ids: np.ndarray,
                 features: dict[str, torch.Tensor], config: ReconstructionConfig, samples: Sequence[int],
                 progress: bool) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(row, sample, image uint8 (H, W, 3))`` for every row of ``ids`` and sample."""
    samples = list(samples)
    bar = tqdm(total=len(ids) * len(samples), desc=method.name, unit="img", disable=not progress)
    unconditional = model.empty_prompt_embedding() if method.uses_diffusion else None
    pipeline = method.pipeline(model)
    draws = _draws(method, len(ids), samples)
    for start in range(0, len(draws), config.batch_size):
        batch = draws[start:start + config.batch_size]
        rows = torch.tensor([row for row, _ in batch])
        generators = None
        if method.uses_diffusion:
            generators = [torch.Generator().manual_seed(sample_seed(config.seed, ids[row], s)) for row, (s,) in batch]
        images = method.generate(MethodBatch(model, pipeline, config, features, rows, unconditional), generators)
        for (row, image_samples), image in zip(batch, images, strict=True):
            for s in image_samples:
                yield row, s, image
            bar.update(len(image_samples))
    bar.close()


def _prepare_inputs(model: LatentDiffusionModel, ids: np.ndarray, method: ReconstructionMethod,
                    given: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The features ``method`` draws from, by target, shaped for the model.

    ``given`` holds arrays by input name (:attr:`ReconstructionMethod.inputs`: a target's name for
    its decoded features, ``<target>_true`` for its true ones).
    """
    passive = [t for t in method.needs if not get_target(t).conditions_generation]
    if passive:
        raise InvalidArgumentError(f"method {method.name!r} needs targets {passive}, which do not condition "
                                   "generation (their Target has conditions_generation = False); expected targets "
                                   "the model takes as input")
    absent = [name for name in method.inputs if given.get(name) is None]
    if absent:
        raise ValueError(f"method {method.name!r} needs {', '.join(absent)}")
    prefix = "true " if method.true_features else ""
    return {t: get_target(t).as_model_input(model, given[name], len(ids), prefix + t)
            for t, name in zip(method.needs, method.inputs, strict=True)}


def _inputs(features: Mapping[str, Any] | None, **arrays: Any) -> dict[str, Any]:
    """Arrays by input name: ``features`` plus the built-ins' keyword arguments that are given."""
    return {**(features or {}), **{name: value for name, value in arrays.items() if value is not None}}


def generate_reconstructions(model: LatentDiffusionModel, ids: Sequence[int] | np.ndarray, z=None, c=None,
                             methods: Sequence[str | ReconstructionMethod] | None = None,
                             config: ReconstructionConfig | None = None, progress: bool = True,
                             z_true=None, c_true=None, features: Mapping[str, Any] | None = None
                             ) -> dict[str, np.ndarray]:
    """Reconstructions as arrays (no files), e.g. for benchmarks.

    Parameters
    ----------
    model : LatentDiffusionModel
    ids : array of shape (n_images,)
        73k ids (they seed the samples).
    z : array of shape (n_images, latent_channels, h, w) or (n_images, n_z), optional
        Predicted (scaled) latents.
    c : array of shape (n_images, text_seq_len, text_width) or flattened, optional
        Predicted text embeddings.
    methods : sequence of str or ReconstructionMethod, optional
        Registered method names (:func:`brain2image.methods.method_names`) or methods; default:
        the built-ins that draw from decoded features.
    config : ReconstructionConfig, optional
    progress : bool
    z_true, c_true : arrays like z and c, optional
        True features, for a method with ``true_features`` (``oracle``).
    features : mapping of str to array, optional
        Other inputs by name (a plug-in target's decoded features under its name, its true ones
        under ``<target>_true``); ``z``, ``c``, ``z_true``, ``c_true`` are these for the built-ins.

    Returns
    -------
    dict method name → uint8 array of shape (n_images, n_samples, H, W, 3); H is the z resolution
    for ``z_only`` and the native resolution otherwise.
    """
    config = ReconstructionConfig() if config is None else config
    ids = np.asarray(ids, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    given = _inputs(features, z=z, c=c, z_true=z_true, c_true=c_true)
    for method in parse_methods(builtin_methods(decoded_only=True) if methods is None else methods):
        shaped = _prepare_inputs(model, ids, method, given)
        result: np.ndarray | None = None
        for row, s, image in _iter_method(model, method, ids, shaped, config, range(config.n_samples), progress):
            if result is None:
                result = np.zeros((len(ids), config.n_samples, *image.shape), dtype=np.uint8)
            result[row, s] = image
        if result is not None:
            out[method.name] = result
    return out


def reconstruct(model: LatentDiffusionModel, ids: Sequence[int] | np.ndarray, z=None, c=None,
                methods: Sequence[str | ReconstructionMethod] | None = None, config: ReconstructionConfig | None = None,
                out_dir: str | os.PathLike = "recon", progress: bool = True, z_true=None, c_true=None,
                shard: tuple[int, int] | None = None, features: Mapping[str, Any] | None = None) -> Path:
    """Write reconstructions as PNGs plus ``index.csv`` and ``config.json``; resumable.

    Images whose samples are all on disk already are skipped.

    Parameters
    ----------
    model, ids, z, c, z_true, c_true, progress, features
        As in :func:`generate_reconstructions`.
    methods : sequence of str or ReconstructionMethod, optional
        Default ``config.methods``.
    config : ReconstructionConfig, optional
    out_dir : path-like
        The ``recon`` folder: ``<out_dir>/<method>/<73kid>_<sample>.png``.
    shard : (i, n), optional
        ``ids`` are part ``i`` of ``n``: the index and record go to ``index.shard-i-of-n.csv`` and
        ``config.shard-i-of-n.json`` (joined by :meth:`ReconFolder.merge_shards`).

    Returns
    -------
    Path of ``<out_dir>/index.csv`` (a shard's index; columns test_id, method, sample, seed, path;
    path relative to ``out_dir``).
    """
    config = ReconstructionConfig() if config is None else config
    methods = parse_methods(config.methods if methods is None else methods)
    folder = ReconFolder(out_dir)
    ids = np.asarray(ids, dtype=np.int64)
    given = _inputs(features, z=z, c=c, z_true=z_true, c_true=c_true)
    record = {"model": model.name, "config": config_to_dict(config), "methods": [m.name for m in methods]}
    folder.check_config(record)
    folder.write_config(record, shard)
    samples = range(config.n_samples)
    for method in methods:
        todo = folder.missing(method.name, ids, config.n_samples)
        if not todo.all():
            say_skipped(progress, f"reconstruct {method.name}: {len(ids) - int(todo.sum())} of {len(ids)} images "
                        "on disk")
        if not todo.any():
            continue
        logger.info("%s: %d of %d images to generate", method.name, int(todo.sum()), len(ids))
        rows = {name: np.asarray(given[name])[todo] for name in method.inputs if given.get(name) is not None}
        shaped = _prepare_inputs(model, ids[todo], method, rows)
        for row, s, image in _iter_method(model, method, ids[todo], shaped, config, samples, progress):
            folder.write_image(method.name, ids[todo][row], s, image)
    seeds = {(int(i), s): sample_seed(config.seed, i, s) for i in ids for s in samples}
    return folder.write_index([m.name for m in methods], ids.tolist(), config.n_samples, seeds, shard)
