"""Image helpers of the latent-diffusion stage: resizing and tensor conversion.

The stimuli themselves are read through the run's data source (:mod:`brain2image.sources`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataFormatError

__all__ = [
    "resize_images",
    "images_to_tensor",
    "tensor_to_images",
]

def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB images with PIL's LANCZOS filter.

    Parameters
    ----------
    images : array of shape (n_images, H, W, 3), uint8
    size : int or (height, width)

    Returns
    -------
    array of shape (n_images, height, width, 3), uint8 (the input itself if sizes match)
    """
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"images have shape {images.shape} dtype {images.dtype}; "
                              "expected (n_images, H, W, 3) uint8")
    if images.shape[1:3] == (height, width):
        return images
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
    return out


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (n_images, H, W, 3) → float tensor (n_images, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """Float tensor (n_images, 3, H, W) in [-1, 1] → uint8 images (n_images, H, W, 3), rounded."""
    scaled = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
