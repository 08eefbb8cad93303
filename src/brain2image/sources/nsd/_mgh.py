"""Read FreeSurfer ``.mgh`` / ``.mgz`` files with the file closed afterwards.

``nibabel.load`` on MGH leaves its file handle open (a ResourceWarning); here the file is opened
with nibabel's ``ImageOpener`` (which handles ``.mgz`` gzip) inside a ``with`` block.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

__all__ = ["is_mgh", "mgh_header", "mgh_read"]


def is_mgh(path: str | Path) -> bool:
    """True for ``.mgh`` and ``.mgz`` files."""
    return Path(path).suffix in (".mgh", ".mgz")


def mgh_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, np.ndarray]:
    """Shape, on-disk dtype and affine of an MGH file, without reading its data."""
    with ImageOpener(str(path), "rb") as handle:
        header = nib.freesurfer.mghformat.MGHHeader.from_fileobj(handle)
        return (tuple(int(n) for n in header.get_data_shape()), np.dtype(header.get_data_dtype()),
                np.asarray(header.get_affine(), dtype=np.float64))


def mgh_read(path: str | Path, slicer: tuple | None = None) -> np.ndarray:
    """Data of an MGH file, or only ``dataobj[slicer]``."""
    with ImageOpener(str(path), "rb") as handle:
        image = nib.MGHImage.from_stream(handle.fobj)
        return np.asarray(image.dataobj[slicer] if slicer is not None else image.dataobj)
