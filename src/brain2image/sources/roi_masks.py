"""ROIs of a lab's own study: ``NAME=MASK.nii.gz`` (a NIfTI mask) or ``NAME=reliable:N`` (top-N ncsnr voxels).

A mask is read as a 3D NIfTI (voxels with a value > 0) and put on the grid of the brain data with
nilearn's nearest-neighbour resampling when its shape or affine differ.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import DataFormatError, InvalidArgumentError, MissingFileError

__all__ = ["RoiSpec", "parse_roi_specs", "load_mask_on_grid", "read_mask_image", "EXPECTED_FORM"]

#: How an ROI is written, for one-line errors.
EXPECTED_FORM = "NAME=MASK.nii.gz or NAME=reliable:N"

#: ROI names: they become HDF5 group names of the prepared file.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RELIABLE = re.compile(r"^reliable:(?P<n>[0-9]+)$")


@dataclass(frozen=True)
class RoiSpec:
    """One requested ROI: a mask file, or the ``reliable`` most reliable voxels.

    Attributes
    ----------
    key : str
        The ROI's name in the prepared file.
    mask : Path or None
        A NIfTI mask (values > 0 are in the ROI); None for ``reliable:N``.
    reliable : int or None
        N of ``reliable:N`` (the N voxels of highest ncsnr); None for a mask.
    """

    key: str
    mask: Path | None
    reliable: int | None

    def __str__(self) -> str:
        return f"{self.key}=reliable:{self.reliable}" if self.mask is None else f"{self.key}={self.mask}"


def _parse_one(key: object, value: object, where: str) -> RoiSpec:
    if not isinstance(key, str) or not _NAME.match(key):
        raise InvalidArgumentError(f"{where}: ROI name {key!r} is not a name (letters, digits, '_', '.', '-'); "
                                   f"write each ROI as {EXPECTED_FORM}")
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise InvalidArgumentError(f"{where}: ROI {key!r} = {value!r} is neither a mask path nor reliable:N; "
                                   f"write it as {EXPECTED_FORM}")
    text = str(value).strip()
    if text.startswith("reliable"):
        match = _RELIABLE.match(text)
        if match is None or int(match["n"]) < 1:
            raise InvalidArgumentError(f"{where}: ROI {key!r} = {text!r} is not reliable:N with N a positive "
                                       f"integer; write it as {EXPECTED_FORM} (e.g. {key}=reliable:5000)")
        return RoiSpec(key=key, mask=None, reliable=int(match["n"]))
    return RoiSpec(key=key, mask=Path(text), reliable=None)


def parse_roi_specs(rois: Mapping[str, str], where: str) -> list[RoiSpec]:
    """The ROIs of a config's ``rois`` table (or the CLI's repeated ``--roi NAME=...``), in their order.

    Parameters
    ----------
    rois : mapping of str to str
        ROI name -> NIfTI mask path, or -> ``"reliable:N"`` (N a positive integer).
    where : str
        What holds them, for errors (``"[source] rois"``).

    Returns
    -------
    list of RoiSpec

    Raises
    ------
    InvalidArgumentError
        One line naming ``where``, the key and the expected form, for a bad name or value, or no ROI at all.
    """
    if not isinstance(rois, Mapping) or not rois:
        raise InvalidArgumentError(f"{where}: no ROI given; name at least one as {EXPECTED_FORM}")
    return [_parse_one(key, value, where) for key, value in rois.items()]


def read_mask_image(path: str | os.PathLike, where: str) -> nib.Nifti1Image:
    """A 3D NIfTI mask as an image (a 4D one with a single volume is taken as 3D), values as stored.

    Raises
    ------
    MissingFileError
        The file is missing.
    DataFormatError
        Not a NIfTI image, or not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{where}: ROI mask {path} does not exist; give an existing NIfTI mask "
                               f"({EXPECTED_FORM})")
    try:
        img = nib.load(path)
    except Exception as error:  # nibabel raises many kinds for a file that is not an image
        raise DataFormatError(f"{where}: ROI mask {path} is not a NIfTI image ({type(error).__name__}); "
                              "give a 3D .nii or .nii.gz mask") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataFormatError(f"{where}: ROI mask {path} is a {type(img).__name__}, not a NIfTI image; "
                              "give a 3D .nii or .nii.gz mask")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header)
    elif len(shape) != 3:
        raise DataFormatError(f"{where}: ROI mask {path} has shape {tuple(shape)}, not 3D (X, Y, Z); "
                              "give a 3D mask")
    return img


def _reference_grid(reference_img: nib.spatialimages.SpatialImage) -> tuple[tuple[int, int, int], np.ndarray]:
    x, y, z = (int(n) for n in reference_img.shape[:3])
    return (x, y, z), np.asarray(reference_img.affine, dtype=float)


def load_mask_on_grid(path: str | os.PathLike, reference_img: nib.spatialimages.SpatialImage,
                      where: str) -> np.ndarray:
    """A NIfTI mask on the grid of ``reference_img`` (nearest-neighbour resampling when the grids differ).

    Parameters
    ----------
    path : path-like
        A 3D NIfTI mask: voxels with a value > 0 are in the ROI.
    reference_img : nibabel image, 3D or 4D
        The brain data's grid (only its first three dimensions and its affine are used).
    where : str
        The ROI, for errors (``"[source] rois.early"``).

    Returns
    -------
    array of shape (X, Y, Z), bool
        On the reference grid.

    Raises
    ------
    MissingFileError
        The mask file is missing.
    DataFormatError
        Not a 3D NIfTI, or no voxel left on the reference grid.
    """
    path = Path(path)
    img = read_mask_image(path, where)
    shape, affine = _reference_grid(reference_img)
    data = np.asarray(img.dataobj)
    if not np.issubdtype(data.dtype, np.number) or not np.isfinite(data).all():
        data = np.nan_to_num(data.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    binary = nib.Nifti1Image((data > 0).astype(np.uint8), img.affine)
    if tuple(img.shape[:3]) != shape or not np.allclose(img.affine, affine, atol=1e-4):
        from nilearn.image import resample_to_img

        target = nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), affine)
        binary = resample_to_img(binary, target, interpolation="nearest", force_resample=True, copy_header=True)
    mask = np.asarray(binary.dataobj) > 0
    if not mask.any():
        raise DataFormatError(f"{where}: ROI mask {path} has no voxel > 0 on the brain data's grid "
                              f"(shape {shape}); check that the mask is in the same space as the data")
    return mask
