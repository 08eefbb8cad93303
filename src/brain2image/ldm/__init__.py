"""The latent diffusion model: loading, image handling, z/c features and reconstruction."""
