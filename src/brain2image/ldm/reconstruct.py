"""Reconstructions from decoded z and c with diffusers' own pipelines (Takagi & Nishimoto).

Methods:

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

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._io import atomic_path, atomic_write_text
from ..config import ReconstructionConfig, config_to_dict
from ..errors import DataFormatError, MissingFileError
from .images import resize_images
from .loading import LatentDiffusionModel

__all__ = ["METHODS", "sample_seed", "generate_reconstructions", "reconstruct", "load_predictions",
           "recon_path"]

logger = logging.getLogger(__name__)

#: Reconstruction methods.
METHODS = ("z_only", "c_only", "z_plus_c", "oracle")
#: Config fields that change pixels: a resumed run must use the same values.
_PIXEL_FIELDS = ("num_inference_steps", "strength", "guidance_scale", "eta", "seed")


def sample_seed(seed: int, test_id: int, sample: int) -> int:
    """A 32-bit seed derived deterministically from (``seed``, ``test_id``, ``sample``)."""
    return int(np.random.SeedSequence([int(seed), int(test_id), int(sample)]).generate_state(1)[0])


def recon_path(out_dir: str | os.PathLike, method: str, test_id: int, sample: int) -> Path:
    """``<out_dir>/<method>/<73kid>_<sample>.png``."""
    return Path(out_dir) / method / f"{int(test_id)}_{int(sample)}.png"


def load_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Ids and features from a decoder file (``test/ids``, ``test/pred``) or a feature store
    (``ids``, ``features``).

    Returns
    -------
    ids : array of shape (n_images,)
    values : array of shape (n_images, *feature_shape), float32
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found (expected a decoder file or a feature store)")
    with h5py.File(path, "r") as f:
        if "test/pred" in f and "test/ids" in f:
            return np.asarray(f["test/ids"][()], np.int64), np.asarray(f["test/pred"][()], np.float32)
        if "features" in f and "ids" in f:
            return np.asarray(f["ids"][()], np.int64), np.asarray(f["features"][()], np.float32)
    raise DataFormatError(f"{path}: expected datasets 'test/ids' + 'test/pred' (decoder file) or "
                          "'ids' + 'features' (feature store)")


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


def _iter_method(model: LatentDiffusionModel, method: str, ids: np.ndarray, z, c,
                 config: ReconstructionConfig, samples: Sequence[int], progress: bool
                 ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(row, sample, image uint8 (H, W, 3))`` for every row of ``ids`` and sample."""
    n = len(ids)
    samples = list(samples)
    bar = tqdm(total=n * len(samples), desc=method, unit="img", disable=not progress)
    if method == "z_only":
        for start in range(0, n, config.batch_size):
            decoded = model.decode_latents(z[start:start + config.batch_size])
            for offset, image in enumerate(decoded):
                for s in samples:
                    yield start + offset, s, image
                bar.update(len(samples))
        bar.close()
        return
    empty = model.empty_prompt_embedding()
    if method == "c_only":
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
        if method == "c_only":
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


def _prepare_inputs(model, ids, method, z, c, z_true, c_true):
    n = len(ids)
    if method == "oracle":
        if z_true is None or c_true is None:
            raise ValueError("method 'oracle' needs the true z and c (z_true=, c_true=)")
        return _as_z(model, z_true, n, "true z"), _as_c(model, c_true, n, "true c")
    need_z, need_c = method in ("z_only", "z_plus_c"), method in ("c_only", "z_plus_c")
    if need_z and z is None:
        raise ValueError(f"method {method!r} needs z")
    if need_c and c is None:
        raise ValueError(f"method {method!r} needs c")
    return (_as_z(model, z, n, "z") if need_z else None), (_as_c(model, c, n, "c") if need_c else None)


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; expected some of {METHODS}")
    return tuple(methods)


def generate_reconstructions(model: LatentDiffusionModel, ids: Sequence[int] | np.ndarray, z=None, c=None,
                             methods: Sequence[str] = ("z_only", "c_only", "z_plus_c"),
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
    out = {}
    for method in _check_methods(methods):
        zm, cm = _prepare_inputs(model, ids, method, z, c, z_true, c_true)
        result = None
        for row, s, image in _iter_method(model, method, ids, zm, cm, config, range(config.n_samples), progress):
            if result is None:
                result = np.zeros((len(ids), config.n_samples, *image.shape), dtype=np.uint8)
            result[row, s] = image
        out[method] = result
    return out


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _check_previous_config(out_dir: Path, record: dict) -> None:
    path = out_dir / "config.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON; delete it") from error
    for key in _PIXEL_FIELDS:
        if old.get("config", {}).get(key) != record["config"][key]:
            raise DataFormatError(f"{path}: earlier run used {key}={old.get('config', {}).get(key)!r}, this run "
                                  f"{record['config'][key]!r}; use another --out folder to keep results apart")
    if old.get("model") != record["model"]:
        raise DataFormatError(f"{path}: earlier run used model {old.get('model')!r}, this run {record['model']!r}; "
                              "use another --out folder")


def reconstruct(model: LatentDiffusionModel, ids: Sequence[int] | np.ndarray, z=None, c=None,
                methods: Sequence[str] | None = None, config: ReconstructionConfig | None = None,
                out_dir: str | os.PathLike = "recon", progress: bool = True, z_true=None, c_true=None) -> Path:
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

    Returns
    -------
    Path of ``<out_dir>/index.csv`` (columns test_id, method, sample, seed, path; path relative
    to ``out_dir``).
    """
    import pandas as pd

    config = ReconstructionConfig() if config is None else config
    methods = _check_methods(config.methods if methods is None else methods)
    out_dir = Path(out_dir)
    ids = np.asarray(ids, dtype=np.int64)
    record = {"model": model.name, "config": config_to_dict(config), "methods": list(methods)}
    _check_previous_config(out_dir, record)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.json", json.dumps(record, indent=2, sort_keys=True))
    samples = range(config.n_samples)
    for method in methods:
        todo = np.array([not all(recon_path(out_dir, method, i, s).exists() for s in samples) for i in ids],
                        dtype=bool)
        if not todo.any():
            continue
        logger.info("%s: %d of %d images to generate", method, int(todo.sum()), len(ids))
        sub = lambda a: None if a is None else np.asarray(a)[todo]  # noqa: E731
        zm, cm = _prepare_inputs(model, ids[todo], method, sub(z), sub(c), sub(z_true), sub(c_true))
        for row, s, image in _iter_method(model, method, ids[todo], zm, cm, config, samples, progress):
            _save_png(recon_path(out_dir, method, ids[todo][row], s), image)
    rows = [(int(i), method, s, sample_seed(config.seed, i, s), str(recon_path(".", method, i, s)))
            for method in methods for i in ids for s in samples]
    index = pd.DataFrame(rows, columns=["test_id", "method", "sample", "seed", "path"])
    index_path = out_dir / "index.csv"
    if index_path.is_file():  # keep the rows of methods an earlier run wrote
        previous = pd.read_csv(index_path)
        index = pd.concat([previous[~previous["method"].isin(methods)], index], ignore_index=True)
    with atomic_path(index_path) as tmp:
        index.to_csv(tmp, index=False)
    return index_path
