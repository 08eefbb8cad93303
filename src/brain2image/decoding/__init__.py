"""Ridge decoders from ROI voxels to latent-diffusion features (z, c).

- The estimator is the ridge core's :class:`~brain2image.ridge.ImageRidgeCV` (targets of any
  shape per image, per-target alpha by K-fold CV grouped by image).
- :func:`fit_decoder_from_files` (:mod:`.fit`) — prepared file + feature store in, decoder file
  out, read back with :meth:`~brain2image.formats.decoder_file.DecoderFile.read` (file names:
  :meth:`~brain2image.formats.decoder_file.DecoderFile.filename`); :func:`estimator_from_file`
  rebuilds the fitted estimator from a file read with its weights.
"""

from ..formats.decoder_file import DecoderFile
from .fit import estimator_from_file, fit_decoder_from_files

__all__ = ["DecoderFile", "fit_decoder_from_files", "estimator_from_file"]
