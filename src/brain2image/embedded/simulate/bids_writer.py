"""Write a simulated study as a raw BIDS dataset with fMRIPrep-style derivatives.

Layout (``<root>`` = ``<out>/bids``)::

    dataset_description.json  participants.tsv  README  task-<task>_bold.json
    stimuli/images/img00000.png …  stimuli/captions.tsv
    sub-XX/ses-YY/func/sub-XX_ses-YY_task-<task>_run-ZZ_bold.nii.gz   (int16)
                                                      …_events.tsv
    derivatives/fmriprep/dataset_description.json
    derivatives/fmriprep/sub-XX/ses-YY/func/…_space-T1w_desc-preproc_bold.nii.gz (+ .json, float32)
                                          …_space-T1w_desc-brain_mask.nii.gz
                                          …_desc-confounds_timeseries.tsv (+ .json)
    derivatives/rois/dataset_description.json
    derivatives/rois/sub-XX/anat/sub-XX_space-T1w_desc-<roi>_mask.nii.gz

Every file is written atomically and deterministically (gzip without a time stamp, sorted JSON keys).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from ... import __version__
from ..._io import atomic_path, atomic_write_bytes, atomic_write_text
from ...sources.stimulus_folder import SIMULATED_BY

__all__ = ["BIDS_VERSION", "GENERATED_BY", "RunFiles", "run_files", "roi_mask_path", "save_nifti", "stim_file",
           "write_captions", "write_confounds", "write_dataset_description", "write_events", "write_json",
           "write_participants", "write_readme", "write_stimulus", "write_task_sidecar", "write_tsv"]

#: BIDS version the files follow.
BIDS_VERSION = "1.9.0"
#: ``GeneratedBy`` name of every dataset written here: the marker of a simulated study, which the BIDS
#: and betas sources read (:func:`brain2image.sources.stimulus_folder.generated_by_simulate`).
GENERATED_BY = SIMULATED_BY


def write_json(path: str | os.PathLike, content: Mapping[str, object]) -> None:
    """Write a JSON file (sorted keys, indented)."""
    atomic_write_text(path, json.dumps(dict(content), indent=2, sort_keys=True) + "\n")


def write_tsv(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a BIDS TSV: tab-separated, header row, ``n/a`` for missing values, no index."""
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n",
                                         float_format="%.6g"))


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *, tr: float | None = None,
               level: int = 6) -> None:
    """Write a gzipped NIfTI-1 image (no time stamp); ``tr`` (s) goes into the 4th zoom of a 4-D image.

    The data are stored in their own dtype with no intensity scaling.
    """
    image = nib.Nifti1Image(np.asarray(data), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_slope_inter(1.0, 0.0)
    if tr is not None and image.ndim == 4:
        image.header.set_zooms((*image.header.get_zooms()[:3], float(tr)))
    atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=level, mtime=0))


def write_dataset_description(root: Path, name: str, dataset_type: str, description: str) -> None:
    """``dataset_description.json`` of a raw (``raw``) or derivative (``derivative``) dataset."""
    content: dict[str, object] = {
        "Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": dataset_type,
        "GeneratedBy": [{"Name": GENERATED_BY, "Version": __version__, "Description": description}]}
    write_json(root / "dataset_description.json", content)


def write_participants(root: Path, subjects: Sequence[str]) -> None:
    """``participants.tsv``: one row per subject label."""
    write_tsv(root / "participants.tsv", pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}))


def write_readme(root: Path, text: str) -> None:
    """The dataset's ``README``."""
    atomic_write_text(root / "README", text.rstrip("\n") + "\n")


def write_task_sidecar(root: Path, task: str, tr: float) -> None:
    """``task-<task>_bold.json`` at the root: the sidecar every run inherits."""
    write_json(root / f"task-{task}_bold.json", {"RepetitionTime": float(tr), "TaskName": task})


def stim_file(image_id: int) -> str:
    """The ``stim_file`` of an image, relative to the root's ``stimuli/``."""
    return f"images/img{int(image_id):05d}.png"


def write_stimulus(root: Path, image_id: int, image: np.ndarray) -> None:
    """One stimulus PNG, ``stimuli/images/img{id:05d}.png`` (image: array of shape (S, S, 3), uint8)."""
    with atomic_path(root / "stimuli" / stim_file(image_id)) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")


def write_captions(root: Path, captions: Sequence[Sequence[str]]) -> None:
    """Write ``stimuli/captions.tsv`` (``stim_file``, ``caption``): one row per caption, ``captions[i]`` of image i."""
    rows = [(stim_file(i), text) for i, texts in enumerate(captions) for text in texts]
    write_tsv(root / "stimuli" / "captions.tsv", pd.DataFrame(rows, columns=["stim_file", "caption"]))


@dataclass(frozen=True)
class RunFiles:
    """The files of one run (raw and fMRIPrep-style)."""

    bold: Path
    events: Path
    preproc: Path
    preproc_json: Path
    mask: Path
    confounds: Path
    confounds_json: Path


def run_files(root: Path, fmriprep: Path, subject: str, session: int, run: int, task: str, space: str) -> RunFiles:
    """Paths of one run's files."""
    folder = Path(f"sub-{subject}") / f"ses-{session:02d}" / "func"
    stem = f"sub-{subject}_ses-{session:02d}_task-{task}_run-{run:02d}"
    raw, deriv = root / folder, fmriprep / folder
    return RunFiles(
        bold=raw / f"{stem}_bold.nii.gz", events=raw / f"{stem}_events.tsv",
        preproc=deriv / f"{stem}_space-{space}_desc-preproc_bold.nii.gz",
        preproc_json=deriv / f"{stem}_space-{space}_desc-preproc_bold.json",
        mask=deriv / f"{stem}_space-{space}_desc-brain_mask.nii.gz",
        confounds=deriv / f"{stem}_desc-confounds_timeseries.tsv",
        confounds_json=deriv / f"{stem}_desc-confounds_timeseries.json")


def roi_mask_path(rois_dir: Path, subject: str, name: str, space: str) -> Path:
    """``sub-XX/anat/sub-XX_space-<space>_desc-<name>_mask.nii.gz`` of the ROI dataset."""
    return rois_dir / f"sub-{subject}" / "anat" / f"sub-{subject}_space-{space}_desc-{name}_mask.nii.gz"


def write_events(path: Path, table: pd.DataFrame) -> None:
    """A run's ``_events.tsv``."""
    write_tsv(path, table)


def write_confounds(files: RunFiles, table: pd.DataFrame) -> None:
    """A run's ``_desc-confounds_timeseries.tsv`` and its JSON (one description per column)."""
    write_tsv(files.confounds, table)
    write_json(files.confounds_json, {column: {"Description": _confound_description(column)}
                                      for column in table.columns})


def _confound_description(column: str) -> str:
    """A short description of an fMRIPrep-style confound column."""
    if column.startswith("non_steady_state_outlier"):
        return "One-hot indicator of a non-steady-state (dummy) volume"
    if column.endswith("_derivative1"):
        return f"Temporal derivative of {column.removesuffix('_derivative1')}"
    return {"csf": "Mean signal in the cerebrospinal fluid", "white_matter": "Mean signal in the white matter",
            "framewise_displacement": "Framewise displacement (Power et al. 2012), mm"}.get(
        column, "Head motion parameter (mm or rad) from rigid-body realignment")
