"""Simulate a lab's image experiment as a BIDS + fMRIPrep dataset, with its ground truth.

:func:`simulate_bids_study` draws the same procedural scenes (:mod:`.scenes`), subjects
(:mod:`.subject`, :mod:`.cohort`) as the NSD simulation, and an image experiment:

Design (:func:`make_bids_design`)
    ``n_test`` test images are shown 3 times each (in 3 different sessions, or 3 different runs when
    there are fewer than 3 sessions), every other image ``train_repeats`` times. With
    ``train_repeats = 1``, "images shown >= 2 times are test" recovers the split; the events also
    carry a ``trial_split`` column, which a study with repeated training images needs
    (``[source] split_column = "trial_split"``). The trials are
    split evenly over ``n_sessions`` × ``runs_per_session`` runs (at most ``trials_per_run`` each),
    shuffled within each session. A run: ``n_dummy`` dummy volumes, ``lead_in`` s of rest, trials of
    a 3 s image and a 1 s gap, ``rest`` s of rest at the end.

BOLD (:mod:`.bold`)
    The true single-trial response of an ROI voxel is the subject's noise-free response to the image
    plus trial-to-trial noise; other brain voxels respond the same to every image (a flat
    response) plus that noise. The run's time series is the HRF-convolved sum of the trials' responses
    plus drift, motion and physiological nuisance and AR(1) noise, on a baseline of about 1,000
    scanner units (0 outside the brain). The voxel's single-trial noise (``amplitude / ncsnr``, as for
    the NSD simulation) is what LSS betas should carry: :data:`TRIAL_NOISE_SHARE` of its variance is
    trial-to-trial noise, and the BOLD noise is scaled (:func:`bold_noise_sd`) so that LSS's estimation
    noise — the BOLD noise through the design, plus the part of the neighbouring trials' responses
    that leaks into each estimate with 3 s trials every 4 s — carries the rest.

Files: :mod:`.bids_writer`; the ground truth: :func:`write_bids_truth`.

NSD images (``nsd_study``, :mod:`.bids_nsd_images`)
    The study shows a simulated NSD study's images instead of new scenes: test images from its
    shared images, training images from the others (seeded), named in the events' ``nsd_id`` column
    (0-based 73k id). The design and every subject's draws are the same as without.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ...errors import InvalidArgumentError
from . import bids_writer as bw
from .bids_nsd_images import NSD_ID_COLUMN, NsdImages, open_nsd_study
from .bids_truth import write_bids_truth
from .bold import (
    RunTiming,
    VoxelNoise,
    confounds_table,
    motion_parameters,
    physio_signal,
    run_bold,
    trial_regressors,
)
from .cohort import SubjectDraw, check_subject_count, first_subject, other_subject
from .scenes import render_scenes, sample_scenes, scene_captions, scene_labels
from .subject import DEFAULT_ROI_SIZES, STREAM_LABELS, SimulatedAnatomy, SimulatedSubject, make_anatomy

__all__ = ["BIDS_DEMO_PRESET", "BIDS_PRESETS", "BidsDesign", "BidsTiming", "SimulatedBidsStudy", "TASK", "SPACE",
           "TEST_REPEATS", "TRIAL_NOISE_SHARE", "bold_noise_sd", "make_bids_design", "simulate_bids_study",
           "subject_label"]

logger = logging.getLogger(__name__)

#: BIDS task label and fMRIPrep space of the simulated study.
TASK = "images"
SPACE = "T1w"
#: Presentations of each test image.
TEST_REPEATS = 3
#: Share of a voxel's single-trial noise variance that is trial-to-trial (the rest: LSS estimation noise).
TRIAL_NOISE_SHARE = 0.4
#: sd of LSS's estimate of one trial's response per unit sd of the BOLD noise, and the fraction of the
#: trial-to-trial variance of the responses that leaks into each LSS estimate from its neighbours
#: (measured on the default timing: 3 s trials every 4 s, TR 2 s, AR(1) 0.4, cosine drift; the gain
#: includes the residual nuisance and the confounds' degrees of freedom).
LSS_NOISE_GAIN = 1.3
LSS_LEAK = 0.5
#: Least BOLD noise variance, as a fraction of the single-trial noise variance.
MIN_BOLD_SHARE = 0.05
#: Mean scanner value of brain voxels.
BASELINE = 1000.0
#: Images rendered and written at once.
IMAGE_CHUNK = 250

#: The ``demo`` preset (also the defaults): about the NSD demo's size — 1,850 images, 30 test images
#: shown 3 times, the others twice (3,730 trials; the NSD demo has 4,500), 6 sessions of 10 runs of
#: about 62 trials, a median single-trial ncsnr of 0.6 (LSS betas come out lower).
BIDS_DEMO_PRESET: dict[str, Any] = {
    "n_images": 1850, "n_test": 30, "n_sessions": 6, "runs_per_session": 10, "trials_per_run": 63, "train_repeats": 2,
    "volume_shape": (24, 30, 20), "roi_sizes": DEFAULT_ROI_SIZES, "image_size": 64, "tr": 2.0, "ncsnr": 0.6,
}
#: Preset names.
BIDS_PRESETS = ("demo",)


def subject_label(number: int) -> str:
    """BIDS label of subject ``number`` (``01``, ``02``, …)."""
    return f"{int(number):02d}"


@dataclass(frozen=True)
class BidsTiming:
    """Timing of every run (seconds)."""

    tr: float = 2.0
    n_dummy: int = 3
    lead_in: float = 4.0
    stimulus: float = 3.0
    gap: float = 1.0
    rest: float = 16.0

    def run_timing(self, n_trials: int) -> RunTiming:
        """The volumes and trial onsets of a run of ``n_trials`` trials."""
        onsets = self.n_dummy * self.tr + self.lead_in + np.arange(n_trials) * (self.stimulus + self.gap)
        end = (onsets[-1] if n_trials else self.n_dummy * self.tr) + self.stimulus + self.rest
        return RunTiming(n_volumes=int(np.ceil(end / self.tr - 1e-9)), tr=self.tr, onsets=onsets,
                         durations=np.full(n_trials, self.stimulus), n_dummy=self.n_dummy)


@dataclass(frozen=True)
class BidsDesign:
    """Every trial in scanning order.

    Attributes
    ----------
    image_id : ndarray of shape (n_trials,), int64
        0-based image id.
    session, run : ndarray of shape (n_trials,), int64
        1-based session, and run within the session.
    is_test : ndarray of shape (n_trials,), bool
        Trial of a test image.
    """

    image_id: np.ndarray
    session: np.ndarray
    run: np.ndarray
    is_test: np.ndarray

    def runs(self) -> list[tuple[int, int]]:
        """(session, run) of every run, in scanning order."""
        pairs = np.stack([self.session, self.run], axis=1)
        _, first = np.unique(pairs, axis=0, return_index=True)
        return [(int(s), int(r)) for s, r in pairs[np.sort(first)]]

    def run_trials(self, session: int, run: int) -> np.ndarray:
        """Indices of a run's trials, array of shape (n_run_trials,)."""
        return np.nonzero((self.session == session) & (self.run == run))[0]


