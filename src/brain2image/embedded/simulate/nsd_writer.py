"""Write a simulated study as an NSD tree: the files of ``docs/nsd_format.md``, same names and layout.

Every writer is deterministic (same input → byte-identical file): HDF5 datasets are written
with ``track_times=False``, gzip streams with ``mtime=0`` and no file name, and the MATLAB
header's "Created on" text is fixed. Files are written atomically.

Conventions kept from NSD (see ``docs/nsd_format.md``): indices in ``nsd_expdesign.mat``,
``responses.tsv`` (``73KID``, ``10KID``) and ``subjectX_repN`` are 1-based, the CSV's unnamed
index column and ``nsdId`` 0-based; betas are int16 percent signal change × 300; the HDF5
betas are stored in MATLAB order, so h5py sees (n_trials, Z, Y, X) — the NIfTI (X, Y, Z)
volume transposed ``[2, 1, 0]``.

Large trees are written in pieces: :func:`stimuli_writer` fills ``imgBrick`` slice by slice and
:func:`write_betas_session` takes one session; nothing needs the whole study in memory.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from ..._io import atomic_path, atomic_write_bytes, atomic_write_text, make_output_dir
from ...sources.nsd.layout import DEFAULT_BETA_VERSION, NSDLayout  # the reader's own paths (see nsd_paths)

__all__ = [
    "BETA_SCALE",
    "BETA_VERSION",
    "RESPONSE_COLUMNS",
    "RUN_LENGTHS",
    "SIMULATION_MARKER",
    "TRIALS_PER_SESSION",
    "nsd_paths",
    "save_nifti",
    "save_mat",
    "stimuli_writer",
    "write_stimuli",
    "write_marker",
    "write_captions",
    "write_expdesign",
    "write_stim_info",
    "write_responses",
    "write_rois",
    "write_betas_session",
    "write_ncsnr",
]

#: Betas are stored as int16 percent signal change times this factor.
BETA_SCALE = 300.0
#: Beta version folder the simulation writes (the one Takagi & Nishimoto used).
BETA_VERSION = DEFAULT_BETA_VERSION
#: Stimulus trials per scan session.
TRIALS_PER_SESSION = 750
#: Trials of runs 1..12 of a session (odd runs 63, even runs 62: 6 × 63 + 6 × 62 = 750).
RUN_LENGTHS = tuple(63 if run % 2 else 62 for run in range(1, 13))
#: The 19 columns of ``responses.tsv``.
RESPONSE_COLUMNS = (
    "SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD", "ISCORRECT", "RT",
    "CHANGEMIND", "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT", "ISCORRECTCURRENT", "TOTAL1",
    "TOTAL2", "BUTTON", "MISSINGDATA",
)
#: Marker file at the NSD root of every simulated tree (the reader's
#: ``brain2image.sources.nsd.layout.SIMULATION_MARKER`` names the same file).
SIMULATION_MARKER = "brain2image_simulation.json"
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created on: simulated by brain2image"


def nsd_paths(root: str | os.PathLike, subject: int = 1) -> dict[str, Path]:
    """Paths (under the NSD ``root``, created if absent) of the files this module writes.

    The paths come from :class:`brain2image.sources.nsd.layout.NSDLayout`, the one place that names
    NSD's files, so the simulated tree is laid out exactly as the reader expects (the one import of
    an NSD reader outside :mod:`brain2image.sources`, allowed by ``tests/test_architecture.py``).
    Keys: ``stimuli``, ``captions_train2017``, ``captions_val2017``, ``expdesign``,
    ``stim_info``, ``responses``, ``brainmask``, ``roi_dir``, ``ctab_dir``, ``betas_dir``,
    ``ncsnr``.
    """
    make_output_dir(root)
    layout = NSDLayout(root, subject, space="func1pt8mm", beta_version=BETA_VERSION)
    return {
        "stimuli": layout.stimuli(),
        "captions_train2017": layout.captions("train2017"),
        "captions_val2017": layout.captions("val2017"),
        "expdesign": layout.expdesign(),
        "stim_info": layout.stim_info(),
        "responses": layout.responses(),
        "brainmask": layout.brainmask(),
        "roi_dir": layout.roi_volume("streams").parent,
        "ctab_dir": layout.label_ctab("streams").parent,
        "betas_dir": layout.betas_dir(),
        "ncsnr": layout.ncsnr(),
    }


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI-1 image, gzipped deterministically when ``path`` ends in ``.gz``.

    The data are stored in their own dtype with no intensity scaling.
    """
    image = nib.Nifti1Image(np.asarray(data), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_slope_inter(1.0, 0.0)
    payload = image.to_bytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)


