"""Simulate a whole NSD-like study: design, stimuli, the subject's betas, and the ground truth.

:func:`simulate_study` draws procedural scenes (:mod:`.scenes`), a subject
(:mod:`.subject`) and an NSD-like trial sequence, and writes

* ``<out>/nsd/``: an NSD tree (:mod:`.nsd_writer`) that the real-NSD reader opens unchanged;
* ``<out>/simulation_truth.h5``: what the decoders should recover (see :func:`write_truth`).

Design (as in NSD, scaled down): each subject (``subj01``, or ``subj01`` … ``subjNN`` with
``n_subjects``, :mod:`.cohort`) sees every image of the simulated "73k" space; ``n_shared``
images (the "shared1000") are shown 3 times each, in 3 different sessions when there are at
least 3; every other image 1–3 times so that the sessions hold exactly 750 trials; trial order
within a session is random. With ``late_sessions`` (NSD's sessions 38–40, released later),
``late_shared`` shared images have their last repeat(s) in those sessions and every other shared
image is seen 3 times before them.

Presets (:data:`PRESETS`, :func:`preset_settings`): ``nsd`` is an NSD-size subject (40 sessions,
10,000 images, 1,000 shared, 15,724 ``nsdgeneral`` voxels, 425 px stimuli); ``demo`` the demo's
study; ``transfer`` a study for cross-subject transfer (160 shared images, 8 sessions, ncsnr 0.2).
Arguments given explicitly override the preset's.

Memory: the stimuli are rendered, written and passed through the subject in chunks of
:data:`IMAGE_CHUNK` images, and the betas are written one session at a time (computed in blocks of
trials). When the subject is standardised on the first ``standardise_images`` images only (the
``nsd`` preset), its responses are computed chunk by chunk into a scratch file beside the truth;
otherwise they are kept in memory, (n_images, n_voxels) float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from ... import __version__
from ..._io import atomic_path
from ...errors import InvalidArgumentError
from . import nsd_writer
from .cohort import (
    SubjectDraw,
    check_subject_count,
    first_subject,
    other_subject,
    subject_images,
    truth_file_name,
)
from .nsd_writer import BETA_SCALE, TRIALS_PER_SESSION
from .scenes import Scene, label_names, render_scenes, sample_scenes, scene_captions, scene_labels
from .subject import (
    CHANNELS,
    DEFAULT_ROI_SIZES,
    STREAM_LABELS,
    SimulatedAnatomy,
    SimulatedSubject,
    make_anatomy,
    resample_images,
)

__all__ = ["DEFAULT_SETTINGS", "IMAGE_CHUNK", "NSD_PRESET", "NSD_ROI_SIZES", "PRESETS", "SimulatedStudy",
           "StudyDesign", "make_design", "preset_settings", "simulate_study", "write_truth"]

logger = logging.getLogger(__name__)

#: Presentations of each shared (test) image.
SHARED_REPEATS = 3
#: The most presentations of a training image.
MAX_TRAIN_REPEATS = 3
#: Images rendered, written to the stimuli brick and passed through the subject at once.
IMAGE_CHUNK = 250
#: Most voxel-trial values of a session computed at once while writing its betas (64 MB float32).
BETA_BLOCK_VALUES = 1 << 24

#: Voxels per ``streams`` ROI of the ``nsd`` preset. They add up to subj01's 15,724
#: ``nsdgeneral`` voxels in func1pt8mm; the split approximates subj01's ``streams`` proportions
#: (early about 38 %, ventral about 48 %, the rest midventral and lateral). Approximations,
#: not counts read from NSD.
NSD_ROI_SIZES: dict[str, int] = {"early": 5960, "midventral": 986, "ventral": 7604, "lateral": 1174}

#: The ``nsd`` preset: one NSD subject's design (40 sessions of 750 trials, 10,000 images, the
#: 1,000 shared shown 3 times, 982 of them fully within sessions 1–37), ROIs of subj01's size,
#: stimuli of 425 px (seen by the model at 64 px) and a functional volume with a margin around
#: the ROIs (45 × 55 × 40; subj01's is 81 × 104 × 83). The drives are standardised on the first
#: 1,000 images, so the responses stream.
NSD_PRESET: dict[str, Any] = {
    "n_images": 10000, "n_shared": 1000, "n_sessions": 40, "late_sessions": 3, "late_shared": 18,
    "volume_shape": (45, 55, 40), "roi_sizes": NSD_ROI_SIZES, "image_size": 425, "model_size": 64,
    "standardise_images": 1000,
}

#: :func:`simulate_study`'s settings when neither an argument nor a preset gives them.
DEFAULT_SETTINGS: dict[str, Any] = {
    "n_images": 1250, "n_shared": 50, "n_sessions": 4, "late_sessions": 0, "late_shared": 0,
    "volume_shape": (24, 30, 20), "roi_sizes": DEFAULT_ROI_SIZES, "image_size": 64, "model_size": None,
    "standardise_images": None, "ncsnr": 0.4, "session_offset": 0.3, "val_fraction": 0.1,
}

#: The ``transfer`` preset: a study for cross-subject transfer and its learning curve
#: (``simulate --preset transfer --subjects 4``; docs/transfer.md). 160 shared images (shown 3 times,
#: in 3 sessions), so a test fraction of 0.5 leaves 80 held-out test images and 80 for alignment;
#: 8 sessions, so the curve has the points k = 1, 2, 4 and all; 2,200 images (the others shown
#: 1 to 3 times, 2.5 on average); median ncsnr 0.2 (at the default 0.4 the own decoder on one
#: session already reaches the full-data decoder's semantic identification, so the curve is flat).
#: Everything else (ROI sizes, session offsets) is the default.
TRANSFER_PRESET: dict[str, Any] = {"n_images": 2200, "n_shared": 160, "n_sessions": 8, "ncsnr": 0.2}

#: Names of the presets (``demo``: the demo's study, :data:`brain2image.embedded.demo.DEMO_STUDY`).
PRESETS = ("demo", "nsd", "transfer")


def preset_settings(name: str) -> dict[str, Any]:
    """The settings of a preset (arguments of :func:`simulate_study`).

    Raises
    ------
    InvalidArgumentError
        On an unknown name.
    """
    if name == "nsd":
        return dict(NSD_PRESET)
    if name == "transfer":
        return dict(TRANSFER_PRESET)
    if name == "demo":
        from ..demo import DEMO_STUDY  # the demo's sizes live with the demo

        return dict(DEMO_STUDY)
    raise InvalidArgumentError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")


@dataclass(frozen=True)
class SimulatedStudy:
    """Where a simulated study was written.

    Attributes
    ----------
    out_dir : Path
    nsd_root : Path
        The NSD tree (``<out>/nsd``).
    truth_path : Path
        The ground truth (``<out>/simulation_truth.h5``).
    subject : int
        The first simulated subject's number (1).
    subjects : tuple of int
        Every simulated subject (1..n_subjects).
    truth_paths : tuple of Path
        The ground truth of each subject (``simulation_truth.h5``, then ``simulation_truth_subjXX.h5``).
    """

    out_dir: Path
    nsd_root: Path
    truth_path: Path
    subject: int = 1
    subjects: tuple[int, ...] = (1,)
    truth_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class StudyDesign:
    """The trial sequence of one subject, NSD-style (1-based, as in ``nsd_expdesign.mat``).

    Attributes
    ----------
    subjectim : ndarray of shape (n_subject_images,), int64
        1-based 73k ids of the subject's images; the first ``n_shared`` are the shared, sorted.
    sharedix : ndarray of shape (n_shared,), int64
        1-based 73k ids of the shared images, sorted.
    masterordering : ndarray of shape (n_trials,), int64
        1-based index into ``subjectim`` of every trial.
    """

    subjectim: np.ndarray
    sharedix: np.ndarray
    masterordering: np.ndarray

    @property
    def n_trials(self) -> int:
        """Number of trials."""
        return len(self.masterordering)

    @property
    def trial_ids(self) -> np.ndarray:
        """0-based 73k id of every trial, array of shape (n_trials,)."""
        return self.subjectim[self.masterordering - 1] - 1

    @property
    def session(self) -> np.ndarray:
        """1-based session of every trial, array of shape (n_trials,)."""
        return np.arange(self.n_trials) // TRIALS_PER_SESSION + 1

    def repetition_trials(self, n_images: int, n_reps: int = MAX_TRAIN_REPEATS) -> np.ndarray:
        """1-based trial ids of each image's presentations (0 = none), shape (n_images, n_reps)."""
        out = np.zeros((n_images, n_reps), dtype=np.int64)
        count = np.zeros(n_images, dtype=np.int64)
        for t, image in enumerate(self.trial_ids.tolist()):
            out[image, count[image]] = t + 1
            count[image] += 1
        return out


