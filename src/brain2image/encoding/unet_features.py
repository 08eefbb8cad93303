"""z_c and U-Net activation features: z noised to a strength, then denoised with c.

For each strength ``s``, the image's z is noised to ``s`` of a ``num_inference_steps`` DDIM
schedule (eta 0) — so ``int(num_inference_steps * s)`` denoising steps run — and denoised with
classifier-free guidance (conditioning c, unconditional = the empty-prompt embedding) to the end.
The final latent is the **z_c** feature. During the same run, forward hooks on named U-Net
submodules (``down_blocks.2``, ``mid_block``, ``up_blocks.1``…) capture activations at chosen
steps; only the conditional half of the guidance batch is kept, average-pooled over space to a
``pool_size × pool_size`` grid (1: one value per channel), and optionally reduced by a fixed
seeded Gaussian random projection to at most ``max_dim`` values. One run per strength yields
all of its features.

The run uses diffusers' ``StableDiffusionImg2ImgPipeline`` (latents given as ``image``,
``output_type="latent"``), with ``callback_on_step_end`` counting steps for the hooks. Each
image's noise comes from its own ``torch.Generator`` seeded with ``seed + 73k id``, so features do
not depend on batch composition. Strength 0 runs no step and returns z itself.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..config import ZcConfig
from ..errors import DataFormatError

__all__ = ["ZcConfig", "n_run_steps", "step_indices", "denoise_with_hooks", "extract_zc_stores",
           "zc_feature_name", "unet_feature_name"]

logger = logging.getLogger(__name__)


def n_run_steps(strength: float, num_inference_steps: int) -> int:
    """Denoising steps run at ``strength``: ``min(int(num_inference_steps * strength), num_inference_steps)``
    (diffusers img2img's rule)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return min(int(num_inference_steps * strength), num_inference_steps)


def step_indices(fractions: Sequence[float], n_steps: int) -> list[int]:
    """Step index within a run of ``n_steps`` steps of each fraction (0 first, 1 last)."""
    if n_steps <= 0:
        raise ValueError("no denoising step runs at this strength; U-Net features need strength >= 1/steps")
    return [int(round(float(f) * (n_steps - 1))) for f in fractions]


def zc_feature_name(strength: float) -> str:
    """``zc_<strength>`` (e.g. ``zc_0.5``)."""
    return f"zc_{float(strength):g}"


def unet_feature_name(layer: str, strength: float, fraction: float) -> str:
    """``unet_<layer>_s<strength>_t<fraction>`` (e.g. ``unet_mid_block_s0.5_t1``)."""
    return f"unet_{layer}_s{float(strength):g}_t{float(fraction):g}"


def _projection(dim: int, max_dim: int, seed: int, layer: str) -> torch.Tensor:
    rng = np.random.default_rng([seed, zlib.crc32(layer.encode())])
    return torch.from_numpy((rng.standard_normal((dim, max_dim)) / np.sqrt(max_dim)).astype(np.float32))


def _pipeline(unet, vae, scheduler):
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                          scheduler=DDIMScheduler.from_config(scheduler.config),
                                          safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.inference_mode()
def denoise_with_hooks(unet, vae, scheduler, z: torch.Tensor, c: torch.Tensor, uncond: torch.Tensor,
                       generators: Sequence[torch.Generator], strength: float, *, num_inference_steps: int = 50,
                       guidance_scale: float = 5.0, layers: Sequence[str] = (), step_fractions: Sequence[float] = (),
                       pool_size: int = 1) -> tuple[torch.Tensor, dict[tuple[str, float], torch.Tensor]]:
    """One img2img run from z at ``strength`` with conditioning c, capturing U-Net activations.

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel
    vae : diffusers.AutoencoderKL
        Only its config is used (latents in, latents out).
    scheduler : diffusers scheduler
        Its config builds a fresh ``DDIMScheduler``.
    z : tensor of shape (n_images, latent_channels, h, w)
        Scaled latents.
    c : tensor of shape (n_images, n_tokens, width)
    uncond : tensor of shape (1, n_tokens, width)
        Empty-prompt embedding.
    generators : sequence of torch.Generator, length n_images
    strength : float
    num_inference_steps, guidance_scale : see :class:`ZcConfig`
    layers : sequence of str
        U-Net submodule names to hook.
    step_fractions : sequence of float
        Where in the run to capture (see :func:`step_indices`).
    pool_size : int

    Returns
    -------
    zc : tensor of shape (n_images, latent_channels, h, w), float32 on CPU
    activations : dict (layer, fraction) -> tensor of shape (n_images, channels * pool_size**2)
    """
    n = len(z)
    if len(c) != n or len(generators) != n:
        raise ValueError(f"z, c and generators differ in length: {n}, {len(c)}, {len(generators)}")
    if z.shape[1] != 4:
        # diffusers img2img recognises latents passed as `image` by their 4 channels.
        raise DataFormatError(f"z has {z.shape[1]} channels; the img2img pipeline takes 4-channel latents")
    n_steps = n_run_steps(strength, num_inference_steps)
    if n_steps == 0:
        if layers:
            raise ValueError(f"strength {strength} runs no denoising step; no U-Net features to capture")
        return z.float().cpu().clone(), {}
    wanted = {}
    for fraction, index in zip(step_fractions, step_indices(step_fractions, n_steps)):
        wanted.setdefault(index, []).append(float(fraction))
    guided = guidance_scale > 1.0
    state = {"step": 0}
    captured: dict[tuple[str, float], torch.Tensor] = {}

    def make_hook(layer: str):
        def hook(module, args, output):
            if state["step"] not in wanted:
                return
            out = output[0] if isinstance(output, tuple) else output
            if guided:
                out = out[out.shape[0] // 2:]  # diffusers orders the batch [unconditional, conditional]
            pooled = torch.nn.functional.adaptive_avg_pool2d(out.float(), pool_size).flatten(1).cpu()
            for fraction in wanted[state["step"]]:
                captured[(layer, fraction)] = pooled
        return hook

    def on_step_end(pipe, step, timestep, callback_kwargs):
        state["step"] = step + 1
        return callback_kwargs

    handles = [unet.get_submodule(layer).register_forward_hook(make_hook(layer)) for layer in layers]
    try:
        pipe = _pipeline(unet, vae, scheduler)
        dtype = unet.dtype
        device = unet.device
        zc = pipe(image=z.to(device, dtype), prompt_embeds=c.to(device, dtype),
                  negative_prompt_embeds=uncond.to(device, dtype).expand(n, -1, -1), strength=float(strength),
                  num_inference_steps=int(num_inference_steps), guidance_scale=float(guidance_scale), eta=0.0,
                  generator=list(generators), output_type="latent", callback_on_step_end=on_step_end).images
    finally:
        for handle in handles:
            handle.remove()
    missing = [(layer, f) for layer in layers for f in step_fractions if (layer, float(f)) not in captured]
    if missing:
        raise RuntimeError(f"hooks captured nothing for {missing}")
    return zc.float().cpu(), captured


def extract_zc_stores(unet, vae, scheduler, uncond: torch.Tensor, z_store: str | os.PathLike,
                      c_store: str | os.PathLike, out_dir: str | os.PathLike, config: ZcConfig | None = None,
                      *, model_name: str = "unknown", ids: np.ndarray | None = None,
                      progress: bool = False) -> dict[str, Path]:
    """Write one feature store per z_c strength and per (U-Net layer, strength, step); resumable.

    Parameters
    ----------
    unet, vae, scheduler : diffusers objects (see :func:`denoise_with_hooks`)
    uncond : tensor of shape (1, n_tokens, width)
        Empty-prompt embedding.
    z_store, c_store : path-like
        Finished z and c feature stores (same ids).
    out_dir : path-like
        Stores go to ``<out_dir>/<name>.h5`` (names from :func:`zc_feature_name`,
        :func:`unet_feature_name`).
    config : ZcConfig, optional
    model_name : str
        Provenance attribute ``model``.
    ids : array of shape (n_ids,), optional
        Restrict to these ids (default: every id of the z store).
    progress : bool

    Returns
    -------
    dict name -> path of each finished store
    """
    from tqdm import tqdm

    from ..formats.feature_store import FeatureStore

    config = config or ZcConfig()
    zs, cs = FeatureStore.open(z_store), FeatureStore.open(c_store)
    ids = zs.ids if ids is None else np.unique(np.asarray(ids, dtype=np.int64))
    z_attrs = zs.attrs
    out_dir = Path(out_dir)
    base = {"model": model_name, "resolution": z_attrs.get("resolution", -1), "seed": int(config.seed),
            "num_inference_steps": int(config.num_inference_steps), "guidance_scale": float(config.guidance_scale),
            "z_store": str(z_store), "c_store": str(c_store), "pool_size": int(config.pool_size),
            "noise": "torch.Generator(seed + 73k id), DDIM eta 0"}
    written: dict[str, Path] = {}
    for strength in config.zc_strengths:
        n_steps = n_run_steps(strength, config.num_inference_steps)
        layers = list(config.unet_layers) if n_steps > 0 else []
        if n_steps == 0 and config.unet_layers:
            logger.warning("strength %g runs no step: no U-Net features at this strength", strength)
        # A probe run on one image gives the U-Net feature sizes.
        stores: dict[str, tuple[FeatureStore, tuple | None]] = {}
        name = zc_feature_name(strength)
        stores[name] = (FeatureStore.create(out_dir / f"{name}.h5", ids, zs.feature_shape,
                                            {**base, "feature": name, "strength": float(strength),
                                             "n_steps_run": n_steps}), None)
        projections: dict[str, torch.Tensor] = {}
        if layers:
            probe_id = ids[:1]
            _, acts = denoise_with_hooks(unet, vae, scheduler, torch.from_numpy(zs.read(probe_id)),
                                         torch.from_numpy(cs.read(probe_id)), uncond,
                                         [torch.Generator().manual_seed(0)], strength,
                                         num_inference_steps=config.num_inference_steps,
                                         guidance_scale=config.guidance_scale, layers=layers,
                                         step_fractions=config.unet_steps, pool_size=config.pool_size)
            steps = step_indices(config.unet_steps, n_steps)
            for (layer, fraction), value in acts.items():
                dim = value.shape[1]
                if config.max_dim is not None and dim > config.max_dim:
                    projections[layer] = _projection(dim, config.max_dim, config.seed, layer)
                    dim = config.max_dim
                uname = unet_feature_name(layer, strength, fraction)
                step = steps[list(map(float, config.unet_steps)).index(fraction)]
                stores[uname] = (FeatureStore.create(
                    out_dir / f"{uname}.h5", ids, (dim,),
                    {**base, "feature": uname, "strength": float(strength), "layer": layer,
                     "step_fraction": float(fraction), "step_index": int(step), "n_steps_run": n_steps,
                     "projected_from": int(value.shape[1]) if layer in projections else 0}), (layer, fraction))
        missing = np.unique(np.concatenate([s.missing_ids() if not s.is_complete else np.zeros(0, np.int64)
                                            for s, _ in stores.values()]))
        batches = [missing[i:i + config.batch_size] for i in range(0, len(missing), config.batch_size)]
        for batch in tqdm(batches, desc=f"z_c strength {strength:g}", disable=not progress):
            generators = [torch.Generator().manual_seed(int(config.seed) + int(i)) for i in batch]
            zc, acts = denoise_with_hooks(unet, vae, scheduler, torch.from_numpy(zs.read(batch)),
                                          torch.from_numpy(cs.read(batch)), uncond, generators, strength,
                                          num_inference_steps=config.num_inference_steps,
                                          guidance_scale=config.guidance_scale, layers=layers,
                                          step_fractions=config.unet_steps, pool_size=config.pool_size)
            for sname, (store, key) in stores.items():
                if store.is_complete:
                    continue
                if key is None:
                    value = zc
                else:
                    value = acts[key]
                    if key[0] in projections:
                        value = value @ projections[key[0]]
                store.write(batch, value.numpy())
        for sname, (store, _) in stores.items():
            written[sname] = store.finalize()
    logger.info("z_c / U-Net stores: %s (config %s)", list(written), asdict(config))
    return written
