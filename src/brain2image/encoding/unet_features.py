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
from ..formats.feature_store import FeatureStore

__all__ = ["ZcConfig", "n_run_steps", "step_indices", "denoise_with_hooks", "extract_zc_stores",
           "zc_feature_name", "unet_feature_name"]

logger = logging.getLogger(__name__)


def n_run_steps(strength: float, num_inference_steps: int) -> int:
    """Denoising steps run at ``strength`` (diffusers img2img's rule).

    That is ``min(int(num_inference_steps * strength), num_inference_steps)``.
    """
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


class _ActivationRecorder:
    """Forward hooks that keep U-Net outputs at chosen denoising steps, average-pooled.

    Parameters
    ----------
    indices : sequence of int
        Step index of each fraction within the run.
    fractions : sequence of float
        The fractions the captured activations are filed under.
    guided : bool
        Classifier-free guidance doubles the batch as [unconditional, conditional]; keep the second half.
    pool_size : int
    """

    def __init__(self, indices: Sequence[int], fractions: Sequence[float], *, guided: bool, pool_size: int) -> None:
        self.wanted: dict[int, list[float]] = {}
        for fraction, index in zip(fractions, indices):
            self.wanted.setdefault(index, []).append(float(fraction))
        self.guided, self.pool_size = guided, pool_size
        self.step = 0
        self.captured: dict[tuple[str, float], torch.Tensor] = {}

    def hook(self, layer: str):
        """A forward hook for the U-Net submodule ``layer``."""
        def record(module, args, output):
            if self.step not in self.wanted:
                return
            out = output[0] if isinstance(output, tuple) else output
            if self.guided:
                out = out[out.shape[0] // 2:]  # diffusers orders the batch [unconditional, conditional]
            pooled = torch.nn.functional.adaptive_avg_pool2d(out.float(), self.pool_size).flatten(1).cpu()
            for fraction in self.wanted[self.step]:
                self.captured[(layer, fraction)] = pooled
        return record

    def on_step_end(self, pipe, step, timestep, callback_kwargs):
        """The pipeline's step callback: the next U-Net call belongs to step ``step + 1``."""
        self.step = step + 1
        return callback_kwargs


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
    recorder = _ActivationRecorder(step_indices(step_fractions, n_steps), step_fractions,
                                   guided=guidance_scale > 1.0, pool_size=pool_size)
    handles = [unet.get_submodule(layer).register_forward_hook(recorder.hook(layer)) for layer in layers]
    try:
        pipe = _pipeline(unet, vae, scheduler)
        dtype = unet.dtype
        device = unet.device
        zc = pipe(image=z.to(device, dtype), prompt_embeds=c.to(device, dtype),
                  negative_prompt_embeds=uncond.to(device, dtype).expand(n, -1, -1), strength=float(strength),
                  num_inference_steps=int(num_inference_steps), guidance_scale=float(guidance_scale), eta=0.0,
                  generator=list(generators), output_type="latent",
                  callback_on_step_end=recorder.on_step_end).images
    finally:
        for handle in handles:
            handle.remove()
    missing = [(layer, f) for layer in layers for f in step_fractions if (layer, float(f)) not in recorder.captured]
    if missing:
        raise RuntimeError(f"hooks captured nothing for {missing}")
    return zc.float().cpu(), recorder.captured


class _ZcRun:
    """The z_c runs of one extraction: store creation and filling, batch by batch."""

    def __init__(self, unet, vae, scheduler, uncond: torch.Tensor, zs: FeatureStore, cs: FeatureStore,
                 config: ZcConfig) -> None:
        self.unet, self.vae, self.scheduler, self.uncond = unet, vae, scheduler, uncond
        self.zs, self.cs, self.config = zs, cs, config

    def denoise(self, ids: np.ndarray, generators: list[torch.Generator], strength: float, layers: list[str]):
        """:func:`denoise_with_hooks` on the stored z and c of ``ids``."""
        return denoise_with_hooks(self.unet, self.vae, self.scheduler, torch.from_numpy(self.zs.read(ids)),
                                  torch.from_numpy(self.cs.read(ids)), self.uncond, generators, strength,
                                  num_inference_steps=self.config.num_inference_steps,
                                  guidance_scale=self.config.guidance_scale, layers=layers,
                                  step_fractions=self.config.unet_steps, pool_size=self.config.pool_size)

    def create_stores(self, out_dir: Path, ids: np.ndarray, strength: float, n_steps: int, layers: list[str],
                      base: dict) -> tuple[dict[str, tuple[FeatureStore, tuple | None]], dict[str, torch.Tensor]]:
        """The z_c store of ``strength`` and one store per (layer, step fraction).

        A probe run on one image gives the U-Net feature sizes. Returns the stores (name -> (store,
        activation key, or None for z_c)) and the random projections of layers wider than ``max_dim``.
        """
        config = self.config
        name = zc_feature_name(strength)
        stores: dict[str, tuple[FeatureStore, tuple | None]] = {name: (FeatureStore.create(
            out_dir / f"{name}.h5", ids, self.zs.feature_shape,
            {**base, "feature": name, "strength": float(strength)}), None)}
        projections: dict[str, torch.Tensor] = {}
        if not layers:
            return stores, projections
        _, acts = self.denoise(ids[:1], [torch.Generator().manual_seed(0)], strength, layers)
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
                 "step_fraction": float(fraction), "step_index": int(step),
                 "projected_from": int(value.shape[1]) if layer in projections else 0}), (layer, fraction))
        return stores, projections

    def fill(self, stores: dict[str, tuple[FeatureStore, tuple | None]], projections: dict[str, torch.Tensor],
             strength: float, layers: list[str], progress: bool) -> None:
        """Compute the rows missing from any store, in batches, and write every unfinished store."""
        from tqdm import tqdm

        missing = np.unique(np.concatenate([s.missing_ids() if not s.is_complete else np.zeros(0, np.int64)
                                            for s, _ in stores.values()]))
        size = self.config.batch_size
        batches = [missing[i:i + size] for i in range(0, len(missing), size)]
        for batch in tqdm(batches, desc=f"z_c strength {strength:g}", disable=not progress):
            generators = [torch.Generator().manual_seed(int(self.config.seed) + int(i)) for i in batch]
            zc, acts = self.denoise(batch, generators, strength, layers)
            for store, key in stores.values():
                if store.is_complete:
                    continue
                value = zc if key is None else acts[key]
                if key is not None and key[0] in projections:
                    value = value @ projections[key[0]]
                store.write(batch, value.numpy())


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
    config = config or ZcConfig()
    zs, cs = FeatureStore.open(z_store), FeatureStore.open(c_store)
    ids = zs.ids if ids is None else np.unique(np.asarray(ids, dtype=np.int64))
    base = {"model": model_name, "resolution": zs.attrs.get("resolution", -1), "seed": int(config.seed),
            "num_inference_steps": int(config.num_inference_steps), "guidance_scale": float(config.guidance_scale),
            "z_store": str(z_store), "c_store": str(c_store), "pool_size": int(config.pool_size),
            "noise": "torch.Generator(seed + 73k id), DDIM eta 0"}
    run = _ZcRun(unet, vae, scheduler, uncond, zs, cs, config)
    written: dict[str, Path] = {}
    for strength in config.zc_strengths:
        n_steps = n_run_steps(strength, config.num_inference_steps)
        layers = list(config.unet_layers) if n_steps > 0 else []
        if n_steps == 0 and config.unet_layers:
            logger.warning("strength %g runs no step: no U-Net features at this strength", strength)
        stores, projections = run.create_stores(Path(out_dir), ids, strength, n_steps, layers,
                                                {**base, "n_steps_run": n_steps})
        run.fill(stores, projections, strength, layers, progress)
        written.update({name: store.finalize() for name, (store, _) in stores.items()})
    logger.info("z_c / U-Net stores: %s (config %s)", list(written), asdict(config))
    return written
