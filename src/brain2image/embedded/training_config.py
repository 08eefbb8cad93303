"""The hyperparameters of the bundled model's training recipe (:mod:`.bundled_training`).

Apart from the recipe (which imports torch and diffusers), so that ``brain2image train-bundled``
builds its options from these fields without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config_checks import _field

__all__ = ["BundledTrainingConfig"]


@dataclass
class BundledTrainingConfig:
    """Hyperparameters of the bundled-model recipe (saved next to the checkpoints)."""

    image_size: int = 64
    n_train_scenes: int = _field(8000, help="procedural training scenes")
    scene_seed: int = 1234
    seed: int = _field(0, help="seed of the training")
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_minutes: float = _field(14.0, help="VAE training budget in minutes")
    vae_kl_weight: float = 1e-6
    unet_channels: tuple[int, ...] = (48, 96, 192)
    #: Which U-Net levels (finest first) cross-attend to the text; the bottleneck always does.
    #: Attending at every level, with channels (48, 96, 160) to keep the size, measured no better.
    unet_cross_attention_levels: tuple[bool, ...] = (True, True, False)
    unet_attention_heads: int = 4
    unet_pooled_text: bool = True
    unet_batch: int = 64
    unet_lr: float = 4e-4
    unet_minutes: float = _field(90.0, help="U-Net training budget in minutes (a larger value continues "
                                            "a finished U-Net)")
    unet_empty_caption_p: float = 0.1
    unet_mean_caption_p: float = 0.4
    offset_noise: float = 0.05
    ema_decay: float = 0.999
    checkpoint_minutes: float = 5.0
    threads: int = _field(2, help="torch CPU threads")