def _n_trials(n_images: int, n_test: int, train_repeats: int) -> int:
    """Trials of the design: the test images 3 times, the others ``train_repeats`` times."""
    return (n_images - n_test) * train_repeats + TEST_REPEATS * n_test


def _check_design(n_images: int, n_test: int, n_sessions: int, runs_per_session: int, trials_per_run: int,
                  train_repeats: int = 1) -> None:
    """Refuse sizes :func:`make_bids_design` cannot arrange."""
    n_trials = _n_trials(n_images, n_test, train_repeats)
    n_runs = n_sessions * runs_per_session
    if n_test < 2 or n_images <= n_test:
        raise InvalidArgumentError(f"need n_test >= 2 and n_images > n_test, got n_images={n_images}, n_test={n_test}")
    if min(n_sessions, runs_per_session, trials_per_run, train_repeats) < 1:
        raise InvalidArgumentError(f"n_sessions, runs_per_session, trials_per_run and train_repeats must be >= 1, "
                                   f"got {n_sessions}, {runs_per_session}, {trials_per_run} and {train_repeats}")
    if n_sessions < TEST_REPEATS and n_runs < TEST_REPEATS:
        raise InvalidArgumentError(f"{n_runs} run(s) cannot show each test image {TEST_REPEATS} times in different "
                                   f"runs: use at least {TEST_REPEATS} runs")
    if not n_runs <= n_trials <= n_runs * trials_per_run:
        raise InvalidArgumentError(
            f"{n_trials} trials ({n_images} images, {n_test} of them shown {TEST_REPEATS} times, the others "
            f"{train_repeats}) do not fit "
            f"{n_runs} runs of 1 to {trials_per_run} trials: change n_images, n_sessions, runs_per_session "
            "or trials_per_run")


