"""brain2image: reconstruct seen images from fMRI with a latent diffusion model.

Implements Takagi & Nishimoto (CVPR 2023): ridge decoders from early visual cortex to the
VAE latent ``z`` and from ventral visual cortex to the text embedding ``c``, img2img with a
Stable Diffusion model from decoded ``z`` guided by decoded ``c``, the field's evaluation,
and voxelwise encoding models of each latent diffusion component.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
