"""Write small prepared files (the layout of ``brain2image prepare``) with chosen contents.

Tests of the stages after ``prepare`` (decoding, features, encoding) build their inputs with
this writer instead of running ``prepare`` on a fake NSD tree, so they can plant known signals.
The test repetitions are written as ``n_repeats`` identical single trials, whose average is
the ``test`` row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

__all__ = ["write_prepared"]


def write_prepared(path: str | Path, train_ids, test_ids, rois: Mapping[str, Mapping[str, np.ndarray]],
                   attrs: Mapping | None = None, n_repeats: int = 3) -> Path:
    """Write a prepared file.

    Parameters
    ----------
    path : path-like
    train_ids, test_ids : array-like of int
        0-based 73k id of each training row / each (averaged) test row.
    rois : mapping
        ROI key → ``{"train": (n_train, n_vox), "test": (n_test, n_vox)}`` plus optional
        ``ijk``, ``vertex``, ``hemi``, ``ncsnr``.
    attrs : mapping, optional
        File attributes (``subject``, ``space``, ``volume_shape``, ``affine``...).
    n_repeats : int
        Repetitions behind each test row.
    """
    train_ids = np.asarray(train_ids, dtype=np.int64)
    test_ids = np.asarray(test_ids, dtype=np.int64)
    with h5py.File(path, "w") as f:
        f.attrs.update({"subject": 1, "space": "func1pt8mm", "rois": list(rois), **(attrs or {})})
        f["train/ids"] = train_ids
        f["train/session"] = np.ones(len(train_ids), np.int16)
        f["train/trial"] = np.arange(1, len(train_ids) + 1, dtype=np.int32)
        f["test/ids"] = test_ids
        f["test/n_repeats"] = np.full(len(test_ids), n_repeats, np.int16)
        f["test_trials/ids"] = np.repeat(test_ids, n_repeats)
        f["test_trials/session"] = np.ones(len(test_ids) * n_repeats, np.int16)
        f["test_trials/trial"] = np.arange(1, len(test_ids) * n_repeats + 1, dtype=np.int32)
        for key, data in rois.items():
            group = f.create_group(f"rois/{key}")
            group["train"] = np.asarray(data["train"], np.float32)
            group["test"] = np.asarray(data["test"], np.float32)
            group["test_trials"] = np.repeat(group["test"][()], n_repeats, axis=0)
            for name in ("ijk", "vertex", "hemi", "ncsnr"):
                if name in data:
                    group[name] = data[name]
    return Path(path)
