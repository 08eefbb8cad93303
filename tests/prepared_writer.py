"""Write small prepared files (through the format's own writer) with chosen contents.

Tests of the stages after ``prepare`` (decoding, features, encoding) build their inputs with
this writer instead of running ``prepare`` on a fake NSD tree, so they can plant known signals.
The test repetitions are written as ``n_repeats`` identical single trials, whose average is
the ``test`` row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from brain2image.formats.prepared import PreparedRoi, PreparedWriter, TrialIndex

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
    n_test_trials = len(test_ids) * n_repeats
    train = TrialIndex(train_ids, np.ones(len(train_ids), np.int16), np.arange(1, len(train_ids) + 1))
    test_trials = TrialIndex(np.repeat(test_ids, n_repeats), np.ones(n_test_trials, np.int16),
                             np.arange(1, n_test_trials + 1))
    prepared_rois, start = [], 0
    for key, data in rois.items():
        n_vox = np.shape(data["train"])[1]
        prepared_rois.append(PreparedRoi(
            key=key, atlas=key, label="", label_values=np.zeros(0, np.int64),
            columns=np.arange(start, start + n_vox), ncsnr=data.get("ncsnr"),
            positions={name: data[name] for name in ("ijk", "vertex", "hemi") if name in data}))
        start += n_vox
    file_attrs = {"subject": 1, "space": "func1pt8mm", "rois": list(rois), **(attrs or {})}
    with PreparedWriter(path, file_attrs, train, test_trials, prepared_rois) as writer:
        train_rows = np.concatenate([np.asarray(d["train"], np.float32) for d in rois.values()], axis=1)
        test_rows = np.concatenate([np.asarray(d["test"], np.float32) for d in rois.values()], axis=1)
        writer.write_session(train_rows, np.repeat(test_rows, n_repeats, axis=0))
        writer.write_test(test_ids, np.full(len(test_ids), n_repeats),
                          {key: np.asarray(d["test"], np.float32) for key, d in rois.items()})
    return Path(path)
