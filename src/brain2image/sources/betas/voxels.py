"""Which voxels of precomputed betas a prepared file holds: ROI masks placed on the betas' columns.

Volume betas (a 4D NIfTI, GLMsingle's (X, Y, Z, n_trials)): NIfTI ROI masks are put on the betas'
grid (:func:`~brain2image.sources.roi_masks.load_mask_on_grid`); ``[source] mask`` (optional) is
the brain mask, and ROI voxels outside it are left out. ``reliable:N`` ROIs choose among the
brain mask's voxels, or, without one, among the voxels whose first trial is finite and non-zero.
GLMsingle's files carry no affine: the grid's affine is then the mask's (or the first ROI mask's),
and every mask must have the betas' shape.

Array betas ((n_trials, n_voxels), GLMsingle's (n_voxels, 1, 1, n_trials)): ``[source] mask``
places the columns, column ``c`` being the voxel ``numpy.argwhere(mask > 0)[c]``. Without a mask
only ``reliable:N`` ROIs are possible and a column ``c`` is written at position (c, 0, 0) of a
(n_voxels, 1, 1) "volume" with an identity affine (``placed`` False: no brain maps).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ...errors import DataFormatError, InvalidArgumentError
from ..roi_masks import RoiSpec, load_mask_on_grid, read_mask_image
from ..single_trial import RoiSelection
from .betafile import BetaFile

__all__ = ["VoxelPlan", "plan_voxels"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoxelPlan:
    """The voxels written, where they are, and each ROI's among them.

    Attributes
    ----------
    positions : array of shape (n_voxels, 3), int64
        Voxel indices (i, j, k) in ``volume_shape``.
    columns : array of shape (n_voxels,), int64
        The betas' columns (:meth:`BetaFile.read <.betafile.BetaFile.read>`) of those voxels.
    rois : list of RoiSelection
        Columns into ``positions`` (masks) or ``reliable`` counts.
    volume_shape : tuple of int
        (X, Y, Z).
    affine : array of shape (4, 4)
    placed : bool
        Whether the positions are voxels of a brain volume (False: array columns without a mask).
    """

    positions: np.ndarray
    columns: np.ndarray
    rois: list[RoiSelection]
    volume_shape: tuple[int, int, int]
    affine: np.ndarray
    placed: bool


def _xyz(shape: Sequence[int]) -> tuple[int, int, int]:
    x, y, z = (int(n) for n in shape)
    return x, y, z


def _grid(betas: BetaFile, specs: list[RoiSpec], mask: Path | None, where: str) -> nib.Nifti1Image:
    """The betas' grid as an (empty) image: the file's affine, else the mask's or the first ROI mask's."""
    shape = _xyz(betas.spatial_shape)
    affine = betas.affine
    if affine is None:
        for path in [mask] + [s.mask for s in specs]:
            if path is None:
                continue
            img = read_mask_image(path, where)
            if tuple(img.shape[:3]) != shape:
                raise DataFormatError(f"{where}: mask {path} has shape {tuple(img.shape[:3])} but {betas.path} "
                                      f"(no affine) has {shape}; give masks on the betas' grid (set [source] mask "
                                      "to the brain mask the betas were fitted in)")
            affine = img.affine if affine is None else affine
    return nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), np.eye(4) if affine is None else affine)


def _roi_selections(specs: list[RoiSpec], masks: dict[str, np.ndarray], positions: np.ndarray,
                    where: str) -> list[RoiSelection]:
    rois = []
    for spec in specs:
        if spec.reliable is not None:
            rois.append(RoiSelection(spec.key, reliable=spec.reliable))
            continue
        columns = np.flatnonzero(masks[spec.key][tuple(positions.T)])
        if not columns.size:
            raise DataFormatError(f"{where}: ROI {spec.key!r} ({spec.mask}) has no voxel inside [source] mask; "
                                  "check that the ROI and the mask are in the same space")
        rois.append(RoiSelection(spec.key, columns=columns, atlas=str(spec.mask)))
    return rois


def _roi_masks(specs: list[RoiSpec], grid: nib.Nifti1Image, brain: np.ndarray | None,
               where: str) -> dict[str, np.ndarray]:
    masks = {}
    for spec in specs:
        if spec.mask is None:
            continue
        roi = load_mask_on_grid(spec.mask, grid, f"{where}: ROI {spec.key!r}")
        if brain is not None and (roi & ~brain).any():
            logger.info("%s: ROI %r: %d of its %d voxels are outside [source] mask and left out", where, spec.key,
                        int((roi & ~brain).sum()), int(roi.sum()))
            roi = roi & brain
        masks[spec.key] = roi
    return masks


def _volume_plan(betas: BetaFile, specs: list[RoiSpec], mask: Path | None, where: str) -> VoxelPlan:
    grid = _grid(betas, specs, mask, where)
    brain = load_mask_on_grid(mask, grid, f"{where}: [source] mask") if mask is not None else None
    masks = _roi_masks(specs, grid, brain, where)
    union = np.zeros(grid.shape, dtype=bool)
    for roi in masks.values():
        union |= roi
    if any(s.reliable is not None for s in specs):
        if brain is None:
            first = betas.read_all_columns(0).reshape(grid.shape)
            brain = np.isfinite(first) & (first != 0)
        union |= brain
    positions = np.argwhere(union)
    columns = np.asarray(np.ravel_multi_index(tuple(positions.T), grid.shape), dtype=np.int64)
    return VoxelPlan(positions, columns, _roi_selections(specs, masks, positions, where), _xyz(grid.shape),
                     np.asarray(grid.affine, dtype=np.float64), True)


def _array_plan(betas: BetaFile, specs: list[RoiSpec], mask: Path | None, where: str) -> VoxelPlan:
    n = betas.n_columns
    if mask is None:
        named = [s.key for s in specs if s.mask is not None]
        if named:
            raise InvalidArgumentError(f"{where}: ROI {named[0]!r} is a mask, but the betas {betas.path} are an array "
                                       "whose columns no mask places; set [source] mask (its voxels, in "
                                       "numpy.argwhere order, are the columns) or use NAME=reliable:N")
        positions = np.stack([np.arange(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)], axis=1)
        return VoxelPlan(positions, np.arange(n, dtype=np.int64), _roi_selections(specs, {}, positions, where),
                         (n, 1, 1), np.eye(4), False)
    grid = read_mask_image(mask, f"{where}: [source] mask")
    brain = np.asarray(grid.dataobj) > 0
    if int(brain.sum()) != n:
        raise DataFormatError(f"{where}: [source] mask {mask} has {int(brain.sum())} voxels > 0 but the betas "
                              f"{betas.path} have {n} columns; expected the mask the array's columns come from")
    index = np.full(brain.shape, -1, dtype=np.int64)
    index[brain] = np.arange(n)
    masks = _roi_masks(specs, grid, brain, where)
    union = brain.copy() if any(s.reliable is not None for s in specs) else np.zeros(brain.shape, dtype=bool)
    for roi in masks.values():
        union |= roi
    positions = np.argwhere(union)
    return VoxelPlan(positions, index[tuple(positions.T)], _roi_selections(specs, masks, positions, where),
                     _xyz(brain.shape), np.asarray(grid.affine, dtype=np.float64), True)


def plan_voxels(betas: BetaFile, specs: list[RoiSpec], mask: Path | None, where: str) -> VoxelPlan:
    """The voxels of ``betas`` to prepare for the ROIs ``specs`` (module docstring: volume and array rules).

    Raises
    ------
    MissingFileError, DataFormatError
        A mask missing, not 3D, of the wrong size, or an ROI left empty.
    InvalidArgumentError
        A mask ROI for array betas without ``[source] mask``.
    """
    if betas.is_volume:
        return _volume_plan(betas, specs, mask, where)
    return _array_plan(betas, specs, mask, where)
