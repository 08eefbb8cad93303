"""Serialisable configuration objects holding each stage's hyperparameters.

Every stage saves the config it ran with next to its output (as JSON attributes or a
``config.json``), so that a result can always be traced back to its settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "FeatureConfig",
    "DecoderConfig",
    "ReconstructionConfig",
    "EncodingConfig",
    "ZcConfig",
    "BundledTrainingConfig",
    "ENCODING_ALPHAS",
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
]

T = TypeVar("T")


@dataclass
class FeatureConfig:
    """How the z and c features of an image are computed.

    Parameters
    ----------
    z_resolution : int or None
        Side (pixels) the image is resized to before VAE encoding. ``None`` uses the
        model's default: 320 for Stable Diffusion (the paper), 5/8 of the native size
        (40 px) for the bundled 64 px model.
    caption_reduction : str
        How the text embeddings of an image's captions are combined (``"mean"``).
    latent_sample : str
        ``"mean"`` (posterior mean, deterministic) or ``"sample"`` (seeded draw).
    batch_size : int
    seed : int
    """

    z_resolution: int | None = None
    caption_reduction: str = "mean"
    latent_sample: str = "mean"
    batch_size: int = 32
    seed: int = 0


@dataclass
class DecoderConfig:
    """Ridge decoders from ROI voxels to features.

    Parameters
    ----------
    z_roi, c_roi : str
        ROI keys of the prepared file (``"early"`` and ``"ventral"`` in the paper).
    alphas : list of float
        Regularisation grid, after voxel standardisation. The grid spans the reference
        code's 1e-6..1 range scaled by the number of training rows, up to strong shrinkage.
    cv_folds : int
        Folds of the per-target cross-validation that picks alpha.
    target_chunk : int
        Targets solved at a time (bounds peak memory for c's tens of thousands of targets).
    """

    z_roi: str = "early"
    c_roi: str = "ventral"
    alphas: list[float] = field(default_factory=lambda: [float(10.0**k) for k in range(0, 7)])
    cv_folds: int = 5
    target_chunk: int = 8192


@dataclass
class ReconstructionConfig:
    """img2img generation from decoded z and c; defaults are the paper's."""

    num_inference_steps: int = 50
    strength: float = 0.8
    guidance_scale: float = 5.0
    eta: float = 0.0
    n_samples: int = 5
    seed: int = 0
    batch_size: int = 10
    methods: tuple[str, ...] = ("z_only", "c_only", "z_plus_c")


#: Ridge grid of the encoding models (features standardised and scaled by 1/sqrt(n_features)).
ENCODING_ALPHAS: tuple[float, ...] = tuple(float(10.0**k) for k in range(-2, 7))


@dataclass
class EncodingConfig:
    """Hyperparameters of the encoding analysis (saved with every result).

    Parameters
    ----------
    roi : str
        ROI key of the prepared file whose voxels are modelled (``nsdgeneral``).
    summary_rois : list of str
        ROI keys summarised (mean r per ROI) in ``summary.json`` and the bar plot.
    alphas : list of float
        Ridge grid (features standardised and scaled by 1/sqrt(n_features)).
    n_folds : int
        CV folds over unique training images.
    banded_n_iter : int
        Random-search draws of the banded ridge kernel weights.
    partition_pairs : list of [str, str] or None
        Pairs of feature spaces to partition; ``None``: (z, c) when present plus consecutive
        ``zc_<strength>`` levels.
    n_targets_batch : int or None
        Voxels solved at a time (memory bound).
    seed : int
        Seed of the CV splits and the random search.
    maps : bool
        Write NIfTI / PNG maps.
    """

    roi: str = "nsdgeneral"
    summary_rois: list[str] = field(default_factory=lambda: ["early", "ventral"])
    alphas: list[float] = field(default_factory=lambda: list(ENCODING_ALPHAS))
    n_folds: int = 5
    banded_n_iter: int = 20
    partition_pairs: list[list[str]] | None = None
    n_targets_batch: int | None = None
    seed: int = 0
    maps: bool = True


@dataclass
class ZcConfig:
    """How z_c and U-Net features are computed.

    Parameters
    ----------
    strengths : list of float
        Noise strengths in [0, 1]; ``s`` runs ``int(num_inference_steps * s)`` steps.
    num_inference_steps : int
        DDIM schedule length (50 in the paper).
    guidance_scale : float
        Classifier-free guidance scale (5 in the paper).
    unet_layers : list of str
        Names of U-Net submodules (``unet.get_submodule``) whose outputs are captured.
    unet_steps : list of float
        Where in each run activations are taken, as fractions of the run's steps
        (0 = first step, 0.5 = middle, 1 = last).
    pool_size : int
        Side of the spatial average-pooling grid (1: per-channel means).
    max_dim : int or None
        Random-project U-Net features longer than this (seeded, fixed per layer).
    batch_size : int
    seed : int
    """

    strengths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    unet_layers: list[str] = field(default_factory=lambda: ["down_blocks.2", "mid_block", "up_blocks.1"])
    unet_steps: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    pool_size: int = 1
    max_dim: int | None = None
    batch_size: int = 8
    seed: int = 0


@dataclass
class BundledTrainingConfig:
    """Hyperparameters of the bundled-model recipe (saved next to the checkpoints)."""

    image_size: int = 64
    n_train_scenes: int = 8000
    scene_seed: int = 1234
    seed: int = 0
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_minutes: float = 14.0
    vae_kl_weight: float = 1e-6
    unet_channels: tuple[int, ...] = (48, 96, 192)
    #: Which U-Net levels (finest first) cross-attend to the text; the bottleneck always does.
    #: Attending at every level, with channels (48, 96, 160) to keep the size, measured no better.
    unet_cross_attention_levels: tuple[bool, ...] = (True, True, False)
    unet_attention_heads: int = 4
    unet_pooled_text: bool = True
    unet_batch: int = 64
    unet_lr: float = 4e-4
    unet_minutes: float = 90.0
    unet_empty_caption_p: float = 0.1
    unet_mean_caption_p: float = 0.4
    offset_noise: float = 0.05
    ema_decay: float = 0.999
    checkpoint_minutes: float = 5.0
    threads: int = 2


def config_to_dict(config: Any) -> dict:
    """A dataclass config as a plain dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_to_json(config: Any) -> str:
    """A dataclass config as indented JSON."""
    return json.dumps(config_to_dict(config), indent=2, sort_keys=True)


def config_from_dict(cls: type[T], values: dict) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        from .errors import DataFormatError

        raise DataFormatError(f"unknown {cls.__name__} option(s) {unknown}; expected some of {sorted(names)}")
    kwargs = dict(values)
    for f in dataclasses.fields(cls):
        if f.name in kwargs and isinstance(kwargs[f.name], list) and "tuple" in str(f.type):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)
