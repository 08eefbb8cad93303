"""What the encoding analysis writes: ``results.h5``, ``summary.json``, NIfTI / PNG maps and ROI bars.

:func:`write_encoding_outputs` writes the files of one analysis
(:func:`~brain2image.encoding.analysis.run_encoding_analysis`, or the parts assembled by
:mod:`brain2image.encoding.parts`) from its :class:`~brain2image.encoding.analysis.EncodingResults`;
voxels are matched by position (:func:`voxel_keys`, :func:`summary_masks`). The fitting is
:mod:`brain2image.encoding.analysis`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import atomic_path, atomic_write_text
from ..config import EncodingConfig
from ..errors import DataFormatError
from ..formats.encoding_results import write_encoding_results
from ..formats.prepared import PreparedData

if TYPE_CHECKING:
    from .analysis import EncodingResults

__all__ = ["voxel_keys", "summary_masks", "summarise", "write_results", "write_encoding_outputs"]

logger = logging.getLogger(__name__)


def voxel_keys(data: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """An int64 key per voxel from its position: ``ijk`` (volume) or ``hemi`` + ``vertex`` (surface).

    Parameters
    ----------
    data : mapping
        ``ijk`` (n_voxels, 3) or None, and ``vertex`` / ``hemi`` (n_voxels,)
        (:meth:`~brain2image.formats.prepared.PreparedData.positions`).

    Returns
    -------
    array of shape (n_voxels,), int64
    """
    if data["ijk"] is not None:
        ijk = np.asarray(data["ijk"], dtype=np.int64)
        return (ijk[:, 0] * 100_000 + ijk[:, 1]) * 100_000 + ijk[:, 2]
    return np.asarray(data["hemi"], dtype=np.int64) * 10_000_000 + np.asarray(data["vertex"], dtype=np.int64)


def summary_masks(prepared_path: str | os.PathLike, roi_data: Mapping[str, np.ndarray | None],
                  summary_rois: Sequence[str]) -> dict[str, np.ndarray]:
    """Boolean masks over the analysis ROI's voxels of each summary ROI (matched by position).

    Parameters
    ----------
    prepared_path : path-like
        The prepared file holding the summary ROIs.
    roi_data : mapping
        Positions of the analysis ROI's voxels (``ijk`` or ``vertex`` + ``hemi``).
    summary_rois : sequence of str

    Returns
    -------
    dict name -> bool array of shape (n_voxels,)
        ``all`` (every voxel), then one per summary ROI.
    """
    keys = voxel_keys(roi_data)
    masks = {"all": np.ones(len(keys), bool)}
    prepared = PreparedData(prepared_path)
    for name in summary_rois:
        masks[name] = np.isin(keys, voxel_keys(prepared.positions(name)))
    return masks


def summarise(results: EncodingResults, masks: Mapping[str, np.ndarray]) -> dict:
    """Mean r (and unique variance) per ROI per feature space, for ``summary.json``."""
    out = {"mean_r": {name: {roi: float(np.mean(s["r"][m])) if m.any() else None for roi, m in masks.items()}
                      for name, s in results.spaces.items()},
           "n_voxels": {roi: int(m.sum()) for roi, m in masks.items()}}
    if results.partitions:
        out["partitions"] = {key: {roi: {q: float(np.mean(p[q][m])) for q in ("unique_a", "unique_b", "shared")}
                                   for roi, m in masks.items() if m.any()} for key, p in results.partitions.items()}
    if results.noise_ceiling is not None:
        out["mean_nc_fraction"] = {name: {roi: float(np.nanmean(s["nc_fraction"][m])) if m.any() else None
                                          for roi, m in masks.items()} for name, s in results.spaces.items()}
    return out


def write_results(results: EncodingResults, path: str | os.PathLike, *, roi_data: dict | None = None,
                  attrs: Mapping | None = None) -> Path:
    """Write ``results.h5`` (:func:`brain2image.formats.encoding_results.write_encoding_results`)."""
    return write_encoding_results(results.spaces, results.partitions, results.noise_ceiling, path,
                                  roi_data=roi_data, attrs=attrs, models=results.models)


def _write_maps(results: EncodingResults, roi_data: dict, out_dir: Path, summary: dict) -> list[Path]:
    import matplotlib.pyplot as plt

    from .maps import plot_roi_summary, plot_surface_map, plot_volume_map, save_volume_map, volume_image

    maps = {f"r_{name}": s["r"] for name, s in results.spaces.items()}
    for key, p in results.partitions.items():
        a, b = key.split("|")
        maps[f"unique_{a}_vs_{b}"] = p["unique_a"]
        maps[f"unique_{b}_vs_{a}"] = p["unique_b"]
    written = []
    volume = roi_data["ijk"] is not None
    if volume and (roi_data["volume_shape"] is None or roi_data["affine"] is None):
        raise DataFormatError("prepared file lacks the 'volume_shape' / 'affine' attributes needed for volume maps")
    for name, values in maps.items():
        if volume:
            nii = save_volume_map(values, roi_data["ijk"], roi_data["volume_shape"], roi_data["affine"],
                                  out_dir / "maps" / f"{name}.nii.gz")
            written.append(nii)
            fig = plot_volume_map(volume_image(values, roi_data["ijk"], roi_data["volume_shape"], roi_data["affine"]),
                                  title=name)
        else:
            fig = plot_surface_map(values, roi_data["vertex"], roi_data["hemi"], title=name)
        png = out_dir / "maps" / f"{name}.png"
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=90)
        plt.close(fig)
        written.append(png)
    fig = plot_roi_summary(summary["mean_r"])
    with atomic_path(out_dir / "roi_summary.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    written.append(out_dir / "roi_summary.png")
    return written


def write_encoding_outputs(results: EncodingResults, prepared_path: str | os.PathLike,
                           feature_stores: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                           config: EncodingConfig, data: dict) -> Path:
    """Write ``results.h5``, the maps (with ``config.maps``) and, last, ``summary.json``.

    The stage is done when ``summary.json`` exists, so a run killed before it has it redone.

    Parameters
    ----------
    results : EncodingResults
    prepared_path : path-like
        The prepared file the models were fitted to (its summary ROIs are read here).
    feature_stores : mapping name -> path-like
        The stores of the feature spaces, recorded in both files.
    out_dir : path-like
        Results go to ``<out_dir>/encoding/``.
    config : EncodingConfig
    data : dict
        What :func:`read_roi_data` returned for ``config.roi``.

    Returns
    -------
    Path
        ``<out_dir>/encoding/summary.json``.
    """
    prepared_path, out = Path(prepared_path), Path(out_dir) / "encoding"
    masks = summary_masks(prepared_path, data, config.summary_rois)
    summary = summarise(results, masks)
    summary["config"] = dataclasses.asdict(config)
    summary["feature_stores"] = {k: str(v) for k, v in feature_stores.items()}
    write_results(results, out / "results.h5", roi_data=data,
                  attrs={"config": json.dumps(dataclasses.asdict(config)), "prepared": str(prepared_path),
                         "roi": config.roi, "feature_stores": json.dumps(summary["feature_stores"])})
    if config.maps and not data.get("positions_placed", True):
        logger.warning("encoding maps skipped: the prepared file's voxels have no place in a brain volume "
                       "(array betas without [source] mask); results.h5 and summary.json hold every voxel's r")
    elif config.maps:
        _write_maps(results, data, out, summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return out / "summary.json"
