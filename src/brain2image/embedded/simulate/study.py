"""Simulate a whole NSD-like study: design, stimuli, the subject's betas, and the ground truth.

:func:`simulate_study` draws procedural scenes (:mod:`.scenes`), a subject
(:mod:`.subject`) and an NSD-like trial sequence, and writes

* ``<out>/nsd/``: an NSD tree (:mod:`.nsd_writer`) that the real-NSD reader opens unchanged;
* ``<out>/simulation_truth.h5``: what the decoders should recover (see :func:`write_truth`).

Design (as in NSD, scaled down): one subject (``subj01``) sees every image of the simulated
"73k" space; ``n_shared`` images (the "shared1000") are shown 3 times each, in 3 different
sessions when there are at least 3; every other image 1–3 times so that the sessions hold
exactly 750 trials; trial order within a session is random.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from ... import __version__
from ..._io import atomic_path
from ...errors import InvalidArgumentError
from . import nsd_writer
from .nsd_writer import BETA_SCALE, TRIALS_PER_SESSION
from .scenes import Scene, label_names, render_scenes, sample_scenes, scene_captions, scene_labels
from .subject import (
    CHANNELS,
    DEFAULT_ROI_SIZES,
    STREAM_LABELS,
    SimulatedAnatomy,
    SimulatedSubject,
    make_anatomy,
)

__all__ = ["SimulatedStudy", "StudyDesign", "make_design", "simulate_study", "write_truth"]

logger = logging.getLogger(__name__)

#: Presentations of each shared (test) image.
SHARED_REPEATS = 3
#: The most presentations of a training image.
MAX_TRAIN_REPEATS = 3


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
        The simulated subject's number (1).
    """

    out_dir: Path
    nsd_root: Path
    truth_path: Path
    subject: int = 1


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


def make_design(n_images: int, n_shared: int, n_sessions: int, seed: int = 0) -> StudyDesign:
    """Draw an NSD-like design (see the module docstring).

    Raises
    ------
    ValueError
        When the sizes cannot make whole 750-trial sessions with 3 presentations per shared
        image and 1–3 per other image.
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
    shared = np.sort(rng.choice(n_images, size=n_shared, replace=False))
    rest = np.setdiff1d(np.arange(n_images), shared)
    subjectim = np.concatenate([shared, rest]) + 1
    # Shared images: each repeat in its own session (when there are enough sessions).
    if n_sessions >= SHARED_REPEATS:
        shared_sessions = np.argsort(rng.random((n_shared, n_sessions)), axis=1)[:, :SHARED_REPEATS]
    else:
        shared_sessions = rng.integers(0, n_sessions, size=(n_shared, SHARED_REPEATS))
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


def write_truth(path: str | os.PathLike, *, subject: SimulatedSubject, signal: np.ndarray,
                labels: np.ndarray, scenes_json: str, coco_ids: np.ndarray,
                design: StudyDesign, session_offset: np.ndarray, attrs: Mapping) -> None:
    """Write the ground truth of a simulated study.

    Layout::

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
    volume_shape: tuple[int, int, int]
    roi_sizes: dict[str, int]
    image_size: int
    ncsnr: float
    session_offset: float
    val_fraction: float

    def truth_attrs(self, anatomy: SimulatedAnatomy) -> dict[str, object]:
        """The ``simulation_truth.h5`` attributes of these settings."""
        return {"seed": self.seed, "n_images": self.n_images, "n_shared": self.n_shared,
                "n_sessions": self.n_sessions, "volume_shape": list(anatomy.volume_shape),
                "roi_sizes": json.dumps(self.roi_sizes), "image_size": self.image_size,
                "ncsnr_target": self.ncsnr, "session_offset": self.session_offset,
                "val_fraction": self.val_fraction}


def _seed_of(sequence: np.random.SeedSequence) -> int:
    """An int seed drawn from one of the study's seed sequences."""
    return int(sequence.generate_state(1)[0])


@dataclass(frozen=True)
class _Stimuli:
    """The study's images and what the NSD tree says about them (index = 0-based 73k id)."""

    scenes: list[Scene]
    images: np.ndarray
    labels: np.ndarray
    captions: list[list[str]]
    coco_ids: np.ndarray
    is_val: np.ndarray
    crop_boxes: list[str]
    losses: np.ndarray


