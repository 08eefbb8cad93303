"""Encoding maps as pictures: NIfTI volumes, volume slices, fsaverage5 surfaces, ROI bars.

Volume data (func1pt8mm): voxel values are scattered back into the (X, Y, Z) volume via the
ROI's ``ijk`` and saved with the prepared file's affine. Surface data (fsaverage): values are
drawn on nilearn's bundled fsaverage5 mesh (works offline); fsaverage5's 10,242 vertices per
hemisphere are the first 10,242 of fsaverage's, so only vertices below 10,242 are drawn.
Plot functions are pure: ``plot_x(data, *, ax=None, ...) -> Figure``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_path

__all__ = ["values_to_volume", "volume_image", "save_volume_map", "plot_volume_map", "surface_arrays",
           "MapDescription", "describe_map", "axial_slice_indices",
           "plot_surface_map", "plot_roi_summary", "FSAVERAGE5_N_VERTICES"]

#: Vertices per hemisphere of fsaverage5 (the first ones of fsaverage's 163,842).
FSAVERAGE5_N_VERTICES = 10242


def values_to_volume(values: np.ndarray, ijk: np.ndarray, shape, fill: float = 0.0) -> np.ndarray:
    """Scatter voxel values into a volume.

    Parameters
    ----------
    values : array of shape (n_voxels,)
    ijk : array of shape (n_voxels, 3)
        Volume index (X, Y, Z) of each voxel, NIfTI order.
    shape : tuple of 3 int
        Volume shape (X, Y, Z).
    fill : float
        Value outside the ROI.

    Returns
    -------
    array of shape (X, Y, Z), float32
    """
    values = np.asarray(values)
    ijk = np.asarray(ijk, dtype=np.int64)
    shape = tuple(int(s) for s in shape)
    if ijk.shape != (len(values), 3):
        raise ValueError(f"ijk has shape {ijk.shape}; expected ({len(values)}, 3)")
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape)):
        raise ValueError(f"ijk indices fall outside the volume shape {shape}")
    volume = np.full(shape, fill, dtype=np.float32)
    volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
    return volume


def volume_image(values: np.ndarray, ijk: np.ndarray, shape, affine: np.ndarray):
    """A ``nibabel.Nifti1Image`` of voxel values (0 outside the ROI) with the given affine."""
    import nibabel as nib

    return nib.Nifti1Image(values_to_volume(values, ijk, shape), np.asarray(affine, dtype=np.float64))


def save_volume_map(values: np.ndarray, ijk: np.ndarray, shape, affine: np.ndarray,
                    path: str | os.PathLike) -> Path:
    """Write voxel values as a NIfTI volume (atomically); returns the path."""
    import nibabel as nib

    img = volume_image(values, ijk, shape, affine)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


@dataclass(frozen=True)
class MapDescription:
    """What an encoding map shows, for its figure and the report.

    Attributes
    ----------
    subject : str
        What the map shows, in a few words ("unique variance of c vs z").
    title : str
        Figure title.
    colorbar_label : str
        Colour-bar label, with units.
    caption : str
        A sentence saying what the map shows and how to read it.
    """

    subject: str
    title: str
    colorbar_label: str
    caption: str


def describe_map(name: str) -> MapDescription | None:
    """The description of a map named ``r_<space>`` or ``unique_<a>_vs_<b>``; None for other names."""
    if name.startswith("r_") and len(name) > 2:
        space = name[2:]
        return MapDescription(
            f"prediction accuracy (Pearson r, test) of {space}", f"{space}: prediction accuracy (Pearson r, test)",
            "Pearson r (test)",
            f"Per voxel, the Pearson correlation between the responses the encoding model of {space} predicts "
            "and the measured responses to the held-out test images. Red: predicted well; near 0 (white): "
            "not predicted; blue: predicted below chance.")
    match = re.fullmatch(r"unique_(.+)_vs_(.+)", name)
    if match is None:
        return None
    a, b = match.groups()
    return MapDescription(
        f"unique variance of {a} vs {b}", f"unique {a} vs {b}: variance explained by {a} beyond {b}",
        "unique variance (signed R², test)",
        f"Per voxel, the test-set variance (signed R² = r·|r|) that {a} explains beyond {b}, from banded ridge "
        f"variance partitioning: R² of the joint model of {a} and {b} minus R² of the model of {b} alone. "
        f"Red: {a} adds information {b} lacks; near 0: {b} already explains what {a} does; blue: adding {a} "
        "hurts the test prediction (overfitting).")


def axial_slice_indices(data: np.ndarray, n_slices: int = 7) -> np.ndarray:
    """Axial (third-axis) slice indices a volume map shows: ``n_slices`` spread over the slices with data."""
    data = np.asarray(data)
    z_with_data = np.flatnonzero(np.any(data != 0, axis=(0, 1)))
    if len(z_with_data) == 0:
        z_with_data = np.arange(data.shape[2])
    spread = np.linspace(0, len(z_with_data) - 1, min(n_slices, len(z_with_data))).astype(int)
    return np.unique(z_with_data[spread])


def plot_volume_map(img, *, ax=None, title: str | None = None, vmax: float | None = None, n_slices: int = 7,
                    cmap: str = "RdBu_r", colorbar_label: str | None = None):
    """Axial slices of a volume map (nilearn ``plot_stat_map``, no template background).

    Each slice is labelled with its voxel index along the third (axial, z) axis.

    Parameters
    ----------
    img : nibabel image
        A map from :func:`volume_image`.
    ax : matplotlib Axes, optional
    title : str, optional
        A map name known to :func:`describe_map` is replaced by its description's title.
    vmax : float, optional
        Colour range ±vmax (default: the largest absolute value).
    n_slices : int
        Axial slices, spread over the slices that hold data (:func:`axial_slice_indices`).
    cmap : str
    colorbar_label : str, optional
        Default: the description's label for a known map name, else "value".

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from nilearn import plotting

    data = np.asarray(img.get_fdata())
    description = describe_map(title) if title else None
    if description is not None:
        title = description.title
    label = colorbar_label or (description.colorbar_label if description else "value")
    if ax is None:
        fig, ax = plt.subplots(figsize=(2 * n_slices + 1.2, 2.8))
    fig = ax.figure
    picks = axial_slice_indices(data, n_slices)
    cut_of = {float((img.affine @ np.array([0, 0, k, 1.0]))[2]): int(k) for k in picks}
    vmax = float(np.max(np.abs(data))) if vmax is None else float(vmax)
    vmax = vmax if vmax > 0 else 1.0
    fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), cmap), ax=ax, label=label, fraction=0.03, pad=0.01)
    display = plotting.plot_stat_map(img, bg_img=None, display_mode="z", cut_coords=list(cut_of), axes=ax,
                                     figure=fig, vmax=vmax, cmap=cmap, threshold=None, annotate=False,
                                     black_bg=False, colorbar=False, draw_cross=False,
                                     resampling_interpolation="nearest")
    for cut, cut_ax in display.axes.items():
        k = cut_of[min(cut_of, key=lambda c: abs(c - float(cut)))]
        cut_ax.ax.set_title(f"z={k}", fontsize=9, pad=2)
    fig.suptitle(f"{title} — axial slices (voxel index z)" if title else "axial slices (voxel index z)",
                 fontsize=10)
    return fig


