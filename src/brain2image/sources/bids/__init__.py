"""A BIDS dataset with fMRIPrep derivatives as a data source (kind ``bids``): :class:`BIDSSource`."""

from .source import BIDSSource

__all__ = ["BIDSSource"]