def save_mat(path: str | os.PathLike, variables: Mapping[str, np.ndarray]) -> None:
    """Write a MATLAB v5 file with :func:`scipy.io.savemat` and a fixed header text."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, dict(variables), format="5", oned_as="row")
    payload = bytearray(buffer.getvalue())
    payload[:116] = _MAT_HEADER.ljust(116, b" ")  # replaces the "Created on: <time>" text
    atomic_write_bytes(path, bytes(payload))


@contextlib.contextmanager
def stimuli_writer(path: str | os.PathLike, n_images: int, size: int) -> Iterator[h5py.Dataset]:
    """Create ``nsd_stimuli.hdf5`` and yield its ``imgBrick`` dataset, to be filled slice by slice.

    The dataset has shape (n_images, size, size, 3), uint8, one image per chunk (reading a few
    images is cheap). The file is renamed into place when the block ends without an error.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f.create_dataset("imgBrick", shape=(int(n_images), int(size), int(size), 3), dtype=np.uint8,
                               chunks=(1, int(size), int(size), 3), track_times=False)


def write_stimuli(path: str | os.PathLike, images: np.ndarray) -> None:
    """Write ``nsd_stimuli.hdf5`` with dataset ``imgBrick`` of shape (n_images, S, S, 3) uint8.

    Same file as :func:`stimuli_writer` filled with ``images``.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be uint8 of shape (n_images, S, S, 3), got "
                         f"{images.dtype} {images.shape}")
    with stimuli_writer(path, len(images), images.shape[1]) as brick:
        brick[...] = images


def write_marker(root: str | os.PathLike, content: Mapping[str, object]) -> Path:
    """Write :data:`SIMULATION_MARKER` (sorted-key JSON) at the NSD ``root``; returns its path."""
    path = Path(root) / SIMULATION_MARKER
    atomic_write_text(path, json.dumps(dict(content), indent=2, sort_keys=True) + "\n")
    return path


def write_captions(path: str | os.PathLike, coco_ids: Sequence[int],
                   captions: Sequence[Sequence[str]], image_size: int, first_id: int = 1) -> int:
    """Write a COCO ``captions_<split>.json`` (``info``, ``licenses``, ``images``, ``annotations``).

    Parameters
    ----------
    coco_ids : sequence of int
        COCO id of each image of this split.
    captions : sequence of sequences of str
        The captions of each image.
    image_size : int
        Side of the images (``height`` / ``width`` entries).
    first_id : int
        Annotation id of the first caption (ids are unique across splits).

    Returns
    -------
    next_id : int
        The next free annotation id.
    """
    images, annotations = [], []
    ann_id = int(first_id)
    for coco_id, texts in zip(coco_ids, captions, strict=True):
        images.append({"id": int(coco_id), "file_name": f"{int(coco_id):012d}.jpg",
                       "height": int(image_size), "width": int(image_size)})
        for text in texts:
            annotations.append({"image_id": int(coco_id), "id": ann_id, "caption": text})
            ann_id += 1
    content = {
        "info": {"description": "brain2image simulated study (COCO captions format)",
                 "version": "1.0", "year": 2017},
        "licenses": [],
        "images": images,
        "annotations": annotations,
    }
    atomic_write_text(path, json.dumps(content, indent=None))
    return ann_id


def write_expdesign(path: str | os.PathLike, masterordering: np.ndarray, subjectim: np.ndarray,
                    sharedix: np.ndarray, trials_per_session: int = TRIALS_PER_SESSION) -> None:
    """Write ``nsd_expdesign.mat``; every array 1-based.

    Parameters
    ----------
    masterordering : ndarray of shape (n_trials,)
        Index (1-based) into the subject's images of every trial.
    subjectim : ndarray of shape (n_subjects, n_subject_images)
        73k ids (1-based) of each subject's images; the first ``n_shared`` columns are the
        shared images, sorted.
    sharedix : ndarray of shape (n_shared,)
        73k ids (1-based) of the shared images, sorted.
    trials_per_session : int
        Trials per session (sets the number of sessions in ``basiccnt``).

    Notes
    -----
    The arrays are stored as integers (``int32``); ``basiccnt`` (3 × n_sessions) counts per
    session the trials of images shown for the first time, shown before in an earlier
    session, and shown before in the same session. ``stimpattern`` is omitted.
    """
    masterordering = np.asarray(masterordering, dtype=np.int64).ravel()
    n_sessions = len(masterordering) // trials_per_session
    basiccnt = np.zeros((3, n_sessions), dtype=np.int32)
    first_session: dict[int, int] = {}
    seen_in_session: set[tuple[int, int]] = set()
    for t, image in enumerate(masterordering.tolist()):
        session = t // trials_per_session
        if image not in first_session:
            first_session[image] = session
            basiccnt[0, session] += 1
        elif (image, session) in seen_in_session:
            basiccnt[2, session] += 1
        else:
            basiccnt[1, session] += 1
        seen_in_session.add((image, session))
    save_mat(path, {
        "masterordering": masterordering.reshape(1, -1).astype(np.int32),
        "subjectim": np.atleast_2d(np.asarray(subjectim)).astype(np.int32),
        "sharedix": np.asarray(sharedix).reshape(1, -1).astype(np.int32),
        "basiccnt": basiccnt,
    })


def write_stim_info(path: str | os.PathLike, coco_ids: np.ndarray, coco_split: Sequence[str],
                    shared: np.ndarray, subject_images: Mapping[int, np.ndarray],
                    trial_ids: Mapping[int, np.ndarray], crop_boxes: Sequence[str],
                    losses: np.ndarray, n_reps: int = 3) -> None:
    """Write ``nsd_stim_info_merged.csv``: one row per image, unnamed 0-based index column.

    Parameters
    ----------
    coco_ids : ndarray of shape (n_images,)
    coco_split : sequence of str, length n_images
        ``train2017`` or ``val2017``.
    shared : ndarray of shape (n_images,), bool
        ``shared1000`` flag.
    subject_images : mapping of int to ndarray of shape (n_images,), bool
        Subject number → whether the subject saw the image (``subjectX`` column).
    trial_ids : mapping of int to ndarray of shape (n_images, n_reps), int
        Subject number → 1-based trial id (1..n_trials) of each presentation, 0 if none
        (``subjectX_repN`` columns).
    crop_boxes : sequence of str
        ``cropBox`` text of each image, e.g. ``(0, 0, 0.1, 0.1)``.
    losses : ndarray of shape (n_images,)
    n_reps : int
        Number of ``subjectX_repN`` columns per subject.
    """
    n_images = len(coco_ids)
    frame = pd.DataFrame({
        "cocoId": np.asarray(coco_ids, dtype=np.int64),
        "cocoSplit": list(coco_split),
        "cropBox": list(crop_boxes),
        "loss": np.asarray(losses, dtype=float),
        "nsdId": np.arange(n_images, dtype=np.int64),
        "flagged": np.zeros(n_images, dtype=bool),
        "BOLD5000": np.zeros(n_images, dtype=bool),
        "shared1000": np.asarray(shared, dtype=bool),
    })
    for subject in sorted(subject_images):
        frame[f"subject{subject}"] = np.asarray(subject_images[subject], dtype=np.int64)
    for subject in sorted(trial_ids):
        reps = np.asarray(trial_ids[subject], dtype=np.int64)
        if reps.shape != (n_images, n_reps):
            raise ValueError(f"trial_ids[{subject}] must have shape ({n_images}, {n_reps}), "
                             f"got {reps.shape}")
        for rep in range(n_reps):
            frame[f"subject{subject}_rep{rep}"] = reps[:, rep]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=True, float_format="%.6g", lineterminator="\n")


def _repetition_history(ten_k: np.ndarray, session: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per trial: ISOLD, ISOLDCURRENT, MEMORYRECENT and MEMORYFIRST of ``responses.tsv``.

    Parameters
    ----------
    ten_k : ndarray of shape (n_trials,)
        The image of every trial.
    session : ndarray of shape (n_trials,)
        The session of every trial.

    Returns
    -------
    is_old, is_old_current : ndarray of shape (n_trials,), int64
        1 when the image was shown before (in any session / in the same session).
    memory_recent, memory_first : ndarray of shape (n_trials,), float64
        Trials since the last / the first presentation (NaN for a first presentation).
    """
    n_trials = len(ten_k)
    is_old = np.zeros(n_trials, dtype=np.int64)
    is_old_current = np.zeros(n_trials, dtype=np.int64)
    memory_recent = np.full(n_trials, np.nan)
    memory_first = np.full(n_trials, np.nan)
    last_seen: dict[int, int] = {}
    first_seen: dict[int, int] = {}
    for t, image in enumerate(ten_k.tolist()):
        if image in last_seen:
            is_old[t] = 1
            memory_recent[t] = t - last_seen[image]
            memory_first[t] = t - first_seen[image]
            is_old_current[t] = int(session[last_seen[image]] == session[t])
        else:
            first_seen[image] = t
        last_seen[image] = t
    return is_old, is_old_current, memory_recent, memory_first


