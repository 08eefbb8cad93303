"""Cross-subject transfer: a new subject decoded through other subjects' decoders (docs/transfer.md).

A ridge map from the new subject's ROI voxels to each reference subject's ROI voxels, fitted on
images both saw, feeds the reference subject's full-data decoder; the references' predictions are
combined (:mod:`.decoders`). The splits that keep the comparison honest (held-out test images that
reach no fit, the new subject's first k sessions) are :mod:`.split`; the settings, a run config's
``[transfer]`` table, are :mod:`.settings`.
"""

from .decoders import TransferResult, transfer_decoders
from .settings import DECODER_METHODS, TransferSettings, check_transfer_settings
from .split import ReferenceSubject, TransferSplit, make_split

__all__ = ["DECODER_METHODS", "ReferenceSubject", "TransferResult", "TransferSettings", "TransferSplit",
           "check_transfer_settings", "make_split", "transfer_decoders"]