def make_bids_design(n_images: int, n_test: int, n_sessions: int, runs_per_session: int, trials_per_run: int,
                     seed: int = 0, train_repeats: int = 1) -> BidsDesign:
    """Draw the experiment's trial sequence (see the module docstring).

    Raises
    ------
    InvalidArgumentError
        When the sizes cannot be arranged.
    """
    _check_design(n_images, n_test, n_sessions, runs_per_session, trials_per_run, train_repeats)
    rng = np.random.default_rng(seed)
    n_runs = n_sessions * runs_per_session
    n_trials = _n_trials(n_images, n_test, train_repeats)
    run_sizes: np.ndarray = np.diff(np.round(np.linspace(0, n_trials, n_runs + 1)).astype(np.int64))
    by_session = n_sessions >= TEST_REPEATS
    unit_sizes = run_sizes.reshape(n_sessions, runs_per_session).sum(1) if by_session else run_sizes
    test = np.sort(rng.choice(n_images, size=n_test, replace=False))
    others = np.setdiff1d(np.arange(n_images), test)
    train = np.concatenate([rng.permutation(others) for _ in range(train_repeats)])  # each pass in a new order
    units = np.argsort(rng.random((n_test, len(unit_sizes))), axis=1)[:, :TEST_REPEATS]
    order, used = [], 0
    for unit, size in enumerate(unit_sizes.tolist()):
        shown = test[np.nonzero(units == unit)[0]]
        n_fill = size - len(shown)
        if n_fill < 0:
            raise InvalidArgumentError(f"{len(shown)} test trials do not fit a unit of {size} trials: use more "
                                       "runs or fewer test images")
        order.append(rng.permutation(np.concatenate([shown, train[used:used + n_fill]])))
        used += n_fill
    image_id = np.concatenate(order).astype(np.int64)
    run_index = np.repeat(np.arange(n_runs), run_sizes)
    return BidsDesign(image_id=image_id, session=run_index // runs_per_session + 1,
                      run=run_index % runs_per_session + 1, is_test=np.isin(image_id, test))


@dataclass(frozen=True)
class SimulatedBidsStudy:
    """Where a simulated BIDS study was written.

    Attributes
    ----------
    out_dir : Path
    bids_root : Path
        The raw BIDS dataset (``<out>/bids``).
    derivatives : Path
        The fMRIPrep-style derivatives (``<out>/bids/derivatives/fmriprep``).
    rois_dir : Path
        The ROI masks' dataset (``<out>/bids/derivatives/rois``).
    subjects : tuple of str
        Subject labels (``"01"``, …).
    task, space : str
        BIDS task label and fMRIPrep space.
    truth_paths : tuple of Path
        Each subject's ground truth (``simulation_truth.h5``, then ``simulation_truth_sub-XX.h5``).
    nsd_study : Path or None
        The simulated NSD study whose images the subjects saw (events column ``nsd_id``), if any.
    """

    out_dir: Path
    bids_root: Path
    derivatives: Path
    rois_dir: Path
    subjects: tuple[str, ...]
    task: str
    space: str
    truth_paths: tuple[Path, ...]
    nsd_study: Path | None = None


@dataclass(frozen=True)
class _Settings:
    """The arguments of :func:`simulate_bids_study` that shape the data."""

    seed: int
    n_images: int
    n_test: int
    n_sessions: int
    runs_per_session: int
    trials_per_run: int
    train_repeats: int
    volume_shape: tuple[int, int, int]
    roi_sizes: dict[str, int]
    image_size: int
    tr: float
    ncsnr: float

    @property
    def timing(self) -> BidsTiming:
        """The runs' timing."""
        return BidsTiming(tr=self.tr)

    def as_attrs(self) -> dict[str, object]:
        """The settings as HDF5 attributes."""
        values = dataclasses.asdict(self)
        values["volume_shape"] = list(self.volume_shape)
        values["roi_sizes"] = json.dumps(self.roi_sizes)
        return values


