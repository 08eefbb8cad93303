"""A third decoder target, ``thumb``: a 16 x 16 grey thumbnail of each image (docs/extending.md).

Decoded from early visual cortex by default, scored by retrieval like z and c; no reconstruction
method draws from it (``conditions_generation = False``), and it needs nothing of the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from brain2image.targets import Target

__all__ = ["ThumbnailTarget", "thumbnails"]

SIDE = 16


def thumbnails(images: np.ndarray) -> np.ndarray:
    """Grey thumbnails of uint8 RGB images (n, H, W, 3): (n, SIDE, SIDE) float32 in [0, 1] (box filter)."""
    small = [Image.fromarray(image).convert("L").resize((SIDE, SIDE), Image.Resampling.BOX) for image in images]
    return np.stack([np.asarray(image, dtype=np.float32) / 255 for image in small])


class ThumbnailTarget(Target):
    """``thumb``: what a run decodes when ``[decoder] targets`` names it (``thumb = "early"``)."""

    name = "thumb"
    default_roi = "early"
    conditions_generation = False
    description = "16 x 16 grey thumbnail"

    def shape(self, model: Any, config: Any) -> tuple[int, ...]:
        return (SIDE, SIDE)

    def batches(self, model: Any, stimuli: Any, ids: np.ndarray, config: Any,
                state: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch_ids, images in stimuli.batches(ids, config.batch_size):
            yield batch_ids, thumbnails(images)
