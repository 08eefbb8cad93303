"""Encoding analysis: voxelwise encoding models from LDM components, variance partitioning, maps."""

from .analysis import EncodingConfig, EncodingResults, encode_arrays, run_encoding_analysis
from .noise_ceiling import nc_fraction, noise_ceiling, signed_r2
from .partition import partition_variance
from .unet_features import ZcConfig, denoise_with_hooks, extract_zc_stores

__all__ = ["EncodingConfig", "EncodingResults", "encode_arrays", "run_encoding_analysis", "noise_ceiling",
           "signed_r2", "nc_fraction", "partition_variance", "ZcConfig", "denoise_with_hooks", "extract_zc_stores"]