def _resolve(preset: str | None, seed: int, given: Mapping[str, Any]) -> _Settings:
    """The preset's settings (the defaults) under the arguments given (not None); validated."""
    if preset is not None and preset not in BIDS_PRESETS:
        raise InvalidArgumentError(f"preset must be one of {', '.join(BIDS_PRESETS)} for the bids format, "
                                   f"got {preset!r}")
    values = {**BIDS_DEMO_PRESET, **{key: value for key, value in given.items() if value is not None}}
    values["volume_shape"] = tuple(int(v) for v in values["volume_shape"])
    values["roi_sizes"] = dict(values["roi_sizes"])
    settings = _Settings(seed=int(seed), **values)
    if settings.tr <= 0 or settings.ncsnr <= 0 or settings.image_size < 8:
        raise InvalidArgumentError(f"tr and ncsnr must be > 0 and image_size >= 8, got tr={settings.tr}, "
                                   f"ncsnr={settings.ncsnr}, image_size={settings.image_size}")
    _check_design(settings.n_images, settings.n_test, settings.n_sessions, settings.runs_per_session,
                  settings.trials_per_run, settings.train_repeats)
    return settings


def _seed_of(sequence: np.random.SeedSequence) -> int:
    """An int seed drawn from a seed sequence."""
    return int(sequence.generate_state(1)[0])


@dataclass(frozen=True)
class _Stimuli:
    """The rendered images, their scene labels, captions and scenes (as JSON); with NSD images, their ids."""

    images: np.ndarray  # (n_images, S, S, 3) uint8
    labels: np.ndarray  # (n_images, n_labels)
    captions: list[list[str]]
    scenes_json: str
    nsd_ids: np.ndarray | None = None  # (n_images,) 0-based 73k id of each image (NSD images)
    model_size: int | None = None  # side the subjects see the images at (NSD images: the NSD study's)


def _write_stimuli(root: Path, n_images: int, image_size: int, rng_scenes: np.random.SeedSequence,
                   progress: bool) -> _Stimuli:
    """Draw and render the scenes; write their PNGs and ``captions.tsv``."""
    scenes = sample_scenes(n_images, seed=_seed_of(rng_scenes))
    caption_rng = np.random.default_rng(rng_scenes.spawn(1)[0])
    captions = [scene_captions(s, caption_rng) for s in scenes]
    images = np.empty((n_images, image_size, image_size, 3), dtype=np.uint8)
    for start in tqdm(range(0, n_images, IMAGE_CHUNK), desc="render stimuli", unit="chunk", disable=not progress):
        images[start:start + IMAGE_CHUNK] = render_scenes(scenes[start:start + IMAGE_CHUNK], image_size)
    for image_id, image in enumerate(images):
        bw.write_stimulus(root, image_id, image)
    bw.write_captions(root, captions)
    return _Stimuli(images, np.stack([scene_labels(s) for s in scenes]), captions,
                    json.dumps([s.to_dict() for s in scenes]))


def _write_nsd_stimuli(root: Path, nsd: NsdImages, nsd_ids: np.ndarray, progress: bool) -> _Stimuli:
    """Copy the NSD study's images of ``nsd_ids`` (image i of the BIDS study: ``nsd_ids[i]``) and their captions."""
    images = np.empty((len(nsd_ids), nsd.image_size, nsd.image_size, 3), dtype=np.uint8)
    for start in tqdm(range(0, len(nsd_ids), IMAGE_CHUNK), desc="copy NSD stimuli", unit="chunk",
                      disable=not progress):
        images[start:start + IMAGE_CHUNK] = nsd.images(nsd_ids[start:start + IMAGE_CHUNK])
    for image_id, image in enumerate(images):
        bw.write_stimulus(root, image_id, image)
    captions = nsd.captions(nsd_ids)
    bw.write_captions(root, captions)
    labels, scenes_json = nsd.labels_and_scenes(nsd_ids)
    return _Stimuli(images, labels, captions, scenes_json, nsd_ids=np.asarray(nsd_ids, dtype=np.int64),
                    model_size=nsd.model_size)