def _draw_stimuli(n_images: int, image_size: int, val_fraction: float, rng_scenes: np.random.SeedSequence,
                  rng_coco: np.random.SeedSequence) -> _Stimuli:
    """Scenes, their images, labels and captions, and the COCO-side fields of the stimulus table."""
    scenes = sample_scenes(n_images, seed=_seed_of(rng_scenes))
    caption_rng = np.random.default_rng(rng_scenes.spawn(1)[0])
    coco = np.random.default_rng(rng_coco)
    coco_ids = coco.choice(581929, size=n_images, replace=False) + 1
    is_val = coco.random(n_images) < val_fraction
    crop = coco.uniform(0.0, 0.2, n_images)
    return _Stimuli(
        scenes=scenes, images=render_scenes(scenes, image_size),
        labels=np.stack([scene_labels(s) for s in scenes]),
        captions=[scene_captions(s, caption_rng) for s in scenes],
        coco_ids=coco_ids, is_val=is_val, crop_boxes=[f"(0, 0, {c:.7g}, {c:.7g})" for c in crop],
        losses=np.where(crop > 0.1, coco.uniform(0, 0.1, n_images), 0.0))


def _write_design_files(paths: Mapping[str, Path], stimuli: _Stimuli, design: StudyDesign,
                        anatomy: SimulatedAnatomy, seed: int) -> None:
    """Stimuli, captions, experimental design, stimulus table, behaviour and ROIs of the tree."""
    n_images = len(stimuli.images)
    nsd_writer.write_stimuli(paths["stimuli"], stimuli.images)
    next_id = 1
    for split, mask in (("train2017", ~stimuli.is_val), ("val2017", stimuli.is_val)):
        idx = np.nonzero(mask)[0]
        next_id = nsd_writer.write_captions(paths[f"captions_{split}"], stimuli.coco_ids[idx].tolist(),
                                            [stimuli.captions[i] for i in idx], stimuli.images.shape[1],
                                            next_id)
    nsd_writer.write_expdesign(paths["expdesign"], design.masterordering,
                               design.subjectim[None, :], design.sharedix)
    shared = np.zeros(n_images, dtype=bool)
    shared[design.sharedix - 1] = True
    nsd_writer.write_stim_info(
        paths["stim_info"], stimuli.coco_ids, np.where(stimuli.is_val, "val2017", "train2017").tolist(),
        shared, {1: np.ones(n_images, dtype=bool)}, {1: design.repetition_trials(n_images)},
        stimuli.crop_boxes, stimuli.losses)
    nsd_writer.write_responses(paths["responses"], 1, design.masterordering, design.subjectim, seed=seed)
    nsd_writer.write_rois(paths, anatomy.brainmask, anatomy.nsdgeneral, anatomy.streams,
                          STREAM_LABELS, anatomy.affine)


