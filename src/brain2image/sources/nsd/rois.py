"""ROI specs (``atlas:label`` or ``atlas``), label tables and ROI masks in volume or fsaverage space."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np

from ...errors import DataFormatError, MissingFileError
from ._mgh import is_mgh, mgh_header, mgh_read
from .layout import HEMIS, NSDLayout

__all__ = [
    "BUILTIN_LABELS",
    "RoiMask",
    "RoiSpec",
    "label_table",
    "load_roi_masks",
    "parse_roi_spec",
    "read_ctab",
]

logger = logging.getLogger(__name__)

#: Appended to a shape disagreement between two files, which cannot tell which one is wrong.
CHECK_HINT = "`brain2image prepare --check` shows which file disagrees with the others"

#: Label tables used when the atlas's ``.mgz.ctab`` is not on disk (value -> name).
BUILTIN_LABELS: dict[str, dict[int, str]] = {
    "streams": {0: "Unknown", 1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal",
                5: "ventral", 6: "lateral", 7: "parietal"},
    "prf-visualrois": {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d",
                       7: "hV4"},
}


@dataclass(frozen=True)
class RoiSpec:
    """A requested ROI: ``atlas:label`` (one label) or ``atlas`` alone (every value > 0).

    Attributes
    ----------
    atlas : str
        Atlas file stem, e.g. ``streams``.
    label : str or None
        Label name, or None for "value > 0".
    """

    atlas: str
    label: str | None

    @property
    def key(self) -> str:
        """Key of the ROI in the prepared file: the label name, else the atlas name."""
        return self.label if self.label is not None else self.atlas

    def __str__(self) -> str:
        return self.atlas if self.label is None else f"{self.atlas}:{self.label}"


@dataclass(frozen=True)
class RoiMask:
    """One ROI's voxels (volume) or vertices (surface).

    Attributes
    ----------
    spec : RoiSpec
    values : tuple of int
        Atlas values included (empty for ``atlas`` alone, meaning every value > 0).
    mask : ndarray of bool
        Volume spaces: shape (X, Y, Z). fsaverage: shape (n_vertices_lh + n_vertices_rh,).
    source : tuple of Path
        Atlas files read.
    """

    spec: RoiSpec
    values: tuple[int, ...]
    mask: np.ndarray
    source: tuple[Path, ...]


def parse_roi_spec(text: str) -> RoiSpec:
    """Parse ``streams:early``, ``prf-visualrois:V1v`` or ``nsdgeneral``."""
    text = text.strip()
    atlas, sep, label = text.partition(":")
    if not atlas or (sep and not label):
        raise ValueError(f"ROI spec {text!r} must be 'atlas:label' or 'atlas'")
    return RoiSpec(atlas=atlas, label=label if sep else None)


def read_ctab(path: Path) -> dict[int, str]:
    """Read a ``.ctab`` label table: one ``value name ...`` per line, space separated, no header."""
    table: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            table[int(parts[0])] = parts[1]
        except (ValueError, IndexError) as error:
            raise DataFormatError(f"{path}: line {number} {line!r} is not 'value name'") from error
    return table


def label_table(layout: NSDLayout, atlas: str) -> tuple[dict[int, str], str]:
    """Label table of an atlas (value -> name) and where it came from.

    The ``.mgz.ctab`` file when present, else the built-in table.
    """
    ctab = layout.label_ctab(atlas)
    if ctab.is_file():
        return read_ctab(ctab), str(ctab)
    if atlas in BUILTIN_LABELS:
        return BUILTIN_LABELS[atlas], f"built-in {atlas} table ({ctab} not found)"
    raise MissingFileError(f"label table {ctab} not found and {atlas!r} has no built-in table "
                           f"(built-in: {sorted(BUILTIN_LABELS)})")


def _label_values(layout: NSDLayout, spec: RoiSpec, atlas_file: Path) -> tuple[int, ...]:
    if spec.label is None:
        return ()
    table, source = label_table(layout, spec.atlas)
    values = tuple(sorted(v for v, name in table.items() if name == spec.label))
    if not values:
        names = [name for v, name in sorted(table.items()) if v > 0]
        raise DataFormatError(f"ROI {spec}: label {spec.label!r} is not in atlas {atlas_file} "
                              f"(labels from {source}); available: {', '.join(names)}")
    return values


def _load_atlas(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise MissingFileError(f"ROI atlas {path} not found")
    try:
        if is_mgh(path):
            data, affine = mgh_read(path), mgh_header(path)[2]
        else:
            image = cast(Any, nib.load(path))
            data, affine = np.asarray(image.dataobj), np.asarray(image.affine, dtype=np.float64)
    except Exception as error:
        raise DataFormatError(f"{path}: cannot be read as an image ({error})") from error
    return np.rint(data).astype(np.int64), affine


def _select(data: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    return data > 0 if not values else np.isin(data, values)


def load_roi_masks(layout: NSDLayout, specs: Sequence[RoiSpec]
                   ) -> tuple[list[RoiMask], np.ndarray | None, tuple[int, ...]]:
    """Load the masks of some ROIs in the layout's space.

    Returns
    -------
    masks : list of RoiMask
    affine : ndarray of shape (4, 4) or None
        The volume atlases' affine (None on fsaverage).
    shape : tuple of int
        Volume shape (X, Y, Z), or the vertex count per hemisphere (lh, rh) on fsaverage.

    Raises
    ------
    DataFormatError
        If atlases disagree in shape, a label is unknown, or an ROI is empty.
    """
    masks: list[RoiMask] = []
    affine: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    shape_source: Path | None = None
    for spec in specs:
        if layout.is_surface:
            paths = tuple(layout.fsaverage_label(hemi, spec.atlas) for hemi in HEMIS)
            parts = []
            for path in paths:
                data, _ = _load_atlas(path)
                if data.ndim != 3 or data.shape[1:] != (1, 1):
                    raise DataFormatError(f"{path}: surface atlas must have shape "
                                          f"(n_vertices, 1, 1), got {data.shape}")
                parts.append(data[:, 0, 0])
            this_shape = tuple(p.shape[0] for p in parts)
            values = _label_values(layout, spec, paths[0])
            mask = np.concatenate([_select(p, values) for p in parts])
        else:
            paths = (layout.roi_volume(spec.atlas),)
            data, this_affine = _load_atlas(paths[0])
            if data.ndim != 3:
                raise DataFormatError(f"{paths[0]}: volume atlas must be 3-D (X, Y, Z), "
                                      f"got shape {data.shape}")
            this_shape = data.shape
            affine = this_affine if affine is None else affine
            values = _label_values(layout, spec, paths[0])
            mask = _select(data, values)
        if shape is None:
            shape, shape_source = this_shape, paths[0]
        elif this_shape != shape:
            raise DataFormatError(f"{paths[0]}: shape {this_shape} differs from {shape} "
                                  f"of {shape_source}; {CHECK_HINT}")
        if not mask.any():
            raise DataFormatError(f"ROI {spec} is empty in {', '.join(map(str, paths))} "
                                  f"(values {values or '> 0'})")
        masks.append(RoiMask(spec=spec, values=values, mask=mask, source=paths))
    if shape is None:
        raise ValueError("no ROI requested")
    return masks, affine, shape