def _check_late(n_shared: int, n_sessions: int, late_sessions: int, late_shared: int) -> None:
    """Reject late-session settings that cannot be met (see :func:`make_design`)."""
    if late_sessions < 0 or late_shared < 0:
        raise InvalidArgumentError(f"late_sessions and late_shared must be >= 0, got {late_sessions} and "
                                   f"{late_shared}")
    if late_shared and not late_sessions:
        raise InvalidArgumentError(f"late_shared={late_shared} needs late_sessions >= 1, got 0")
    if late_shared > n_shared:
        raise InvalidArgumentError(f"late_shared must be <= n_shared={n_shared}, got {late_shared}")
    if late_sessions and n_sessions - late_sessions < SHARED_REPEATS:
        raise InvalidArgumentError(f"late_sessions={late_sessions} needs n_sessions >= "
                                   f"{late_sessions + SHARED_REPEATS} (3 earlier sessions), got {n_sessions}")


def _shared_sessions(rng: np.random.Generator, n_shared: int, n_sessions: int, late_sessions: int,
                     late_shared: int) -> np.ndarray:
    """0-based session of each presentation of each shared image, array of shape (n_shared, 3)."""
    if not late_sessions:  # each repeat in its own session (when there are enough sessions)
        if n_sessions >= SHARED_REPEATS:
            return np.argsort(rng.random((n_shared, n_sessions)), axis=1)[:, :SHARED_REPEATS]
        return rng.integers(0, n_sessions, size=(n_shared, SHARED_REPEATS))
    n_early = n_sessions - late_sessions
    sessions = np.argsort(rng.random((n_shared, n_early)), axis=1)[:, :SHARED_REPEATS]
    late = rng.choice(n_shared, size=late_shared, replace=False)
    # 1 or 2 of the 3 repeats (at most late_sessions) fall in the late sessions, the others before.
    n_late = rng.integers(1, min(SHARED_REPEATS - 1, late_sessions) + 1, size=late_shared)
    for image, k in zip(late.tolist(), n_late.tolist()):
        sessions[image, SHARED_REPEATS - k:] = n_early + np.sort(rng.choice(late_sessions, size=k, replace=False))
    return sessions


