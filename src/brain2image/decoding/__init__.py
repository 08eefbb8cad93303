"""Ridge decoders from ROI voxels to latent-diffusion features (z, c).

- :class:`RidgeDecoder` (:mod:`.estimator`) — the estimator: targets of any shape per image,
  per-target alpha by K-fold CV grouped by image, on the ridge core :mod:`brain2image.ridge`.
- :func:`fit_decoder_from_files` (:mod:`.fit`) — prepared file + feature store in, decoder file
  out; :func:`load_decoder` and :func:`decoder_filename` are the decoder file's
  :meth:`~brain2image.formats.decoder_file.DecoderFile.read` and
  :meth:`~brain2image.formats.decoder_file.DecoderFile.filename`.
"""

from ..formats.decoder_file import DecoderFile
from .estimator import RidgeDecoder
from .fit import decoder_filename, fit_decoder_from_files, load_decoder

__all__ = ["RidgeDecoder", "DecoderFile", "fit_decoder_from_files", "load_decoder", "decoder_filename"]