def surface_arrays(values: np.ndarray, vertex: np.ndarray, hemi: np.ndarray,
                   n_vertices: int = FSAVERAGE5_N_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """Per-hemisphere vertex arrays (NaN where no value) of the first ``n_vertices`` vertices.

    Parameters
    ----------
    values : array of shape (n_voxels,)
    vertex : array of shape (n_voxels,)
        fsaverage vertex index.
    hemi : array of shape (n_voxels,)
        0 = left, 1 = right.
    n_vertices : int
        Vertices kept per hemisphere (fsaverage5: 10,242).

    Returns
    -------
    left, right : arrays of shape (n_vertices,)
    """
    values, vertex, hemi = np.asarray(values), np.asarray(vertex, dtype=np.int64), np.asarray(hemi)
    if not (len(values) == len(vertex) == len(hemi)):
        raise ValueError(f"values, vertex and hemi differ in length: {len(values)}, {len(vertex)}, {len(hemi)}")
    out = []
    for h in (0, 1):
        arr = np.full(n_vertices, np.nan)
        keep = (hemi == h) & (vertex >= 0) & (vertex < n_vertices)
        arr[vertex[keep]] = values[keep]
        out.append(arr)
    return out[0], out[1]


def plot_surface_map(values: np.ndarray, vertex: np.ndarray, hemi: np.ndarray, *, title: str | None = None,
                     vmax: float | None = None, cmap: str = "RdBu_r", view: str = "ventral",
                     colorbar_label: str | None = None):
    """Both hemispheres of a surface map on nilearn's inflated fsaverage5.

    Parameters
    ----------
    values, vertex, hemi : arrays of shape (n_voxels,)
        See :func:`surface_arrays`.
    title : str, optional
        A map name known to :func:`describe_map` is replaced by its description's title.
    vmax : float, optional
    cmap : str
    view : str
        nilearn view (``"lateral"``, ``"medial"``, ``"ventral"``, ``"posterior"``...).
    colorbar_label : str, optional
        Default: the description's label for a known map name, else "value".

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from nilearn import datasets, plotting

    description = describe_map(title) if title else None
    label = colorbar_label or (description.colorbar_label if description else "value")
    mesh = datasets.fetch_surf_fsaverage("fsaverage5")
    left, right = surface_arrays(values, vertex, hemi)
    finite = np.concatenate([left, right])
    finite = finite[np.isfinite(finite)]
    vmax = float(np.max(np.abs(finite))) if vmax is None and len(finite) else (vmax or 1.0)
    vmax = vmax if vmax > 0 else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 4), subplot_kw={"projection": "3d"})
    for ax, data, side in zip(axes, (left, right), ("left", "right")):
        if not np.isfinite(data).any():
            # No vertex of this hemisphere on fsaverage5: background only (nilearn warns on all-NaN maps).
            plotting.plot_surf(mesh[f"infl_{side}"], None, bg_map=mesh[f"sulc_{side}"], hemi=side, view=view,
                               axes=ax, figure=fig)
        else:
            plotting.plot_surf_stat_map(mesh[f"infl_{side}"], data, hemi=side, view=view,
                                        bg_map=mesh[f"sulc_{side}"], axes=ax, figure=fig, vmax=vmax, cmap=cmap,
                                        colorbar=False, threshold=None)
        ax.set_title(f"{side} hemisphere", fontsize=9)
    fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), cmap), ax=list(axes), label=label, fraction=0.03, pad=0.02)
    heading = description.title if description else title
    view_text = f"fsaverage5 inflated surface, {view} view"
    fig.suptitle(f"{heading} — {view_text}" if heading else view_text, fontsize=10)
    return fig


def plot_roi_summary(summary: Mapping[str, Mapping[str, float]], *, ax=None, ylabel: str = "mean Pearson r (test)",
                     title: str = "Encoding accuracy per ROI"):
    """Grouped bars: a value per ROI (groups) per feature space (bars).

    Parameters
    ----------
    summary : mapping feature space -> mapping ROI -> float or None
        None (an ROI without encoded voxels) draws no bar.
    ax : matplotlib Axes, optional
    ylabel, title : str

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    spaces = list(summary)
    rois = list(dict.fromkeys(roi for space in spaces for roi in summary[space]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(rois) * max(1, len(spaces)) / 2, 3.2))
    fig = ax.figure
    width = 0.8 / max(1, len(spaces))
    x = np.arange(len(rois))
    for k, space in enumerate(spaces):
        values = (summary[space].get(roi) for roi in rois)
        heights = [np.nan if value is None else value for value in values]  # None: the ROI has no encoded voxel
        ax.bar(x + (k - (len(spaces) - 1) / 2) * width, heights, width, label=space)
    ax.set_xticks(x, rois)
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("ROI")
    ax.set_title(title, fontsize=10)
    ax.legend(title="feature space", fontsize="small", title_fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