def make_design(n_images: int, n_shared: int, n_sessions: int, seed: int = 0, *, late_sessions: int = 0,
                late_shared: int = 0) -> StudyDesign:
    """Draw an NSD-like design (see the module docstring).

    Parameters
    ----------
    n_images, n_shared, n_sessions : int
        Images (all seen), shared images (3 presentations each) and sessions of 750 trials.
    seed : int
    late_sessions : int
        The last sessions that are "late" (NSD: 3, sessions 38–40); 0 for none.
    late_shared : int
        Shared images whose last 1 or 2 repeats fall in the late sessions (NSD: 18); every
        other shared image is shown 3 times, in 3 sessions, before the late ones.

    Raises
    ------
    InvalidArgumentError
        When the sizes cannot make whole 750-trial sessions with 3 presentations per shared
        image and 1–3 per other image, or the late sessions cannot be arranged.
    """
    rng = np.random.default_rng(seed)
    n_trials = n_sessions * TRIALS_PER_SESSION
    n_train_images = n_images - n_shared
    n_train_trials = n_trials - SHARED_REPEATS * n_shared
    if n_shared < 2 or n_train_images < 1:
        raise InvalidArgumentError(f"need n_shared >= 2 and n_images > n_shared, got n_images={n_images}, "
                         f"n_shared={n_shared}")
    if not n_train_images <= n_train_trials <= MAX_TRAIN_REPEATS * n_train_images:
        raise InvalidArgumentError(
            f"{n_sessions} sessions of {TRIALS_PER_SESSION} trials leave {n_train_trials} "
            f"training trials for {n_train_images} training images; each must be shown 1 to "
            f"{MAX_TRAIN_REPEATS} times: choose n_images between "
            f"{n_shared + -(-n_train_trials // MAX_TRAIN_REPEATS)} and {n_shared + n_train_trials}")
    _check_late(n_shared, n_sessions, late_sessions, late_shared)
    shared = np.sort(rng.choice(n_images, size=n_shared, replace=False))
    rest = np.setdiff1d(np.arange(n_images), shared)
    subjectim = np.concatenate([shared, rest]) + 1
    shared_sessions = _shared_sessions(rng, n_shared, n_sessions, late_sessions, late_shared)
    # Training images: once each, plus extra repeats spread at random.
    counts = np.ones(n_train_images, dtype=np.int64)
    extra = rng.choice((MAX_TRAIN_REPEATS - 1) * n_train_images,
                       size=n_train_trials - n_train_images, replace=False)
    counts += np.bincount(extra % n_train_images, minlength=n_train_images)
    train_presentations = rng.permutation(np.repeat(np.arange(n_shared, n_images) + 1, counts))
    per_session_shared = [np.nonzero(shared_sessions == s)[0] + 1 for s in range(n_sessions)]
    ordering, used = [], 0
    for s in range(n_sessions):
        n_fill = TRIALS_PER_SESSION - len(per_session_shared[s])
        if n_fill < 0:
            raise InvalidArgumentError(f"session {s + 1} would hold more than {TRIALS_PER_SESSION} shared trials")
        trials = np.concatenate([per_session_shared[s], train_presentations[used:used + n_fill]])
        used += n_fill
        ordering.append(rng.permutation(trials))
    masterordering = np.concatenate(ordering).astype(np.int64)
    return StudyDesign(subjectim=subjectim.astype(np.int64), sharedix=shared.astype(np.int64) + 1,
                       masterordering=masterordering)


