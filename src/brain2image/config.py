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
