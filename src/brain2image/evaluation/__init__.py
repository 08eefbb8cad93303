"""The evaluation: metric table, identification and distances in feature spaces; decoder retrieval.

:mod:`.evaluate` computes the metric table (PixCorr, SSIM, identification, distances) in registered
feature spaces; :mod:`.retrieval` the top-1 retrieval between decoded and true features.
"""

from .retrieval import retrieval_accuracy

__all__ = ["retrieval_accuracy"]