def _session_betas(signal: np.ndarray, noise_sd: np.ndarray, offset: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Single-trial betas (% signal change) = signal + noise + session offset, (n_trials, n_vox)."""
    noise = rng.standard_normal(signal.shape, dtype=np.float32) * noise_sd.astype(np.float32)
    return signal + noise + offset.astype(np.float32)


def _to_int16(percent: np.ndarray) -> np.ndarray:
    """% signal change → NSD's int16 × 300 (rounded, clipped to the int16 range)."""
    info = np.iinfo(np.int16)
    return np.clip(np.round(percent * BETA_SCALE), info.min, info.max).astype(np.int16)


def _put_rows(f: h5py.File, name: str, source: h5py.Dataset, chunk: int = IMAGE_CHUNK) -> None:
    """Copy an (n, m) dataset of another file into ``f[name]``, ``chunk`` rows at a time."""
    target = f.create_dataset(name, shape=source.shape, dtype=source.dtype, track_times=False)
    for start in range(0, source.shape[0], chunk):
        target[start:start + chunk] = source[start:start + chunk]


def write_truth(path: str | os.PathLike, *, subject: SimulatedSubject, signal: np.ndarray | h5py.Dataset,
                labels: np.ndarray, scenes_json: str, coco_ids: np.ndarray,
                design: StudyDesign, session_offset: np.ndarray, attrs: Mapping) -> None:
    """Write the ground truth of a simulated study.

    ``signal`` is an array, or an HDF5 dataset copied in chunks of rows. Layout::

        attrs: the simulation's arguments, channels, label_names, stream_labels (JSON),
               beta_scale, brain2image_version
        /signal                 (n_images, n_voxels) float32   noise-free response (% change)
        /labels                 (n_images, n_labels) float32   scene_labels of each image
        /scenes                 JSON text: list of scene dicts, index = 0-based 73k id
        /coco_id                (n_images,) int64
        /trial_ids              (n_trials,) int64  0-based 73k id of every trial
        /session_offset         (n_sessions, n_voxels) float32
        /voxels/ijk             (n_voxels, 3) int32 (X, Y, Z)
        /voxels/stream          (n_voxels,) int16  streams label; /voxels/roi names
        /voxels/kind, rf_centre, rf_size, channel_weights, semantic_weights, noise_sd,
                ncsnr, ...      see SimulatedSubject (readable with SimulatedSubject.from_hdf5)
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        def put(name: str, data: np.ndarray) -> None:
            f.create_dataset(name, data=data, track_times=False)

        if isinstance(signal, h5py.Dataset):
            _put_rows(f, "signal", signal)
        else:
            put("signal", signal.astype(np.float32))
        put("labels", labels.astype(np.float32))
        put("scenes", np.array(scenes_json.encode("utf-8")))
        put("coco_id", np.asarray(coco_ids, dtype=np.int64))
        put("trial_ids", design.trial_ids)
        put("session_offset", session_offset.astype(np.float32))
        group = f.create_group("voxels")
        subject.to_hdf5(group)
        stream = subject.anatomy.streams[tuple(subject.anatomy.voxel_ijk.T)]
        group.create_dataset("stream", data=stream, track_times=False)
        group.create_dataset("roi", data=np.array([STREAM_LABELS[int(v)] for v in stream], dtype="S"),
                             track_times=False)
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["channels"] = list(CHANNELS)
        f.attrs["label_names"] = label_names()
        f.attrs["stream_labels"] = json.dumps(STREAM_LABELS)
        f.attrs["beta_scale"] = BETA_SCALE
        f.attrs["brain2image_version"] = __version__


@dataclass(frozen=True)
class _StudySettings:
    """The arguments of :func:`simulate_study` that shape the data (recorded in the truth's attrs)."""

    seed: int
    n_images: int
    n_shared: int
    n_sessions: int
    late_sessions: int
    late_shared: int
    volume_shape: tuple[int, int, int]
    roi_sizes: dict[str, int]
    image_size: int
    model_size: int | None
    standardise_images: int | None
    ncsnr: float
    session_offset: float
    val_fraction: float
    preset: str | None = None

    @property
    def view_size(self) -> int:
        """Side of the images the subject's model sees."""
        return self.image_size if self.model_size is None else self.model_size

    @property
    def streams_responses(self) -> bool:
        """Whether the subject is standardised on the first images and its responses stream."""
        return self.standardise_images is not None and self.standardise_images < self.n_images

    def truth_attrs(self, anatomy: SimulatedAnatomy) -> dict[str, object]:
        """The ``simulation_truth.h5`` attributes of these settings.

        The settings beyond the original ones (late sessions, model view, standardisation images)
        are recorded only when set, so a study without them keeps its attributes; the preset's
        name is in the tree's marker file only (a preset's study equals the same settings given).
        """
        attrs: dict[str, object] = {
            "seed": self.seed, "n_images": self.n_images, "n_shared": self.n_shared,
            "n_sessions": self.n_sessions, "volume_shape": list(anatomy.volume_shape),
            "roi_sizes": json.dumps(self.roi_sizes), "image_size": self.image_size,
            "ncsnr_target": self.ncsnr, "session_offset": self.session_offset,
            "val_fraction": self.val_fraction}
        extra = {"late_sessions": self.late_sessions, "late_shared": self.late_shared,
                 "model_size": self.model_size, "standardise_images": self.standardise_images}
        attrs.update({key: value for key, value in extra.items() if value})
        return attrs

    def marker(self) -> dict[str, object]:
        """Content of the tree's marker file (:data:`nsd_writer.SIMULATION_MARKER`)."""
        settings = {key: value for key, value in asdict(self).items() if key not in ("seed", "preset")}
        settings["volume_shape"] = list(self.volume_shape)
        return {"simulated_by": "brain2image", "version": __version__, "seed": self.seed, "preset": self.preset,
                "truth": "../simulation_truth.h5", "settings": settings}


def _resolve_settings(preset: str | None, seed: int, given: Mapping[str, Any]) -> _StudySettings:
    """Defaults, under the preset's settings, under the arguments given (not None); validated."""
    values = {**DEFAULT_SETTINGS, **(preset_settings(preset) if preset is not None else {}),
              **{key: value for key, value in given.items() if value is not None}}
    values["volume_shape"] = tuple(int(v) for v in values["volume_shape"])
    values["roi_sizes"] = dict(values["roi_sizes"])
    settings = _StudySettings(seed=int(seed), preset=preset, **values)
    if settings.model_size is None and settings.image_size % 2:
        raise InvalidArgumentError(f"image_size must be even, got {settings.image_size}")
    if settings.model_size is not None and not (2 <= settings.model_size <= settings.image_size
                                                and settings.model_size % 2 == 0):
        raise InvalidArgumentError(f"model_size must be even and between 2 and image_size={settings.image_size}, "
                                   f"got {settings.model_size}")
    if settings.standardise_images is not None and settings.standardise_images < 2:
        raise InvalidArgumentError(f"standardise_images must be >= 2, got {settings.standardise_images}")
    return settings


def _seed_of(sequence: np.random.SeedSequence) -> int:
    """An int seed drawn from one of the study's seed sequences."""
    return int(sequence.generate_state(1)[0])


@dataclass(frozen=True)
class _Stimuli:
    """The study's scenes and what the NSD tree says about them (index = 0-based 73k id)."""

    scenes: list[Scene]
    labels: np.ndarray
    captions: list[list[str]]
    coco_ids: np.ndarray
    is_val: np.ndarray
    crop_boxes: list[str]
    losses: np.ndarray


def _draw_stimuli(n_images: int, val_fraction: float, rng_scenes: np.random.SeedSequence,
                  rng_coco: np.random.SeedSequence) -> _Stimuli:
    """Scenes, their labels and captions, and the COCO-side fields of the stimulus table."""
    scenes = sample_scenes(n_images, seed=_seed_of(rng_scenes))
    caption_rng = np.random.default_rng(rng_scenes.spawn(1)[0])
    coco = np.random.default_rng(rng_coco)
    coco_ids = coco.choice(581929, size=n_images, replace=False) + 1
    is_val = coco.random(n_images) < val_fraction
    crop = coco.uniform(0.0, 0.2, n_images)
    return _Stimuli(
        scenes=scenes, labels=np.stack([scene_labels(s) for s in scenes]),
        captions=[scene_captions(s, caption_rng) for s in scenes],
        coco_ids=coco_ids, is_val=is_val, crop_boxes=[f"(0, 0, {c:.7g}, {c:.7g})" for c in crop],
        losses=np.where(crop > 0.1, coco.uniform(0, 0.1, n_images), 0.0))


def _write_stimuli(path: Path, scenes: list[Scene], image_size: int, view_size: int, progress: bool) -> np.ndarray:
    """Render the scenes chunk by chunk into ``nsd_stimuli.hdf5``; returns the model's view of them.

    Returns
    -------
    view : ndarray of shape (n_images, view_size, view_size, 3), uint8
        The images area-resampled to ``view_size`` (the rendered images when it is ``image_size``).
    """
    view = np.empty((len(scenes), view_size, view_size, 3), dtype=np.uint8)
    with nsd_writer.stimuli_writer(path, len(scenes), image_size) as brick:
        for start in tqdm(range(0, len(scenes), IMAGE_CHUNK), desc="render stimuli", unit="chunk",
                          disable=not progress):
            images = render_scenes(scenes[start:start + IMAGE_CHUNK], image_size)
            brick[start:start + len(images)] = images
            view[start:start + len(images)] = resample_images(images, view_size)
    return view


def _write_shared_files(paths: Mapping[str, Path], stimuli: _Stimuli, designs: Mapping[int, StudyDesign],
                        image_size: int) -> None:
    """Captions, experimental design (a ``subjectim`` row per subject) and stimulus table of the tree."""
    n_images = len(stimuli.scenes)
    next_id = 1
    for split, mask in (("train2017", ~stimuli.is_val), ("val2017", stimuli.is_val)):
        idx = np.nonzero(mask)[0]
        next_id = nsd_writer.write_captions(paths[f"captions_{split}"], stimuli.coco_ids[idx].tolist(),
                                            [stimuli.captions[i] for i in idx], image_size, next_id)
    first = designs[min(designs)]
    nsd_writer.write_expdesign(paths["expdesign"], first.masterordering,
                               np.stack([designs[k].subjectim for k in sorted(designs)]), first.sharedix)
    shared = np.zeros(n_images, dtype=bool)
    shared[first.sharedix - 1] = True
    nsd_writer.write_stim_info(
        paths["stim_info"], stimuli.coco_ids, np.where(stimuli.is_val, "val2017", "train2017").tolist(),
        shared, {k: np.ones(n_images, dtype=bool) for k in designs},
        {k: design.repetition_trials(n_images) for k, design in designs.items()},
        stimuli.crop_boxes, stimuli.losses)


def _write_subject_files(paths: Mapping[str, Path], number: int, design: StudyDesign, anatomy: SimulatedAnatomy,
                         seed: int) -> None:
    """A subject's behaviour (``responses.tsv``) and ROIs."""
    nsd_writer.write_responses(paths["responses"], number, design.masterordering, design.subjectim, seed=seed)
    nsd_writer.write_rois(paths, anatomy.brainmask, anatomy.nsdgeneral, anatomy.streams,
                          STREAM_LABELS, anatomy.affine)


def _simulate_subject(settings: _StudySettings, anatomy: SimulatedAnatomy, view: np.ndarray, labels: np.ndarray,
                      seed: int, scratch: Path, stack: contextlib.ExitStack, progress: bool
                      ) -> tuple[SimulatedSubject, np.ndarray | h5py.Dataset]:
    """Draw the subject and compute its noise-free responses to every image.

    Returns
    -------
    subject : SimulatedSubject
    signal : ndarray or h5py.Dataset of shape (n_images, n_voxels), float32
        In memory when the subject is standardised on every image; otherwise the standardisation
        images' responses then :data:`IMAGE_CHUNK` images at a time, into dataset ``signal`` of
        ``scratch`` (kept open by ``stack``).
    """
    options: dict[str, Any] = {"ncsnr": settings.ncsnr, "seed": seed, "model_size": settings.model_size}
    if not settings.streams_responses:
        return SimulatedSubject.sample(anatomy, view, labels, return_responses=True, **options)
    n_std = int(settings.standardise_images or 0)
    subject, first = SimulatedSubject.sample(anatomy, view[:n_std], labels[:n_std], return_responses=True,
                                             **options)
    signal = stack.enter_context(h5py.File(scratch, "w")).create_dataset(
        "signal", shape=(len(view), subject.n_voxels), dtype=np.float32)
    signal[:n_std] = first
    for start in tqdm(range(n_std, len(view), IMAGE_CHUNK), desc="simulate responses", unit="chunk",
                      disable=not progress):
        stop = start + IMAGE_CHUNK
        signal[start:stop] = subject.responses(view[start:stop], labels[start:stop])
    return subject, signal


def _signal_rows(signal: np.ndarray | h5py.Dataset, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` (any order, repeats allowed) of the signal, array of shape (len(ids), n_voxels)."""
    if isinstance(signal, np.ndarray):
        return signal[ids]
    unique, inverse = np.unique(ids, return_inverse=True)  # h5py reads increasing indices only
    return signal[unique][inverse]


@dataclass(frozen=True)
class _BrainNoise:
    """Where the brain voxels are and their noise model (see :func:`_write_betas`)."""

    ijk: np.ndarray  # (n_brain, 3) X, Y, Z of every brain voxel
    roi_of: np.ndarray  # (n_brain,) index of the voxel among the ROI voxels, -1 outside
    noise_sd: np.ndarray  # (n_brain,) single-trial noise sd, % signal change
    baseline: np.ndarray  # (n_brain,) flat response of voxels outside the ROIs

    def session_volume(self, rows: np.ndarray, offset: np.ndarray, rng: np.random.Generator,
                       shape: tuple[int, int, int]) -> np.ndarray:
        """One session's int16 betas in HDF5 order (n_trials, Z, Y, X), computed in blocks of trials.

        ``rows`` holds the noise-free ROI responses of the session's trials, in trial order.
        Noise is drawn block after block, the same numbers as one draw for the whole session.
        """
        n_brain = len(self.ijk)
        volume = np.zeros((len(rows), shape[2], shape[1], shape[0]), dtype=np.int16)
        in_roi = self.roi_of >= 0
        block = max(1, BETA_BLOCK_VALUES // n_brain)
        for start in range(0, len(rows), block):
            part = rows[start:start + block]
            clean = np.broadcast_to(self.baseline.astype(np.float32), (len(part), n_brain)).copy()
            clean[:, in_roi] = part[:, self.roi_of[in_roi]]
            betas = _session_betas(clean, self.noise_sd, offset, rng)
            volume[start:start + len(part), self.ijk[:, 2], self.ijk[:, 1], self.ijk[:, 0]] = _to_int16(betas)
        return volume


def _write_betas(paths: Mapping[str, Path], subject: SimulatedSubject, signal: np.ndarray | h5py.Dataset,
                 design: StudyDesign, noise_rng: np.random.Generator, *, session_offset: float,
                 nifti: bool, progress: bool) -> np.ndarray:
    """Write every session's betas (one session in memory at a time) and the ncsnr volume.

    ROI voxels carry signal; other brain voxels noise around a flat baseline.

    Returns
    -------
    roi_offsets : ndarray of shape (n_sessions, n_voxels)
        The session offsets of the ROI voxels (for the ground truth).
    """
    anatomy = subject.anatomy
    n_sessions = int(design.session.max())
    brain_ijk = np.argwhere(anatomy.brainmask)
    roi_index = np.full(anatomy.volume_shape, -1, dtype=np.int64)
    roi_index[tuple(anatomy.voxel_ijk.T)] = np.arange(subject.n_voxels)
    in_roi = roi_index[tuple(brain_ijk.T)]
    roi_noise = subject.noise_sd
    noise_sd = np.where(in_roi >= 0, roi_noise[np.maximum(in_roi, 0)], np.median(roi_noise))
    baseline = np.where(in_roi >= 0, 0.0, noise_rng.normal(0.5, 0.5, len(brain_ijk)))
    offsets = noise_rng.standard_normal((n_sessions, len(brain_ijk))) * session_offset * noise_sd
    brain = _BrainNoise(brain_ijk, in_roi, noise_sd, baseline)
    trial_ids = design.trial_ids
    for s in tqdm(range(n_sessions), desc="simulate sessions", disable=not progress):
        ids = trial_ids[s * TRIALS_PER_SESSION:(s + 1) * TRIALS_PER_SESSION]
        volume = brain.session_volume(_signal_rows(signal, ids), offsets[s], noise_rng, anatomy.volume_shape)
        nsd_writer.write_betas_session(paths["betas_dir"], s + 1, volume.transpose(3, 2, 1, 0), anatomy.affine,
                                       nifti=nifti)
        del volume
    ncsnr_volume = np.zeros(anatomy.volume_shape, dtype=np.float32)
    ncsnr_volume[tuple(anatomy.voxel_ijk.T)] = subject.ncsnr
    nsd_writer.write_ncsnr(paths["ncsnr"], ncsnr_volume, anatomy.affine)
    roi_offsets = np.zeros((n_sessions, subject.n_voxels))
    roi_offsets[:, in_roi[in_roi >= 0]] = offsets[:, in_roi >= 0]
    return roi_offsets


def simulate_study(out_dir: str | os.PathLike, *, preset: str | None = None, n_images: int | None = None,
                   n_shared: int | None = None, n_sessions: int | None = None, late_sessions: int | None = None,
                   late_shared: int | None = None, volume_shape: tuple[int, int, int] | None = None,
                   roi_sizes: Mapping[str, int] | None = None, image_size: int | None = None,
                   model_size: int | None = None, standardise_images: int | None = None,
                   ncsnr: float | None = None, session_offset: float | None = None,
                   val_fraction: float | None = None, nifti_betas: bool = False, seed: int = 0,
                   n_subjects: int = 1, progress: bool = True) -> SimulatedStudy:
    """Simulate subjects viewing procedural scenes and write an NSD tree plus the ground truth.

    Every size and noise argument left at None takes the preset's value, else
    :data:`DEFAULT_SETTINGS`'s (given in brackets below).

    Parameters
    ----------
    out_dir : path-like
        Output folder; the tree goes to ``<out_dir>/nsd`` and the truth to
        ``<out_dir>/simulation_truth.h5``.
    preset : {"demo", "nsd", "transfer"}, optional
        Named settings (:func:`preset_settings`); the arguments given override them.
    n_images : int
        Size of the simulated "73k" image space, all seen by the subject [1250].
    n_shared : int
        Shared test images, shown 3 times each [50].
    n_sessions : int
        Sessions of 750 trials [4].
    late_sessions, late_shared : int
        Late sessions and the shared images whose last repeats fall in them (see
        :func:`make_design`) [0, 0].
    volume_shape : (int, int, int)
        (X, Y, Z) of the functional volume (1.8 mm voxels) [(24, 30, 20)].
    roi_sizes : mapping of str to int
        Voxels per ``streams`` ROI [early 1500, ventral 1500, midventral 250, lateral 250].
    image_size : int
        Side of the square stimuli in pixels (even unless ``model_size`` is given) [64].
    model_size : int
        Side (even, at most ``image_size``) the model sees the images at, area-resampled
        [None: ``image_size``].
    standardise_images : int
        Standardise the subject's drives on the first this many images and compute its responses
        chunk by chunk [None: on all images, responses in memory].
    ncsnr : float
        Target median single-trial ncsnr (signal sd / noise sd) of the ROI voxels [0.4].
    session_offset : float
        sd of the per-voxel per-session offset, as a fraction of the voxel's noise sd [0.3].
    val_fraction : float
        Fraction of images given ``cocoSplit`` ``val2017`` [0.1].
    nifti_betas : bool
        Also write ``betas_sessionNN.nii.gz``.
    seed : int
        Seed of every random choice: same arguments and seed → byte-identical files.
    n_subjects : int
        Subjects ``subj01`` … ``subjNN`` (1..8) sharing the stimuli and ``masterordering``; subject 1 is
        the one-subject study's, the others differ in seed, tunings, ncsnr and ROI sizes (:mod:`.cohort`).
        Subject ``k`` ≥ 2's truth is ``<out_dir>/simulation_truth_subjXX.h5``.
    progress : bool
        Show progress bars.

    Returns
    -------
    SimulatedStudy
    """
    given = {"n_images": n_images, "n_shared": n_shared, "n_sessions": n_sessions, "late_sessions": late_sessions,
             "late_shared": late_shared, "volume_shape": volume_shape, "roi_sizes": roi_sizes,
             "image_size": image_size, "model_size": model_size, "standardise_images": standardise_images,
             "ncsnr": ncsnr, "session_offset": session_offset, "val_fraction": val_fraction}
    check_subject_count(n_subjects)
    settings = _resolve_settings(preset, seed, given)
    return _run_study(Path(out_dir).expanduser().resolve(), settings, n_subjects=n_subjects, nifti_betas=nifti_betas,
                      progress=progress)


def _subject_draws(settings: _StudySettings, streams: list[np.random.SeedSequence], n_subjects: int
                   ) -> list[SubjectDraw]:
    """Subject 1 from the study seed's streams, the others from their own seeds (:mod:`.cohort`)."""
    _, _, rng_anat, rng_subject, rng_noise, _, rng_behav = streams
    draws = [first_subject(settings.roi_sizes, settings.ncsnr, anatomy=rng_anat, tuning=rng_subject,
                           noise=rng_noise, behaviour=rng_behav)]
    draws += [other_subject(k, settings.seed, settings.roi_sizes, settings.ncsnr,
                            settings.n_images - settings.n_shared) for k in range(2, n_subjects + 1)]
    return draws


def _subject_design(design: StudyDesign, draw: SubjectDraw) -> StudyDesign:
    """The study design with the subject's own ``subjectim`` row."""
    return dataclasses.replace(design, subjectim=subject_images(design.subjectim, len(design.sharedix),
                                                                draw.image_order))


def _subject_settings(settings: _StudySettings, draw: SubjectDraw) -> _StudySettings:
    """The study's settings with the subject's ROI sizes and ncsnr."""
    return dataclasses.replace(settings, roi_sizes=draw.roi_sizes, ncsnr=draw.ncsnr)


def _simulate_one(out_dir: Path, paths: Mapping[str, Path], settings: _StudySettings, draw: SubjectDraw,
                  anatomy: SimulatedAnatomy, design: StudyDesign, stimuli: _Stimuli, view: np.ndarray, *,
                  n_subjects: int, nifti_betas: bool, progress: bool) -> Path:
    """One subject's responses, betas, behaviour and ROIs, and its ground truth; returns the truth's path."""
    own = _subject_settings(settings, draw)
    _write_subject_files(paths, draw.number, design, anatomy, seed=_seed_of(draw.behaviour))
    truth_path = out_dir / truth_file_name(draw.number)
    scratch = out_dir / ".simulation_signal.scratch.h5"
    attrs = own.truth_attrs(anatomy) | ({"subject": draw.number} if n_subjects > 1 else {})
    try:
        with contextlib.ExitStack() as stack:
            subject, signal = _simulate_subject(own, anatomy, view, stimuli.labels, _seed_of(draw.tuning),
                                                scratch, stack, progress)
            logger.info("subject %d: %d ROI voxels", draw.number, subject.n_voxels)
            roi_offsets = _write_betas(paths, subject, signal, design, np.random.default_rng(draw.noise),
                                       session_offset=own.session_offset, nifti=nifti_betas, progress=progress)
            write_truth(truth_path, subject=subject, signal=signal, labels=stimuli.labels,
                        scenes_json=json.dumps([s.to_dict() for s in stimuli.scenes]), coco_ids=stimuli.coco_ids,
                        design=design, session_offset=roi_offsets, attrs=attrs)
    finally:
        scratch.unlink(missing_ok=True)
    return truth_path


def _marker(settings: _StudySettings, draws: list[SubjectDraw]) -> dict[str, object]:
    """The tree's marker; with several subjects, each one's truth file, ROI sizes and ncsnr too."""
    marker = settings.marker()
    if len(draws) > 1:
        marker["subjects"] = {str(d.number): {"truth": f"../{truth_file_name(d.number)}", "roi_sizes": d.roi_sizes,
                                              "ncsnr_target": d.ncsnr} for d in draws}
    return marker


def _run_study(out_dir: Path, settings: _StudySettings, *, n_subjects: int = 1, nifti_betas: bool,
               progress: bool) -> SimulatedStudy:
    """Draw everything from ``settings.seed`` and write the tree and the truths (see simulate_study)."""
    start = time.perf_counter()
    nsd_root = out_dir / "nsd"
    streams = np.random.SeedSequence(settings.seed).spawn(7)
    rng_scenes, rng_design, _, _, _, rng_coco, _ = streams

    # Design first: it validates the sizes.
    design = make_design(settings.n_images, settings.n_shared, settings.n_sessions, seed=_seed_of(rng_design),
                         late_sessions=settings.late_sessions, late_shared=settings.late_shared)
    draws = _subject_draws(settings, streams, n_subjects)
    designs = {d.number: _subject_design(design, d) for d in draws}
    anatomies = {d.number: make_anatomy(settings.volume_shape, d.roi_sizes, seed=_seed_of(d.anatomy)) for d in draws}
    shared_paths = nsd_writer.nsd_paths(nsd_root, subject=1)
    stimuli = _draw_stimuli(settings.n_images, settings.val_fraction, rng_scenes, rng_coco)
    view = _write_stimuli(shared_paths["stimuli"], stimuli.scenes, settings.image_size, settings.view_size, progress)
    logger.info("rendered %d scenes", settings.n_images)
    _write_shared_files(shared_paths, stimuli, designs, settings.image_size)
    options: dict[str, Any] = {"n_subjects": n_subjects, "nifti_betas": nifti_betas, "progress": progress}
    truths = tuple(_simulate_one(out_dir, nsd_writer.nsd_paths(nsd_root, subject=d.number), settings, d,
                                 anatomies[d.number], designs[d.number], stimuli, view, **options)
                   for d in draws)
    nsd_writer.write_marker(nsd_root, _marker(settings, draws))
    logger.info("simulated study written to %s in %.1f s", out_dir, time.perf_counter() - start)
    return SimulatedStudy(out_dir=out_dir, nsd_root=nsd_root, truth_path=truths[0],
                          subjects=tuple(d.number for d in draws), truth_paths=truths)
