"""Write tiny BIDS + fMRIPrep trees (real layout, tiny sizes) from known single-trial responses, for the bids tests.

Independent of ``brain2image.embedded.simulate``: every file is written here with nibabel / pandas /
Pillow, and the BOLD is built with nilearn's own design matrix, so the betas the source estimates can
be compared with the responses written. ``broken`` names one thing to break (see :data:`BREAKS`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix
from PIL import Image

__all__ = ["BREAKS", "BidsTree", "write_bids_tree"]

#: What ``broken`` can break, one at a time (always in the last run of the last session of sub-01, or globally).
BREAKS = ("events_without_bold", "bold_without_events", "unknown_stim", "no_tr", "mask_grid", "missing_confound",
          "nan_volume", "same_onset", "no_repeats", "no_captions", "no_onset_column")
TASK, SPACE = "images", "T1w"
SHAPE = (5, 4, 3)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
TR = 1.0
DUMMY = 2
SPACING = 10.0
MOTION = [f"{a}_{x}" for a in ("trans", "rot") for x in "xyz"]


@dataclass
class BidsTree:
    """What was written: paths, and the truth in scanning order (sessions, then runs, then trials).

    ``responses`` is float32 (n_trials, n_brain) at the brain voxels ``np.argwhere(brain)``; ``image_ids``
    the 0-based id of each trial (the sorted file names of ``stimuli/``).
    """

    root: Path
    derivatives: Path
    subjects: list[str]
    sessions: list[str]
    runs: int
    trials: int
    brain: np.ndarray
    signal: np.ndarray
    masks: dict[str, Path]
    responses: dict[str, np.ndarray] = field(default_factory=dict)
    image_ids: dict[str, np.ndarray] = field(default_factory=dict)
    trial_session: dict[str, np.ndarray] = field(default_factory=dict)

    def func(self, subject: str, session: str, run: int, suffix: str, derivative: bool = True) -> Path:
        """A run's file: ``suffix`` like ``space-T1w_desc-preproc_bold.nii.gz`` or ``events.tsv``."""
        base = (self.derivatives if derivative else self.root) / f"sub-{subject}" / f"ses-{session}" / "func"
        return base / f"sub-{subject}_ses-{session}_task-{TASK}_run-{run}_{suffix}"


def _description(path: Path, derivative: bool) -> None:
    text = {"Name": "fMRIPrep" if derivative else "test study", "BIDSVersion": "1.9.0"}
    if derivative:
        text.update({"DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep", "Version": "23.2.0"}]})
    path.mkdir(parents=True, exist_ok=True)
    (path / "dataset_description.json").write_text(json.dumps(text))


def _stimuli(root: Path, n_images: int, captions: bool) -> list[str]:
    folder = root / "stimuli" / "images"
    folder.mkdir(parents=True)
    names = []
    for image in range(n_images):
        name = f"images/img{image:03d}.png"
        Image.fromarray(np.full((6, 8, 3), (image * 7) % 256, dtype=np.uint8)).save(root / "stimuli" / name)
        names.append(name)
    if captions:
        rows = [f"{name}\ta picture number {i}" for i, name in enumerate(names)]
        (root / "stimuli" / "captions.tsv").write_text("stim_file\tcaption\n" + "\n".join(rows) + "\n")
    return names


def _schedule(n_sessions: int, runs: int, trials: int, repeats: bool, seed: int) -> list[np.ndarray]:
    """Image ids of each run: 4 test images shown twice in every session, the rest once (all once: no repeats)."""
    rng = np.random.default_rng(seed)
    per_session = runs * trials
    out, next_id = [], 4
    for _ in range(n_sessions):
        n_new = per_session - (8 if repeats else 0)
        ids = np.concatenate([np.tile(np.arange(4), 2) if repeats else np.zeros(0, int),
                              np.arange(next_id, next_id + n_new)])
        next_id += n_new
        ids = rng.permutation(ids)
        out += [ids[k * trials:(k + 1) * trials] for k in range(runs)]
    return out


def _patterns(n_images: int, brain: np.ndarray, signal: np.ndarray, seed: int) -> np.ndarray:
    """Response of each image at the brain voxels, percent signal change, (n_images, n_brain)."""
    rng = np.random.default_rng(seed + 1)
    patterns = rng.normal(0.0, 1.5, (n_images, int(brain.sum())))
    return patterns * signal[brain][None, :]