def _write_betas(paths: Mapping[str, Path], subject: SimulatedSubject, signal: np.ndarray,
                 design: StudyDesign, noise_rng: np.random.Generator, *, session_offset: float,
                 nifti: bool, progress: bool) -> np.ndarray:
    """Write every session's betas and the ncsnr volume.

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
    trial_ids = design.trial_ids
    for s in tqdm(range(n_sessions), desc="simulate sessions", disable=not progress):
        ids = trial_ids[s * TRIALS_PER_SESSION:(s + 1) * TRIALS_PER_SESSION]
        clean = np.broadcast_to(baseline.astype(np.float32), (len(ids), len(brain_ijk))).copy()
        clean[:, in_roi >= 0] = signal[ids][:, in_roi[in_roi >= 0]]
        betas = _session_betas(clean, noise_sd, offsets[s], noise_rng)
        volume = np.zeros((*anatomy.volume_shape, len(ids)), dtype=np.int16)
        volume[tuple(brain_ijk.T)] = _to_int16(betas).T
        nsd_writer.write_betas_session(paths["betas_dir"], s + 1, volume, anatomy.affine, nifti=nifti)
    ncsnr_volume = np.zeros(anatomy.volume_shape, dtype=np.float32)
    ncsnr_volume[tuple(anatomy.voxel_ijk.T)] = subject.ncsnr
    nsd_writer.write_ncsnr(paths["ncsnr"], ncsnr_volume, anatomy.affine)
    roi_offsets = np.zeros((n_sessions, subject.n_voxels))
    roi_offsets[:, in_roi[in_roi >= 0]] = offsets[:, in_roi >= 0]
    return roi_offsets


def simulate_study(out_dir: str | os.PathLike, *, n_images: int = 1250, n_shared: int = 50,
                   n_sessions: int = 4, volume_shape: tuple[int, int, int] = (24, 30, 20),
                   roi_sizes: Mapping[str, int] | None = None, image_size: int = 64,
                   ncsnr: float = 0.4, session_offset: float = 0.3, val_fraction: float = 0.1,
                   nifti_betas: bool = False, seed: int = 0,
                   progress: bool = True) -> SimulatedStudy:
    """Simulate a subject viewing procedural scenes and write an NSD tree plus the ground truth.

    Parameters
    ----------
    out_dir : path-like
        Output folder; the tree goes to ``<out_dir>/nsd`` and the truth to
        ``<out_dir>/simulation_truth.h5``.
    n_images : int
        Size of the simulated "73k" image space (all seen by the subject).
    n_shared : int
        Shared test images, shown 3 times each.
    n_sessions : int
        Sessions of 750 trials.
    volume_shape : (int, int, int)
        (X, Y, Z) of the functional volume (1.8 mm voxels).
    roi_sizes : mapping of str to int, optional
        Voxels per ``streams`` ROI (default: early 1500, ventral 1500, midventral 250,
        lateral 250).
    image_size : int
        Side of the square stimuli in pixels (even).
    ncsnr : float
        Target median single-trial ncsnr (signal sd / noise sd) of the ROI voxels.
    session_offset : float
        sd of the per-voxel per-session offset, as a fraction of the voxel's noise sd.
    val_fraction : float
        Fraction of images given ``cocoSplit`` ``val2017``.
    nifti_betas : bool
        Also write ``betas_sessionNN.nii.gz``.
    seed : int
        Seed of every random choice: same arguments and seed → byte-identical files.
    progress : bool
        Show a progress bar over the sessions.

    Returns
    -------
    SimulatedStudy
    """
    if image_size % 2:
        raise InvalidArgumentError(f"image_size must be even, got {image_size}")
    settings = _StudySettings(
        seed=seed, n_images=n_images, n_shared=n_shared, n_sessions=n_sessions, volume_shape=volume_shape,
        roi_sizes=dict(DEFAULT_ROI_SIZES if roi_sizes is None else roi_sizes), image_size=image_size,
        ncsnr=ncsnr, session_offset=session_offset, val_fraction=val_fraction)
    return _run_study(Path(out_dir).expanduser().resolve(), settings, nifti_betas=nifti_betas, progress=progress)


def _run_study(out_dir: Path, settings: _StudySettings, *, nifti_betas: bool, progress: bool) -> SimulatedStudy:
    """Draw everything from ``settings.seed`` and write the tree and the truth (see simulate_study)."""
    start = time.perf_counter()
    nsd_root = out_dir / "nsd"
    paths = nsd_writer.nsd_paths(nsd_root, subject=1)
    streams = np.random.SeedSequence(settings.seed).spawn(7)
    rng_scenes, rng_design, rng_anat, rng_subject, rng_noise, rng_coco, rng_behav = streams

    # Design first: it validates the sizes.
    design = make_design(settings.n_images, settings.n_shared, settings.n_sessions, seed=_seed_of(rng_design))
    stimuli = _draw_stimuli(settings.n_images, settings.image_size, settings.val_fraction, rng_scenes, rng_coco)
    logger.info("rendered %d scenes", settings.n_images)
    anatomy = make_anatomy(settings.volume_shape, settings.roi_sizes, seed=_seed_of(rng_anat))
    subject, signal = SimulatedSubject.sample(
        anatomy, stimuli.images, stimuli.labels, ncsnr=settings.ncsnr, seed=_seed_of(rng_subject),
        return_responses=True)
    logger.info("subject: %d ROI voxels", subject.n_voxels)

    _write_design_files(paths, stimuli, design, anatomy, seed=_seed_of(rng_behav))
    roi_offsets = _write_betas(paths, subject, signal, design, np.random.default_rng(rng_noise),
                               session_offset=settings.session_offset, nifti=nifti_betas, progress=progress)
    truth_path = out_dir / "simulation_truth.h5"
    write_truth(truth_path, subject=subject, signal=signal, labels=stimuli.labels,
                scenes_json=json.dumps([s.to_dict() for s in stimuli.scenes]), coco_ids=stimuli.coco_ids,
                design=design, session_offset=roi_offsets, attrs=settings.truth_attrs(anatomy))
    logger.info("simulated study written to %s in %.1f s", out_dir, time.perf_counter() - start)
    return SimulatedStudy(out_dir=out_dir, nsd_root=nsd_root, truth_path=truth_path)