@dataclass(frozen=True)
class _Brain:
    """Every brain voxel's response and noise model (brain voxels in numpy.argwhere order)."""

    ijk: np.ndarray  # (n_brain, 3)
    roi_columns: np.ndarray  # (n_roi,) position among the brain voxels of each ROI voxel (subject order)
    flat: np.ndarray  # (n_brain,) response to every image of non-ROI voxels (0 in ROIs), % change
    trial_sd: np.ndarray  # (n_brain,) sd of the trial-to-trial noise, % change
    baseline: np.ndarray  # (n_brain,) mean scanner value
    noise: VoxelNoise

    @classmethod
    def draw(cls, subject: SimulatedSubject, rng: np.random.Generator) -> _Brain:
        """The subject's brain voxels, their baselines and noise (see the module docstring)."""
        anatomy = subject.anatomy
        ijk = np.argwhere(anatomy.brainmask)
        position = np.full(anatomy.volume_shape, -1, dtype=np.int64)
        position[tuple(ijk.T)] = np.arange(len(ijk))
        roi_columns = position[tuple(anatomy.voxel_ijk.T)]
        noise_sd = np.full(len(ijk), float(np.median(subject.noise_sd)))
        noise_sd[roi_columns] = subject.noise_sd
        flat = rng.normal(0.5, 0.5, len(ijk))
        flat[roi_columns] = 0.0
        n = len(ijk)
        signal_sd = np.zeros(len(ijk))
        signal_sd[roi_columns] = subject.amplitude
        noise = VoxelNoise(noise_sd=bold_noise_sd(noise_sd, signal_sd), ar=0.4,
                           drift_sd=rng.uniform(0.3, 1.0, n), motion_loading=rng.normal(0.0, 0.3, (n, 6)),
                           physio_loading=rng.normal(0.0, 0.3, n))
        return cls(ijk, roi_columns, flat, np.sqrt(TRIAL_NOISE_SHARE) * noise_sd,
                   BASELINE * rng.lognormal(0.0, 0.1, n), noise)

    def trial_responses(self, roi_signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """True single-trial responses of every brain voxel, array of shape (n_trials, n_brain), float32.

        ``roi_signal`` (n_trials, n_roi) holds the noise-free ROI responses to the trials' images.
        """
        out: np.ndarray = np.broadcast_to(self.flat.astype(np.float32), (len(roi_signal), len(self.ijk))).copy()
        out[:, self.roi_columns] = roi_signal
        return out + rng.standard_normal(out.shape, dtype=np.float32) * self.trial_sd.astype(np.float32)

    def volume(self, values: np.ndarray, shape: tuple[int, int, int], dtype: type) -> np.ndarray:
        """Brain voxels' series (n_volumes, n_brain) as a 4-D array (X, Y, Z, n_volumes), 0 outside."""
        out: np.ndarray = np.zeros((*shape, len(values)), dtype=dtype)
        out[self.ijk[:, 0], self.ijk[:, 1], self.ijk[:, 2]] = values.T
        return out


def bold_noise_sd(noise_sd: np.ndarray, signal_sd: np.ndarray) -> np.ndarray:
    """The sd of the BOLD noise (% change) that gives LSS betas a single-trial noise sd of ``noise_sd``.

    LSS noise variance = trial noise + :data:`LSS_LEAK` × (signal + trial noise) variance +
    (:data:`LSS_NOISE_GAIN` × BOLD noise sd)²; solved for the BOLD noise, at least
    :data:`MIN_BOLD_SHARE` of ``noise_sd``'s variance.

    Parameters
    ----------
    noise_sd, signal_sd : ndarray of shape (n_voxels,)
        Target single-trial noise sd and the signal sd of each voxel (% change).
    """
    trial = TRIAL_NOISE_SHARE * noise_sd**2
    rest = noise_sd**2 - trial - LSS_LEAK * (signal_sd**2 + trial)
    return np.sqrt(np.maximum(rest, MIN_BOLD_SHARE * noise_sd**2)) / LSS_NOISE_GAIN


def _events(design: BidsDesign, trials: np.ndarray, timing: RunTiming, nsd_ids: np.ndarray | None = None
            ) -> pd.DataFrame:
    """A run's events table (with NSD images, a last column ``nsd_id``)."""
    ids = design.image_id[trials]
    table = pd.DataFrame({
        "onset": timing.onsets, "duration": timing.durations, "trial_type": "image",
        "stim_file": [bw.stim_file(i) for i in ids.tolist()], "stim_id": ids,
        "trial_split": np.where(design.is_test[trials], "test", "train")})
    if nsd_ids is not None:
        table[NSD_ID_COLUMN] = nsd_ids[ids]
    return table


def _to_int16(values: np.ndarray) -> np.ndarray:
    """Scanner values rounded into int16."""
    info = np.iinfo(np.int16)
    return np.clip(np.round(values), info.min, info.max).astype(np.int16)


@dataclass(frozen=True)
class _SubjectRun:
    """What one run of one subject needs besides its random draws."""

    paths: bw.RunFiles
    trials: np.ndarray
    timing: RunTiming
    nsd_ids: np.ndarray | None = None


def _write_run(run: _SubjectRun, design: BidsDesign, brain: _Brain, signal: np.ndarray,
               anatomy: SimulatedAnatomy, rngs: tuple[np.random.Generator, np.random.Generator]) -> np.ndarray:
    """Synthesise and write one run; returns its ROI voxels' true responses (n_run_trials, n_roi)."""
    noise_rng, nuisance_rng = rngs
    timing = run.timing
    responses = brain.trial_responses(signal[design.image_id[run.trials]], noise_rng)
    motion = motion_parameters(timing.n_volumes, nuisance_rng)
    physio = physio_signal(timing.n_volumes, nuisance_rng)
    bold = run_bold(brain.baseline, responses, trial_regressors(timing), motion, physio, brain.noise,
                    timing.n_dummy, noise_rng)
    shape = anatomy.volume_shape
    bw.save_nifti(run.paths.bold, brain.volume(_to_int16(bold), shape, np.int16), anatomy.affine, tr=timing.tr,
                  level=1)
    bw.save_nifti(run.paths.preproc, brain.volume(bold, shape, np.float32), anatomy.affine, tr=timing.tr, level=1)
    bw.write_json(run.paths.preproc_json, {"RepetitionTime": timing.tr, "TaskName": TASK, "SkullStripped": False})
    bw.save_nifti(run.paths.mask, anatomy.brainmask.astype(np.uint8), anatomy.affine)
    bw.write_events(run.paths.events, _events(design, run.trials, timing, run.nsd_ids))
    bw.write_confounds(run.paths, confounds_table(motion, physio, timing.n_dummy, nuisance_rng))
    return responses[:, brain.roi_columns]


def _write_roi_masks(rois_dir: Path, label: str, anatomy: SimulatedAnatomy) -> None:
    """The subject's ROI masks, and ``visual`` (their union)."""
    value_of = {name: value for value, name in STREAM_LABELS.items()}
    names = [name for name in ("early", "ventral", "midventral", "lateral")
             if (anatomy.streams == value_of[name]).any()]
    for name in names:
        mask = (anatomy.streams == value_of[name]).astype(np.uint8)
        bw.save_nifti(bw.roi_mask_path(rois_dir, label, name, SPACE), mask, anatomy.affine)
    bw.save_nifti(bw.roi_mask_path(rois_dir, label, "visual", SPACE), (anatomy.streams > 0).astype(np.uint8),
                  anatomy.affine)


def _simulate_subject(study: SimulatedBidsStudy, settings: _Settings, draw: SubjectDraw, anatomy: SimulatedAnatomy,
                      design: BidsDesign, stimuli: _Stimuli, progress: bool) -> Path:
    """One subject's runs, ROI masks and ground truth; returns the truth's path."""
    label = subject_label(draw.number)
    subject, signal = SimulatedSubject.sample(anatomy, stimuli.images, stimuli.labels, ncsnr=draw.ncsnr,
                                              seed=_seed_of(draw.tuning), model_size=stimuli.model_size,
                                              return_responses=True)
    noise_rng, nuisance_rng = np.random.default_rng(draw.noise), np.random.default_rng(draw.behaviour)
    brain = _Brain.draw(subject, noise_rng)
    _write_roi_masks(study.rois_dir, label, anatomy)
    responses = np.empty((len(design.image_id), subject.n_voxels), dtype=np.float32)
    onsets = np.empty(len(design.image_id))
    for session, run in tqdm(design.runs(), desc=f"simulate sub-{label} runs", disable=not progress):
        trials = design.run_trials(session, run)
        paths = bw.run_files(study.bids_root, study.derivatives, label, session, run, TASK, SPACE)
        job = _SubjectRun(paths, trials, settings.timing.run_timing(len(trials)), stimuli.nsd_ids)
        responses[trials] = _write_run(job, design, brain, signal, anatomy, (noise_rng, nuisance_rng))
        onsets[trials] = job.timing.onsets
    path = study.out_dir / _truth_name(draw.number)
    nsd = {} if study.nsd_study is None else {"nsd_study": str(study.nsd_study)}
    write_bids_truth(path, subject=subject, signal=signal, responses=responses, design=design, onsets=onsets,
                     labels=stimuli.labels, scenes_json=stimuli.scenes_json, nsd_ids=stimuli.nsd_ids,
                     attrs={**settings.as_attrs(), "subject": label, "task": TASK, "space": SPACE,
                            "ncsnr_target": draw.ncsnr, **nsd})
    return path


def _truth_name(number: int) -> str:
    """``simulation_truth.h5`` (subject 1), ``simulation_truth_sub-XX.h5``."""
    return "simulation_truth.h5" if number == 1 else f"simulation_truth_sub-{subject_label(number)}.h5"


def _write_datasets(study: SimulatedBidsStudy, settings: _Settings) -> None:
    """The three datasets' descriptions and the raw dataset's root files."""
    root = study.bids_root
    bw.write_dataset_description(root, "brain2image simulated image experiment", "raw",
                                 "Simulated subjects viewing procedural scenes")
    bw.write_dataset_description(study.derivatives, "fMRIPrep-style derivatives (simulated)", "derivative",
                                 "Preprocessed BOLD, brain masks and confounds, as fMRIPrep writes them")
    bw.write_dataset_description(study.rois_dir, "Simulated ROI masks", "derivative",
                                 "Visual ROIs of the simulated subjects (early, ventral, midventral, lateral, visual)")
    bw.write_participants(root, study.subjects)
    bw.write_task_sidecar(root, TASK, settings.tr)
    nsd = "" if study.nsd_study is None else (f" The images are those of the simulated NSD study {study.nsd_study}; "
                                              f"the events' {NSD_ID_COLUMN} column holds each one's 0-based 73k id.")
    bw.write_readme(root, f"Simulated image experiment written by `brain2image simulate --format bids` (seed "
                    f"{settings.seed}): {settings.n_images} images, {settings.n_test} test images shown "
                    f"{TEST_REPEATS} times. Stimuli in stimuli/images, captions in stimuli/captions.tsv; the true "
                    f"single-trial responses are in simulation_truth.h5 beside this folder.{nsd}")


def _subject_draws(settings: _Settings, streams: list[np.random.SeedSequence], n_subjects: int
                   ) -> list[SubjectDraw]:
    """Subject 1 from the study seed's streams, the others from their own seeds (:mod:`.cohort`)."""
    _, _, anatomy, tuning, noise, behaviour = streams
    draws = [first_subject(settings.roi_sizes, settings.ncsnr, anatomy=anatomy, tuning=tuning, noise=noise,
                           behaviour=behaviour)]
    return draws + [other_subject(k, settings.seed, settings.roi_sizes, settings.ncsnr,
                                  settings.n_images - settings.n_test) for k in range(2, n_subjects + 1)]


def simulate_bids_study(out_dir: str | os.PathLike, *, preset: str | None = None, n_images: int | None = None,
                        n_test: int | None = None, n_sessions: int | None = None,
                        runs_per_session: int | None = None, trials_per_run: int | None = None,
                        train_repeats: int | None = None,
                        volume_shape: tuple[int, int, int] | None = None, roi_sizes: Mapping[str, int] | None = None,
                        image_size: int | None = None, tr: float | None = None, ncsnr: float | None = None,
                        seed: int = 0, n_subjects: int = 1, nsd_study: str | os.PathLike | None = None,
                        progress: bool = True) -> SimulatedBidsStudy:
    """Simulate subjects in an image experiment; write it as BIDS + fMRIPrep derivatives plus the ground truth.

    Every size left at None takes the ``demo`` preset's value (:data:`BIDS_DEMO_PRESET`, in brackets).

    Parameters
    ----------
    out_dir : path-like
        Output folder: ``<out>/bids`` and ``<out>/simulation_truth.h5``.
    preset : {"demo"}, optional
        Named settings (the defaults).
    n_images, n_test : int
        Images [1850], of which test images shown 3 times each [30]; the others ``train_repeats`` times.
    n_sessions, runs_per_session, trials_per_run : int
        Sessions [6], runs per session [10], most trials per run [63].
    train_repeats : int
        Presentations of each training image, in different passes over them [2]; above 1, the split is
        the events' ``trial_split`` column (``[source] split_column``).
    volume_shape : (int, int, int)
        (X, Y, Z) of the functional volume (1.8 mm voxels) [(24, 30, 20)].
    roi_sizes : mapping of str to int
        Voxels per ROI [early 1500, ventral 1500, midventral 250, lateral 250].
    image_size : int
        Side of the stimulus PNGs [64].
    tr : float
        Repetition time, s [2.0].
    ncsnr : float
        Target median single-trial ncsnr of the ROI voxels [0.6].
    seed : int
        Same arguments and seed → byte-identical files.
    n_subjects : int
        Subjects ``01`` … (1..8), sharing the stimuli and the design (:mod:`.cohort`).
    nsd_study : path-like, optional
        A folder written by :func:`~.study.simulate_study` (``nsd/``, ``simulation_truth.h5``): the
        subjects see its images instead of new scenes — test images drawn from its shared images,
        training images from the others (seeded) — at its image side (``image_size`` must be None or
        equal), and the events get a column ``nsd_id`` (0-based 73k id) (:mod:`.bids_nsd_images`).
    progress : bool

    Returns
    -------
    SimulatedBidsStudy
    """
    given = {"n_images": n_images, "n_test": n_test, "n_sessions": n_sessions, "runs_per_session": runs_per_session,
             "trials_per_run": trials_per_run, "train_repeats": train_repeats, "volume_shape": volume_shape,
             "roi_sizes": roi_sizes, "image_size": image_size, "tr": tr, "ncsnr": ncsnr}
    check_subject_count(n_subjects)
    nsd = None if nsd_study is None else open_nsd_study(nsd_study)
    if nsd is not None:
        given["image_size"] = nsd.size_for(image_size)
    settings = _resolve(preset, seed, given)
    if nsd is not None:
        nsd.check_fit(settings.n_images, settings.n_test)
    return _run(Path(out_dir).expanduser().resolve(), settings, n_subjects, progress, nsd)


def _nsd_seed(seed: int) -> int:
    """The seed of the NSD images' choice: a seventh stream of the study seed (the six others are unchanged)."""
    return _seed_of(np.random.SeedSequence(seed).spawn(7)[6])


def _run(out_dir: Path, settings: _Settings, n_subjects: int, progress: bool,
         nsd: NsdImages | None = None) -> SimulatedBidsStudy:
    """Draw everything from ``settings.seed`` and write the study (see :func:`simulate_bids_study`)."""
    start = time.perf_counter()
    streams = np.random.SeedSequence(settings.seed).spawn(6)
    design = make_bids_design(settings.n_images, settings.n_test, settings.n_sessions, settings.runs_per_session,
                              settings.trials_per_run, seed=_seed_of(streams[1]), train_repeats=settings.train_repeats)
    draws = _subject_draws(settings, streams, n_subjects)
    anatomies = [make_anatomy(settings.volume_shape, d.roi_sizes, seed=_seed_of(d.anatomy)) for d in draws]
    root = out_dir / "bids"
    study = SimulatedBidsStudy(out_dir=out_dir, bids_root=root, derivatives=root / "derivatives" / "fmriprep",
                               rois_dir=root / "derivatives" / "rois",
                               subjects=tuple(subject_label(d.number) for d in draws), task=TASK, space=SPACE,
                               truth_paths=(), nsd_study=None if nsd is None else nsd.study)
    _write_datasets(study, settings)
    if nsd is None:
        stimuli = _write_stimuli(root, settings.n_images, settings.image_size, streams[0], progress)
    else:
        nsd_ids = nsd.choose(design.image_id[design.is_test], settings.n_images, _nsd_seed(settings.seed))
        stimuli = _write_nsd_stimuli(root, nsd, nsd_ids, progress)
    truths = tuple(_simulate_subject(study, settings, d, a, design, stimuli, progress)
                   for d, a in zip(draws, anatomies))
    logger.info("simulated BIDS study written to %s in %.1f s", out_dir, time.perf_counter() - start)
    return dataclasses.replace(study, truth_paths=truths)
