"""Reconstructions from decoded z and c with diffusers' own pipelines (Takagi & Nishimoto).

Methods
-------
- ``z_only``: the VAE decoding of z (an image at the z resolution);
- ``c_only``: text-to-image from c (``StableDiffusionPipeline``, no init latent);
- ``z_plus_c``: decode z, resize to the native size (LANCZOS), VAE-encode it as the init
  latent, then ``StableDiffusionImg2ImgPipeline`` with ``strength`` (0.8 of 50 DDIM steps
  → 40 denoising steps), guidance 5, conditioning c, unconditional = the empty prompt;
- ``oracle``: ``z_plus_c`` from the true z and c (the same code path).

Every sample has its own ``torch.Generator`` seeded from (seed, test id, sample), so the same
seed gives the same pixels however images are batched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import DECODED_METHODS, ReconstructionConfig, config_to_dict
from ..errors import DataFormatError
from ..formats.recon_index import ReconFolder
from ..methods import Method, parse_methods
from .images import resize_images
from .loading import LatentDiffusionModel

__all__ = ["sample_seed", "generate_reconstructions", "reconstruct"]

logger = logging.getLogger(__name__)



def sample_seed(seed: int, test_id: int, sample: int) -> int:
    """A 32-bit seed derived deterministically from (``seed``, ``test_id``, ``sample``)."""
    return int(np.random.SeedSequence([int(seed), int(test_id), int(sample)]).generate_state(1)[0])


def _as_z(model: LatentDiffusionModel, z, n: int, name: str) -> torch.Tensor:
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if z.shape[0] != n:
        raise DataFormatError(f"{name} has {z.shape[0]} rows, expected {n} (one per id)")
    if z.ndim == 2:
        side = int(round((z.shape[1] / model.latent_channels) ** 0.5))
        if model.latent_channels * side * side != z.shape[1]:
            raise DataFormatError(f"{name} rows have {z.shape[1]} values; expected latent_channels "
                                  f"({model.latent_channels}) x side x side")
        z = z.reshape(n, model.latent_channels, side, side)
    if z.ndim != 4 or z.shape[1] != model.latent_channels:
        raise DataFormatError(f"{name} has shape {tuple(z.shape)}; expected (n, {model.latent_channels}, h, w)")
    return z


def _as_c(model: LatentDiffusionModel, c, n: int, name: str) -> torch.Tensor:
    c = torch.as_tensor(np.asarray(c, dtype=np.float32))
    if c.shape[0] != n:
        raise DataFormatError(f"{name} has {c.shape[0]} rows, expected {n} (one per id)")
    c = c.reshape(n, *model.c_shape) if c.ndim == 2 and c.shape[1] == int(np.prod(model.c_shape)) else c
    if tuple(c.shape[1:]) != model.c_shape:
        raise DataFormatError(f"{name} has shape {tuple(c.shape)}; expected (n, {model.c_shape[0]}, "
                              f"{model.c_shape[1]}) for {model.name}")
    return c


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def _init_latents(model: LatentDiffusionModel, z: torch.Tensor) -> torch.Tensor:
    """Decode z → resize to the native size (LANCZOS) → VAE encode (posterior mean, scaled)."""
    decoded = resize_images(model.decode_latents(z), model.native_resolution)
    return model.encode_images(decoded, sample="mean")


def _iter_method(model: LatentDiffusionModel, method: Method, ids: np.ndarray, z, c,
                 config: ReconstructionConfig, samples: Sequence[int], progress: bool
                 ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(row, sample, image uint8 (H, W, 3))`` for every row of ``ids`` and sample."""
    n = len(ids)
    samples = list(samples)
    bar = tqdm(total=n * len(samples), desc=method.value, unit="img", disable=not progress)
    if method == Method.Z_ONLY:
        for start in range(0, n, config.batch_size):
            decoded = model.decode_latents(z[start:start + config.batch_size])
            for offset, image in enumerate(decoded):
                for s in samples:
                    yield start + offset, s, image
                bar.update(len(samples))
        bar.close()
        return
    empty = model.empty_prompt_embedding()
    if method == Method.C_ONLY:
        pipe = model.text2img_pipeline(progress=False)
    else:
        pipe = model.img2img_pipeline(progress=False)
    items = [(row, s) for row in range(n) for s in samples]
    for start in range(0, len(items), config.batch_size):
        batch = items[start:start + config.batch_size]
        rows = torch.tensor([row for row, _ in batch])
        generators = [torch.Generator().manual_seed(sample_seed(config.seed, ids[row], s)) for row, s in batch]
        kwargs = dict(prompt_embeds=c[rows], negative_prompt_embeds=empty.expand(len(batch), -1, -1),
                      num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                      eta=config.eta, generator=generators, output_type="np")
        if method == Method.C_ONLY:
            kwargs.update(height=model.native_resolution, width=model.native_resolution)
        else:
            unique_rows, inverse = torch.unique(rows, return_inverse=True)
            if model.latent_channels == 4:
                # The pipeline takes a 4-channel tensor as the init latents themselves.
                init = _init_latents(model, z[unique_rows])[inverse]
            else:
                # Other latent widths: hand over the resized decoded image in [0, 1]; the pipeline encodes it.
                decoded = resize_images(model.decode_latents(z[unique_rows]), model.native_resolution)
                init = (torch.from_numpy(decoded).permute(0, 3, 1, 2).float() / 255.0)[inverse]
            kwargs.update(image=init, strength=config.strength)
        with torch.inference_mode():
            images = _to_uint8(pipe(**kwargs).images)
        for (row, s), image in zip(batch, images):
            yield row, s, image
        bar.update(len(batch))
    bar.close()