def _run_bold(ids: np.ndarray, patterns: np.ndarray, n_brain: int, rng: np.random.Generator,
              same_onset: bool) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    """One run: (bold (n_vol, n_brain), responses (n_trials, n_brain), events, confounds)."""
    onsets = DUMMY * TR + 3.0 + SPACING * np.arange(len(ids)) + rng.uniform(0, 1, len(ids)).round(2)
    n_vol = int(np.ceil((onsets[-1] + 18.0) / TR))
    times = TR * np.arange(n_vol)
    events = pd.DataFrame({"onset": onsets, "duration": 2.0, "trial_type": [f"t{i}" for i in range(len(ids))]})
    design = make_first_level_design_matrix(times, events, hrf_model="glover", drift_model=None)
    regressors = design[[f"t{i}" for i in range(len(ids))]].to_numpy()
    responses = patterns[ids] + rng.normal(0.0, 0.15, (len(ids), n_brain))
    motion = np.cumsum(rng.normal(0.0, 0.05, (n_vol, 6)), axis=0)
    baseline = rng.uniform(500, 1000, n_brain)
    signal = 1.0 + (regressors @ responses) / 100.0 + rng.normal(0.0, 0.002, (n_vol, n_brain))
    bold = baseline * signal + 20.0 * motion[:, :1] + 0.02 * np.outer(np.arange(n_vol), np.ones(n_brain))
    bold[:DUMMY] *= 1.4
    if same_onset:  # the events say so; the BOLD was made from distinct onsets
        events.loc[3, "onset"] = events.loc[2, "onset"]
    confounds = pd.DataFrame(motion, columns=MOTION)
    for name in MOTION:
        confounds[f"{name}_derivative1"] = confounds[name].diff()
    confounds["csf"] = rng.normal(0, 1, n_vol)
    confounds["white_matter"] = rng.normal(0, 1, n_vol)
    confounds["framewise_displacement"] = np.abs(confounds[MOTION].diff()).sum(axis=1).where(times > 0)
    for k in range(DUMMY):
        confounds[f"non_steady_state_outlier_{k:02d}"] = (np.arange(n_vol) == k).astype(int)
    return bold.astype(np.float32), responses.astype(np.float32), events, confounds


