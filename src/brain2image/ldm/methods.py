"""The built-in reconstruction methods (Takagi & Nishimoto), with diffusers' own pipelines.

- ``z_only``: the VAE decoding of the decoded z (an image at the z resolution);
- ``c_only``: text-to-image from the decoded c (``StableDiffusionPipeline``, no init latent);
- ``z_plus_c``: decode z, resize to the native size (LANCZOS), VAE-encode it as the init latent,
  then ``StableDiffusionImg2ImgPipeline`` with ``strength`` (0.8 of 50 DDIM steps → 40 denoising
  steps), guidance 5, conditioning c, unconditional = the empty prompt (the paper's method);
- ``oracle``: ``z_plus_c`` from the true z and c (an upper bound).

Each is a :class:`~brain2image.methods.ReconstructionMethod`, registered through the
``brain2image.methods`` entry points (``pyproject.toml``). Torch is imported when they draw, so
listing the registered methods stays light. :func:`guided_kwargs`, :func:`init_images` and
:func:`draw` are the pieces a plug-in method built on the same pipelines can reuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..methods import MethodBatch, ReconstructionMethod

if TYPE_CHECKING:
    import torch

    from .loading import LatentDiffusionModel

__all__ = ["ZOnly", "COnly", "ZPlusC", "Oracle", "guided_kwargs", "init_images", "draw"]


def guided_kwargs(batch: MethodBatch, generators: list[torch.Generator] | None) -> dict[str, Any]:
    """Keyword arguments of a diffusers call guided by c (classifier-free, against the empty prompt).

    Parameters
    ----------
    batch : MethodBatch
        Its ``c`` features are the prompt embeddings; ``unconditional`` the negative ones.
    generators : list of torch.Generator
        One per image to draw.
    """
    if batch.unconditional is None:
        raise ValueError("a guided diffusers call needs batch.unconditional (a method with uses_diffusion)")
    config = batch.config
    return dict(prompt_embeds=batch.feature("c"), negative_prompt_embeds=batch.unconditional.expand(len(batch), -1, -1),
                num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                eta=config.eta, generator=generators, output_type="np")


def init_images(batch: MethodBatch) -> torch.Tensor:
    """img2img's init of each image to draw: z decoded, resized to the native size (LANCZOS), re-encoded.

    Each distinct image of the batch is decoded once. A 4-channel model gets the init latents
    themselves (VAE posterior mean, scaled); other latent widths the resized decoded image in
    [0, 1], which the pipeline encodes.

    Returns
    -------
    tensor of shape (n_draws, 4, h, w), or (n_draws, 3, H, W) for other latent widths
    """
    import torch

    from .images import resize_images

    model, z = batch.model, batch.features["z"]
    unique_rows, inverse = torch.unique(batch.rows, return_inverse=True)
    decoded = resize_images(model.decode_latents(z[unique_rows]), model.native_resolution)
    if model.latent_channels == 4:
        # The pipeline takes a 4-channel tensor as the init latents themselves.
        return model.encode_images(decoded, sample="mean")[inverse]
    return (torch.from_numpy(decoded).permute(0, 3, 1, 2).float() / 255.0)[inverse]


def draw(pipeline: Any, kwargs: dict[str, Any]) -> np.ndarray:
    """Call a diffusers pipeline (``output_type="np"``) without autograd; its images as uint8 (n, H, W, 3)."""
    import torch

    with torch.inference_mode():
        images = pipeline(**kwargs).images
        return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


class ZOnly(ReconstructionMethod):
    """``z_only``: the VAE decoding of the decoded z (no noise: one image per test image)."""

    name = "z_only"
    label = "z only"
    needs = ("z",)
    uses_diffusion = False

    def generate(self, batch: MethodBatch, generators: list[torch.Generator] | None) -> np.ndarray:
        """Decode the batch's z."""
        return batch.model.decode_latents(batch.feature("z"))


class COnly(ReconstructionMethod):
    """``c_only``: text-to-image from the decoded c."""

    name = "c_only"
    label = "c only"
    needs = ("c",)

    def pipeline(self, model: LatentDiffusionModel) -> Any:
        """The text-to-image pipeline: diffusers' ``StableDiffusionPipeline`` (DDIM)."""
        return model.text2img_pipeline(progress=False)

    def generate(self, batch: MethodBatch, generators: list[torch.Generator] | None) -> np.ndarray:
        """Text-to-image at the native resolution, conditioned on c."""
        side = batch.model.native_resolution
        return draw(batch.pipeline, {**guided_kwargs(batch, generators), "height": side, "width": side})


class ZPlusC(ReconstructionMethod):
    """``z_plus_c``: img2img from the decoded z, guided by the decoded c (the paper's method).

    Attributes
    ----------
    strength : float or None
        img2img noise strength; None: ``[reconstruction] strength``. A subclass setting it is
        ``z_plus_c`` at another strength.
    """

    name = "z_plus_c"
    label = "z + c"
    needs = ("z", "c")
    strength: float | None = None

    def pipeline(self, model: LatentDiffusionModel) -> Any:
        """The img2img pipeline: diffusers' ``StableDiffusionImg2ImgPipeline`` (DDIM)."""
        return model.img2img_pipeline(progress=False)

    def generate(self, batch: MethodBatch, generators: list[torch.Generator] | None) -> np.ndarray:
        """img2img from :func:`init_images` with ``strength``, conditioned on c."""
        kwargs = guided_kwargs(batch, generators)
        strength = batch.config.strength if self.strength is None else self.strength
        return draw(batch.pipeline, {**kwargs, "image": init_images(batch), "strength": strength})


class Oracle(ZPlusC):
    """``oracle``: ``z_plus_c`` from the true z and c (the ceiling of the decoded methods)."""

    name = "oracle"
    label = "oracle (true z + c)"
    true_features = True
