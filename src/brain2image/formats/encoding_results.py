"""The encoding results file (``encoding/results.h5``): per-voxel scores of each feature space."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from .._io import atomic_path

__all__ = ["write_encoding_results"]


def write_encoding_results(spaces: Mapping[str, Mapping[str, np.ndarray]],
                           partitions: Mapping[str, Mapping[str, np.ndarray]], noise_ceiling: np.ndarray | None,
                           path: str | os.PathLike, *, roi_data: dict | None = None,
                           attrs: Mapping | None = None) -> Path:
    """Write ``results.h5``.

    Layout: ``/spaces/<name>/{r,r2,alpha,nc_fraction}``,
    ``/partitions/<a>|<b>/{r2_a,r2_b,r2_joint,unique_a,unique_b,shared,r_joint,weight_a,weight_b}``
    (``a``, ``b`` in attrs), ``/noise_ceiling``, ``/voxels/{ijk | vertex,hemi}``.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, values in spaces.items():
            g = f.create_group(f"spaces/{name}")
            for key, arr in values.items():
                g.create_dataset(key, data=np.asarray(arr, dtype=np.float32))
        for key, values in partitions.items():
            g = f.create_group(f"partitions/{key.replace('|', '__')}")
            g.attrs["a"], g.attrs["b"] = key.split("|")
            for q, arr in values.items():
                g.create_dataset(q, data=np.asarray(arr, dtype=np.float32))
        if noise_ceiling is not None:
            f.create_dataset("noise_ceiling", data=np.asarray(noise_ceiling).astype(np.float32))
        if roi_data is not None:
            for key in ("ijk", "vertex", "hemi"):
                if roi_data.get(key) is not None:
                    f.create_dataset(f"voxels/{key}", data=roi_data[key])
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.attrs["brain2image_version"] = __version__
    return Path(path)