def write_responses(path: str | os.PathLike, subject: int, masterordering: np.ndarray,
                    subjectim: np.ndarray, seed: int = 0,
                    trials_per_session: int = TRIALS_PER_SESSION) -> pd.DataFrame:
    """Write ``responses.tsv``: one row per trial, the 19 NSD columns, tab separated.

    The behaviour of the continuous recognition task ("have you seen this image before?") is
    simulated: 80 % correct answers, log-normal reaction times.

    Parameters
    ----------
    subject : int
        Subject number (``SUBJECT`` column).
    masterordering : ndarray of shape (n_trials,)
        1-based indices into ``subjectim`` (``10KID``).
    subjectim : ndarray of shape (n_subject_images,)
        This subject's 1-based 73k ids.
    seed : int
        Seed of the simulated behaviour.

    Returns
    -------
    frame : pandas.DataFrame
        What was written.
    """
    if sum(RUN_LENGTHS) != trials_per_session:
        raise ValueError(f"runs of {RUN_LENGTHS} trials do not add up to {trials_per_session}")
    rng = np.random.default_rng(seed)
    ten_k = np.asarray(masterordering, dtype=np.int64).ravel()
    n_trials = len(ten_k)
    if n_trials % trials_per_session:
        raise ValueError(f"{n_trials} trials are not whole sessions of {trials_per_session}")
    session = np.arange(n_trials) // trials_per_session + 1
    in_session = np.arange(n_trials) % trials_per_session
    run_start = np.concatenate([[0], np.cumsum(RUN_LENGTHS)[:-1]])
    run = np.searchsorted(run_start, in_session, side="right")
    trial = in_session - run_start[run - 1] + 1
    is_old, is_old_current, memory_recent, memory_first = _repetition_history(ten_k, session)
    correct = (rng.random(n_trials) < 0.8).astype(np.int64)
    answer_old = np.where(correct == 1, is_old, 1 - is_old)
    missing = (rng.random(n_trials) < 0.01).astype(np.int64)
    button = np.where(answer_old == 1, 1, 2)
    rt = rng.lognormal(np.log(900.0), 0.25, n_trials)
    time = 737000.0 + (session - 1) * 7.0 + np.arange(n_trials) % trials_per_session * 4.0 / 86400
    frame = pd.DataFrame({
        "SUBJECT": np.full(n_trials, subject, dtype=np.int64), "SESSION": session, "RUN": run,
        "TRIAL": trial, "73KID": np.asarray(subjectim, dtype=np.int64)[ten_k - 1], "10KID": ten_k,
        "TIME": time, "ISOLD": is_old,
        "ISCORRECT": np.where(missing == 1, 0, correct),
        "RT": np.where(missing == 1, np.nan, rt), "CHANGEMIND": np.zeros(n_trials, np.int64),
        "MEMORYRECENT": memory_recent, "MEMORYFIRST": memory_first,
        "ISOLDCURRENT": is_old_current,
        "ISCORRECTCURRENT": np.where(missing == 1, 0, (answer_old == is_old_current).astype(int)),
        "TOTAL1": (button == 1).astype(np.int64) * (1 - missing),
        "TOTAL2": (button == 2).astype(np.int64) * (1 - missing),
        "BUTTON": np.where(missing == 1, 0, button), "MISSINGDATA": missing,
    }, columns=list(RESPONSE_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6f", na_rep="NaN",
                     lineterminator="\n")
    return frame


def write_rois(paths: Mapping[str, Path], brainmask: np.ndarray, nsdgeneral: np.ndarray,
               streams: np.ndarray, labels: Mapping[int, str], affine: np.ndarray) -> None:
    """Write ``brainmask.nii.gz``, ``roi/{nsdgeneral,streams}.nii.gz`` and ``streams.mgz.ctab``.

    Parameters
    ----------
    paths : mapping
        :func:`nsd_paths` of the tree.
    brainmask, nsdgeneral, streams : ndarray of shape (X, Y, Z)
        Brain mask (bool), ``nsdgeneral`` (-1 outside the brain, 0, 1) and ``streams`` labels.
    labels : mapping of int to str
        ``streams`` label table.
    affine : ndarray of shape (4, 4)
    """
    save_nifti(paths["brainmask"], brainmask.astype(np.int16), affine)
    save_nifti(Path(paths["roi_dir"]) / "nsdgeneral.nii.gz", nsdgeneral.astype(np.int16), affine)
    save_nifti(Path(paths["roi_dir"]) / "streams.nii.gz", streams.astype(np.int16), affine)
    ctab = "".join(f"{value} {name}\n" for value, name in sorted(labels.items()))
    atomic_write_text(Path(paths["ctab_dir"]) / "streams.mgz.ctab", ctab)


def write_betas_session(betas_dir: str | os.PathLike, session: int, betas: np.ndarray,
                        affine: np.ndarray, nifti: bool = False) -> None:
    """Write one session's betas as NSD does.

    Parameters
    ----------
    betas_dir : path-like
        The beta version folder.
    session : int
        1-based session (file ``betas_sessionNN``).
    betas : ndarray of shape (X, Y, Z, n_trials), int16
        Percent signal change × 300 in NIfTI axis order; when it is the transposed view of a
        C-ordered (n_trials, Z, Y, X) array, the HDF5 dataset is written without a copy.
    affine : ndarray of shape (4, 4)
    nifti : bool
        Also write ``betas_sessionNN.nii.gz`` (shape (X, Y, Z, n_trials)).

    Notes
    -----
    The HDF5 file holds dataset ``betas`` of shape (n_trials, Z, Y, X): NSD's files are written
    by MATLAB, whose column-major (X, Y, Z, trial) array h5py reads with the axes reversed.
    """
    if betas.dtype != np.int16 or betas.ndim != 4:
        raise ValueError(f"betas must be int16 of shape (X, Y, Z, n_trials), got "
                         f"{betas.dtype} {betas.shape}")
    name = Path(betas_dir) / f"betas_session{int(session):02d}"
    with atomic_path(name.with_suffix(".hdf5")) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("betas", data=np.ascontiguousarray(betas.transpose(3, 2, 1, 0)),
                         track_times=False)
    if nifti:
        save_nifti(name.with_name(name.name + ".nii.gz"), betas, affine)


def write_ncsnr(path: str | os.PathLike, ncsnr: np.ndarray, affine: np.ndarray) -> None:
    """Write ``ncsnr.nii.gz``, array of shape (X, Y, Z) float32."""
    save_nifti(path, np.asarray(ncsnr, dtype=np.float32), affine)
