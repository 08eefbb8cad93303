"""The ground truth of a simulated BIDS study (``simulation_truth.h5``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ... import __version__
from ..._io import atomic_path
from .scenes import label_names
from .subject import CHANNELS, STREAM_LABELS, SimulatedSubject

if TYPE_CHECKING:
    from .bids_study import BidsDesign

__all__ = ["write_bids_truth"]


def write_bids_truth(path: str | os.PathLike, *, subject: SimulatedSubject, signal: np.ndarray,
                     responses: np.ndarray, design: BidsDesign, onsets: np.ndarray, labels: np.ndarray,
                     scenes_json: str, attrs: Mapping[str, object], nsd_ids: np.ndarray | None = None) -> None:
    """Write one subject's ground truth.

    Layout::

        attrs: the simulation's settings, subject, task, space, channels, label_names,
               stream_labels (JSON), brain2image_version
        /responses              (n_trials, n_voxels) float32  true single-trial responses of the ROI voxels
                                                               (% signal change, units of nilearn's glover
                                                               regressors), trials in scanning order
        /signal                 (n_images, n_voxels) float32  noise-free response to every image
        /trials/session, run    (n_trials,) int64   1-based
        /trials/onset           (n_trials,) float64 s from the run's first volume
        /trials/image_id        (n_trials,) int64   0-based image id (events' stim_id)
        /trials/is_test         (n_trials,) bool
        /labels                 (n_images, n_labels) float32  scene labels
        /scenes                 JSON text: list of scene dicts, index = image id
        /nsd_id                 (n_images,) int64  0-based 73k id of each image in the simulated NSD study
                                                   it comes from (only with ``nsd_ids``; attr ``nsd_study``)
        /voxels/ijk             (n_voxels, 3) int32 (X, Y, Z) of the ROI voxels; /voxels/roi their ROI names,
        /voxels/…               the subject's parameters (SimulatedSubject.from_hdf5 reads them)
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        def put(name: str, data: np.ndarray) -> None:
            f.create_dataset(name, data=data, track_times=False)

        put("responses", np.asarray(responses, dtype=np.float32))
        put("signal", np.asarray(signal, dtype=np.float32))
        put("trials/session", design.session.astype(np.int64))
        put("trials/run", design.run.astype(np.int64))
        put("trials/onset", np.asarray(onsets, dtype=np.float64))
        put("trials/image_id", design.image_id.astype(np.int64))
        put("trials/is_test", design.is_test.astype(bool))
        put("labels", np.asarray(labels, dtype=np.float32))
        put("scenes", np.array(scenes_json.encode("utf-8")))
        if nsd_ids is not None:
            put("nsd_id", np.asarray(nsd_ids, dtype=np.int64))
        group = f.create_group("voxels")
        subject.to_hdf5(group)
        stream = subject.anatomy.streams[tuple(subject.anatomy.voxel_ijk.T)]
        put("voxels/stream", stream)
        put("voxels/roi", np.array([STREAM_LABELS[int(v)] for v in stream], dtype="S"))
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["channels"] = list(CHANNELS)
        f.attrs["label_names"] = label_names()
        f.attrs["stream_labels"] = json.dumps(STREAM_LABELS)
        f.attrs["brain2image_version"] = __version__
