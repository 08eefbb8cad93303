"""Encoding maps as pictures: NIfTI volumes, volume slices, fsaverage5 surfaces, ROI bars.

Volume data (func1pt8mm): voxel values are scattered back into the (X, Y, Z) volume via the
ROI's ``ijk`` and saved with the prepared file's affine. Surface data (fsaverage): values are
drawn on nilearn's bundled fsaverage5 mesh (works offline); fsaverage5's 10,242 vertices per
hemisphere are the first 10,242 of fsaverage's, so only vertices below 10,242 are drawn.
Plot functions are pure: ``plot_x(data, *, ax=None, ...) -> Figure``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._io import atomic_path

__all__ = ["values_to_volume", "volume_image", "save_volume_map", "plot_volume_map", "surface_arrays",
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


def plot_volume_map(img, *, ax=None, title: str | None = None, vmax: float | None = None, n_slices: int = 7,
                    cmap: str = "RdBu_r"):
    """Axial slices of a volume map (nilearn ``plot_stat_map``, no template background).

    Parameters
    ----------
    img : nibabel image
        A map from :func:`volume_image`.
    ax : matplotlib Axes, optional
    title : str, optional
    vmax : float, optional
        Colour range ±vmax (default: the largest absolute value).
    n_slices : int
        Axial slices, spread over the slices that hold data.
    cmap : str

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt
    from nilearn import plotting

    data = np.asarray(img.get_fdata())
    if ax is None:
        fig, ax = plt.subplots(figsize=(2 * n_slices, 2.4))
    fig = ax.figure
    z_with_data = np.flatnonzero(np.any(data != 0, axis=(0, 1)))
    if len(z_with_data) == 0:
        z_with_data = np.arange(data.shape[2])
    picks = np.unique(z_with_data[np.linspace(0, len(z_with_data) - 1, min(n_slices, len(z_with_data))).astype(int)])
    affine = img.affine
    cuts = [float((affine @ np.array([0, 0, k, 1.0]))[2]) for k in picks]
    vmax = float(np.max(np.abs(data))) if vmax is None else float(vmax)
    plotting.plot_stat_map(img, bg_img=None, display_mode="z", cut_coords=cuts, axes=ax, figure=fig,
                           title=title, vmax=vmax if vmax > 0 else 1.0, cmap=cmap, threshold=None,
                           annotate=False, black_bg=False, colorbar=True, draw_cross=False,
                           resampling_interpolation="nearest")
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
                     vmax: float | None = None, cmap: str = "RdBu_r", view: str = "ventral"):
    """Both hemispheres of a surface map on nilearn's inflated fsaverage5.

    Parameters
    ----------
    values, vertex, hemi : arrays of shape (n_voxels,)
        See :func:`surface_arrays`.
    title : str, optional
    vmax : float, optional
    cmap : str
    view : str
        nilearn view (``"lateral"``, ``"medial"``, ``"ventral"``, ``"posterior"``...).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt
    from nilearn import datasets, plotting

    mesh = datasets.fetch_surf_fsaverage("fsaverage5")
    left, right = surface_arrays(values, vertex, hemi)
    finite = np.concatenate([left, right])
    finite = finite[np.isfinite(finite)]
    vmax = float(np.max(np.abs(finite))) if vmax is None and len(finite) else (vmax or 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), subplot_kw={"projection": "3d"})
    has_data = [bool(np.isfinite(data).any()) for data in (left, right)]
    # The colour bar goes with the rightmost hemisphere that has values.
    colorbar_side = "right" if has_data[1] else "left"
    for ax, data, side, drawn in zip(axes, (left, right), ("left", "right"), has_data):
        if not drawn:
            # No vertex of this hemisphere on fsaverage5: background only (nilearn warns on all-NaN maps).
            plotting.plot_surf(mesh[f"infl_{side}"], None, bg_map=mesh[f"sulc_{side}"], hemi=side, view=view,
                               axes=ax, figure=fig)
            continue
        plotting.plot_surf_stat_map(mesh[f"infl_{side}"], data, hemi=side, view=view,
                                    bg_map=mesh[f"sulc_{side}"], axes=ax, figure=fig, vmax=vmax if vmax > 0 else 1.0,
                                    cmap=cmap, colorbar=side == colorbar_side, threshold=None)
    if title:
        fig.suptitle(title)
    return fig


def plot_roi_summary(summary: Mapping[str, Mapping[str, float]], *, ax=None, ylabel: str = "mean r"):
    """Grouped bars: a value per ROI (groups) per feature space (bars).

    Parameters
    ----------
    summary : mapping feature space -> mapping ROI -> float
    ax : matplotlib Axes, optional
    ylabel : str

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
        heights = [summary[space].get(roi, np.nan) for roi in rois]
        ax.bar(x + (k - (len(spaces) - 1) / 2) * width, heights, width, label=space)
    ax.set_xticks(x, rois)
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