def _prepare_inputs(model: LatentDiffusionModel, ids: np.ndarray, method: Method, z, c, z_true, c_true
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The (z, c) tensors ``method`` draws from; the oracle takes the true features."""
    n = len(ids)
    given = {"z": z, "c": c, "z_true": z_true, "c_true": c_true}
    absent = [name for name in method.inputs if given[name] is None]
    if absent:
        raise ValueError(f"method {method.value!r} needs {', '.join(absent)}")
    if method == Method.ORACLE:
        return _as_z(model, z_true, n, "true z"), _as_c(model, c_true, n, "true c")
    return (_as_z(model, z, n, "z") if "z" in method.inputs else None,
            _as_c(model, c, n, "c") if "c" in method.inputs else None)


def generate_reconstructions(model: LatentDiffusionModel, ids: Sequence[int] | np.ndarray, z=None, c=None,
                             methods: Sequence[str] = DECODED_METHODS,
                             config: ReconstructionConfig | None = None, progress: bool = True,
                             z_true=None, c_true=None) -> dict[str, np.ndarray]:
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
    methods : sequence of str
        Some of ``z_only``, ``c_only``, ``z_plus_c``, ``oracle``.
    config : ReconstructionConfig, optional
    progress : bool
    z_true, c_true : arrays like z and c, optional
        True features, for ``oracle``.

    Returns
    -------
    dict method → uint8 array of shape (n_images, n_samples, H, W, 3); H is the z resolution
    for ``z_only`` and the native resolution otherwise.
    """
    config = ReconstructionConfig() if config is None else config
    ids = np.asarray(ids, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for method in parse_methods(methods):
        zm, cm = _prepare_inputs(model, ids, method, z, c, z_true, c_true)
        result: np.ndarray | None = None
        for row, s, image in _iter_method(model, method, ids, zm, cm, config, range(config.n_samples), progress):
            if result is None:
                result = np.zeros((len(ids), config.n_samples, *image.shape), dtype=np.uint8)
            result[row, s] = image
        if result is not None:
            out[method.value] = result
    return out


def reconstruct(model: LatentDiffusionModel, ids: Sequence[int] | np.ndarray, z=None, c=None,
                methods: Sequence[str] | None = None, config: ReconstructionConfig | None = None,
                out_dir: str | os.PathLike = "recon", progress: bool = True, z_true=None, c_true=None,
                shard: tuple[int, int] | None = None) -> Path:
    """Write reconstructions as PNGs plus ``index.csv`` and ``config.json``; resumable.

    Images whose samples are all on disk already are skipped.

    Parameters
    ----------
    model, ids, z, c, z_true, c_true, progress
        As in :func:`generate_reconstructions`.
    methods : sequence of str, optional
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
    record = {"model": model.name, "config": config_to_dict(config), "methods": [m.value for m in methods]}
    folder.check_config(record)
    folder.write_config(record, shard)
    samples = range(config.n_samples)
    for method in methods:
        todo = folder.missing(method.value, ids, config.n_samples)
        if not todo.any():
            continue
        logger.info("%s: %d of %d images to generate", method.value, int(todo.sum()), len(ids))
        sub = lambda a: None if a is None else np.asarray(a)[todo]  # noqa: E731
        zm, cm = _prepare_inputs(model, ids[todo], method, sub(z), sub(c), sub(z_true), sub(c_true))
        for row, s, image in _iter_method(model, method, ids[todo], zm, cm, config, samples, progress):
            folder.write_image(method.value, ids[todo][row], s, image)
    seeds = {(int(i), s): sample_seed(config.seed, i, s) for i in ids for s in samples}
    return folder.write_index([m.value for m in methods], ids.tolist(), config.n_samples, seeds, shard)