def _write_volume(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def _events_table(events: pd.DataFrame, ids: np.ndarray, names: list[str], broken: str | None) -> pd.DataFrame:
    table = pd.DataFrame({"onset": events["onset"], "duration": events["duration"], "trial_type": "image",
                          "stim_file": [names[i] for i in ids], "stim_id": ids})
    fixation = pd.DataFrame({"onset": [0.5], "duration": [1.0], "trial_type": ["fixation"], "stim_file": ["n/a"],
                             "stim_id": ["n/a"]})
    table = pd.concat([fixation, table], ignore_index=True)
    if broken == "unknown_stim":
        table.loc[2, "stim_file"] = "images/not_there.png"
    if broken == "no_onset_column":
        table = table.drop(columns="onset")
    return table


def _write_run(tree: BidsTree, subject: str, session: str, run: int, data: tuple, names: list[str],
               broken: str | None) -> None:
    bold, _, events, confounds, ids = data
    volume = np.zeros((*SHAPE, len(bold)), dtype=np.float32)
    volume[tree.brain] = bold.T
    if broken == "nan_volume":
        volume[..., 5][tree.brain] = np.nan
    if broken != "events_without_bold":
        _write_volume(tree.func(subject, session, run, f"space-{SPACE}_desc-preproc_bold.nii.gz"), volume)
    mask_shape = (SHAPE[0] + 1, *SHAPE[1:]) if broken == "mask_grid" else SHAPE
    mask = np.zeros(mask_shape, dtype=np.uint8)
    mask[tuple(np.argwhere(tree.brain).T)] = 1
    _write_volume(tree.func(subject, session, run, f"space-{SPACE}_desc-brain_mask.nii.gz"), mask)
    if broken == "missing_confound":
        confounds = confounds.drop(columns="csf")
    confounds.to_csv(tree.func(subject, session, run, "desc-confounds_timeseries.tsv"), sep="\t", index=False,
                     na_rep="n/a")
    _write_volume(tree.func(subject, session, run, "bold.nii.gz", derivative=False),
                  np.zeros((*SHAPE, len(bold)), dtype=np.int16))
    if broken != "bold_without_events":
        _events_table(events, ids, names, broken).to_csv(tree.func(subject, session, run, "events.tsv", False),
                                                         sep="\t", index=False, na_rep="n/a")


def _write_masks(folder: Path, brain: np.ndarray, signal: np.ndarray) -> dict[str, Path]:
    """``signal`` on the BOLD grid, ``fine`` (the same voxels) on a grid twice as fine, ``half`` the first rows."""
    half = signal.copy()
    half[SHAPE[0] // 2:] = False
    fine = np.repeat(np.repeat(np.repeat(signal, 2, 0), 2, 1), 2, 2).astype(np.uint8)
    paths = {name: folder / f"{name}.nii.gz" for name in ("signal", "fine", "half")}
    _write_volume(paths["signal"], signal.astype(np.uint8))
    _write_volume(paths["half"], half.astype(np.uint8))
    _write_volume(paths["fine"], fine, np.diag([1.0, 1.0, 1.0, 1.0]))
    return paths


def _grid(seed: int) -> tuple[np.ndarray, np.ndarray]:
    brain = np.ones(SHAPE, dtype=bool)
    brain[0, 0, :] = False  # outside the brain: zeros in the BOLD, as fMRIPrep writes
    signal = brain.copy()
    signal[:, SHAPE[1] // 2:, :] = False  # noise-only voxels: no response to the images
    return brain, signal


def write_bids_tree(folder: Path, *, subjects: Sequence[str] = ("01",), sessions: Sequence[str] = ("01", "02"),
                    runs: int = 2, trials: int = 8, broken: str | None = None, seed: int = 0) -> BidsTree:
    """Write ``folder/bids`` (raw + ``derivatives/fmriprep``, stimuli, captions) and ``folder/masks``.

    The TR is inherited from a root ``task-images_bold.json``; the first ``DUMMY`` volumes are marked
    by ``non_steady_state_outlier_XX`` columns and carry a transient; a motion confound enters the BOLD.
    """
    if broken is not None and broken not in BREAKS:
        raise ValueError(f"unknown break {broken!r}")
    root = folder / "bids"
    _description(root, derivative=False)
    _description(root / "derivatives" / "fmriprep", derivative=True)
    if broken != "no_tr":
        (root / f"task-{TASK}_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": TASK}))
    brain, signal = _grid(seed)
    n_images = 4 + len(sessions) * runs * trials
    names = _stimuli(root, n_images, captions=broken != "no_captions")
    tree = BidsTree(root, root / "derivatives" / "fmriprep", list(subjects), list(sessions), runs, trials, brain,
                    signal, _write_masks(folder / "masks", brain, signal))
    for s_index, subject in enumerate(subjects):
        _write_subject(tree, subject, s_index, names, broken, seed)
    return tree


def _write_subject(tree: BidsTree, subject: str, s_index: int, names: list[str], broken: str | None,
                   seed: int) -> None:
    rng = np.random.default_rng(seed + 10 * s_index)
    patterns = _patterns(len(names), tree.brain, tree.signal, seed + s_index)
    schedule = _schedule(len(tree.sessions), tree.runs, tree.trials, broken != "no_repeats", seed + s_index)
    responses, ids, sessions = [], [], []
    for k, (session, run) in enumerate((s, r) for s in tree.sessions for r in range(1, tree.runs + 1)):
        last = k == len(schedule) - 1 and s_index == 0
        bold, resp, events, confounds = _run_bold(schedule[k], patterns, int(tree.brain.sum()), rng,
                                                  last and broken == "same_onset")
        _write_run(tree, subject, session, run, (bold, resp, events, confounds, schedule[k]), names,
                   broken if last else None)
        responses.append(resp)
        ids.append(schedule[k])
        sessions.append(np.full(len(resp), tree.sessions.index(session) + 1))
    tree.responses[subject] = np.concatenate(responses)
    tree.image_ids[subject] = np.concatenate(ids)
    tree.trial_session[subject] = np.concatenate(sessions)
