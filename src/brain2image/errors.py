"""Exceptions raised for bad input, each naming the file, the field and what was expected."""

from __future__ import annotations

__all__ = ["Brain2ImageError", "DataFormatError", "InvalidArgumentError", "MissingFileError", "MissingWeightsError",
           "ResourceError", "OutputPathError"]


class Brain2ImageError(Exception):
    """Base class of the errors the CLI reports as one clear line (no traceback)."""


class DataFormatError(Brain2ImageError, ValueError):
    """A file exists but its content is not what the format requires."""


class InvalidArgumentError(Brain2ImageError, ValueError):
    """Arguments that cannot work together (e.g. study sizes that do not fit the design)."""


class MissingFileError(Brain2ImageError, FileNotFoundError):
    """A file the run needs is not on disk."""


class MissingWeightsError(Brain2ImageError, FileNotFoundError):
    """Pretrained weights are not in the local cache and the network is off."""


class ResourceError(Brain2ImageError, RuntimeError):
    """A stage ran out of memory (GPU or host) or of disk space; the message names the option or path at fault."""


class OutputPathError(Brain2ImageError, OSError):
    """An output file or folder cannot be created (a file in the way, no write permission); names the path."""
