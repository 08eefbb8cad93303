"""Write small fake NSD trees (real layout, tiny sizes) with known betas, for the nsd tests.

Independent of ``brain2image.embedded.simulate``: every file is written here with h5py / nibabel / scipy,
following docs/nsd_format.md (1-based ids on disk, HDF5 betas in (n_trials, Z, Y, X) order).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import scipy.io

__all__ = ["FakeNSD", "STREAMS_CTAB", "write_nsd_tree"]

STREAMS_CTAB = {0: "Unknown", 1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal",
                5: "ventral", 6: "lateral", 7: "parietal"}
BETA_VERSION = "betas_fithrf_GLMdenoise_RR"
#: Images in the stimulus brick (as many as NSD's 73k ids; each image is tiny).
N_STIMULI = 73000
STIMULUS_SIZE = 4


@dataclass
class FakeNSD:
    """What was written, for tests to compute expected values independently.

    ``betas[s]`` is int16 of shape (X, Y, Z, n_trials); ``ids[s]`` the 0-based 73k id of each trial
    of session ``s``; ``surface[s]`` float32 (n_lh + n_rh, n_trials).
    """

    root: Path
    subject: int
    sessions: list[int]
    trials_per_session: int
    volume_shape: tuple[int, int, int]
    affine: np.ndarray
    betas: dict[int, np.ndarray]
    ids: dict[int, np.ndarray]
    shared_ids: np.ndarray
    streams: np.ndarray
    nsdgeneral: np.ndarray
    prf: np.ndarray
    ncsnr: np.ndarray
    n_vertices: tuple[int, int]
    surface_streams: np.ndarray
    surface: dict[int, np.ndarray] = field(default_factory=dict)
    surface_ncsnr: np.ndarray | None = None
    coco_ids: dict[int, int] = field(default_factory=dict)
    coco_split: dict[int, str] = field(default_factory=dict)

    def path(self, relative: str) -> Path:
        """Absolute path of a file of the tree."""
        return self.root / relative

    def betas_file(self, session: int, suffix: str = ".hdf5") -> Path:
        """Path of a session's volume betas."""
        return (self.root / f"nsddata_betas/ppdata/subj{self.subject:02d}/func1pt8mm/"
                f"{BETA_VERSION}/betas_session{session:02d}{suffix}")

    def surface_betas_file(self, session: int, hemi: str) -> Path:
        """Path of a session's fsaverage betas of one hemisphere."""
        return (self.root / f"nsddata_betas/ppdata/subj{self.subject:02d}/fsaverage/"
                f"{BETA_VERSION}/{hemi}.betas_session{session:02d}.mgh")

    def roi_file(self, atlas: str) -> Path:
        """Path of a volume ROI atlas."""
        return self.root / f"nsddata/ppdata/subj{self.subject:02d}/func1pt8mm/roi/{atlas}.nii.gz"

    def stimuli_file(self) -> Path:
        """Path of ``nsd_stimuli.hdf5``."""
        return self.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"

    def captions_file(self, split: str) -> Path:
        """Path of COCO ``captions_<split>.json``."""
        return self.root / f"nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json"

    def write_betas(self, session: int, data: np.ndarray, formats: Sequence[str] = ("hdf5", "nifti")) -> None:
        """Overwrite a session's volume betas with ``data`` (X, Y, Z, n_trials), in its own dtype."""
        if "hdf5" in formats:
            with h5py.File(self.betas_file(session), "w") as handle:
                handle.create_dataset("betas", data=data.transpose(3, 2, 1, 0))
        if "nifti" in formats:
            image = nib.Nifti1Image(data, self.affine)
            image.header.set_data_dtype(data.dtype)
            nib.save(image, self.betas_file(session, ".nii.gz"))


def _blocks(shape: tuple[int, ...], values: list[int], rng: np.random.Generator) -> np.ndarray:
    """A label volume: each value fills a random contiguous region, the rest 0."""
    out = np.zeros(shape, dtype=np.int16)
    flat = out.reshape(-1)
    cuts = np.sort(rng.choice(np.arange(1, flat.size), size=2 * len(values), replace=False))
    for value, (a, b) in zip(values, cuts.reshape(-1, 2), strict=True):
        flat[a:b] = value
    return out


RESPONSES_HEADER = ["SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD",
                    "ISCORRECT", "RT", "CHANGEMIND", "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT",
                    "ISCORRECTCURRENT", "TOTAL1", "TOTAL2", "BUTTON", "MISSINGDATA"]
HEMISPHERES = ("lh", "rh")


def _hemispheres(data: np.ndarray, n_vertices: tuple[int, int]) -> Iterator[tuple[str, np.ndarray]]:
    """``(hemi, rows)`` for lh then rh: the rows of ``data`` (vertices first) of each hemisphere."""
    split = [0, n_vertices[0], sum(n_vertices)]
    for h, hemi in enumerate(HEMISPHERES):
        yield hemi, data[split[h]:split[h + 1]]


def _draw_design(rng: np.random.Generator, n_images: int, n_shared: int,
                 n_trials: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(masterordering, subjectim, sharedix)``, all 1-based; shared images first and sorted."""
    pool = rng.choice(np.arange(1, 73001), size=n_shared + 8 * (n_images - n_shared), replace=False)
    sharedix = np.sort(pool[:n_shared])
    own = pool[n_shared:].reshape(8, n_images - n_shared)
    subjectim = np.concatenate([np.tile(sharedix, (8, 1)), own], axis=1)
    # shared images seen 1, 2 or 3 times each
    shared_draws = np.repeat(np.arange(1, n_shared + 1), 1 + np.arange(n_shared) % 3)
    others = rng.integers(n_shared + 1, n_images + 1, size=n_trials - shared_draws.size)
    masterordering = rng.permutation(np.concatenate([shared_draws, others]))
    return masterordering, subjectim, sharedix


def _write_design(root: Path, masterordering: np.ndarray, subjectim: np.ndarray,
                  sharedix: np.ndarray) -> None:
    """``nsd_expdesign.mat``: the 1-based design as float64 row vectors / matrix."""
    expdesign = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    expdesign.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(expdesign, {"masterordering": masterordering[None, :].astype(np.float64),
                                 "subjectim": subjectim.astype(np.float64),
                                 "sharedix": sharedix[None, :].astype(np.float64)})


def _write_responses(path: Path, subject: int, trials_per_session: int, ids: dict[int, np.ndarray],
                     masterordering: np.ndarray) -> None:
    """``responses.tsv``: 12 runs per session (fewer if fewer trials), TRIAL counted within the run."""
    rows = []
    for s in ids:
        runs = np.array_split(np.arange(trials_per_session), min(12, trials_per_session))
        for run, trials in enumerate(runs, start=1):
            for t_in_run, t in enumerate(trials, start=1):
                rows.append([subject, s, run, t_in_run, ids[s][t] + 1,
                             int(masterordering[(s - 1) * trials_per_session + t]), 0.5, 0, 1,
                             700, 0, 0, 0, 0, 1, 0, 0, 1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(RESPONSES_HEADER)]
                              + ["\t".join(map(str, r)) for r in rows]) + "\n")


def _volume_affine() -> np.ndarray:
    """The 1.8 mm affine of every volume of the tree."""
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -5.0]
    return affine


def _write_roi_atlases(roi_dir: Path, volume_shape: tuple[int, int, int], affine: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``streams`` / ``nsdgeneral`` / ``prf-visualrois`` (X, Y, Z) int16 atlases; returns them."""
    streams = _blocks(volume_shape, [1, 5, 2, 6], rng)
    nsdgeneral = np.where(streams > 0, 1, rng.choice([-1, 0], size=volume_shape)).astype(np.int16)
    prf = _blocks(volume_shape, [1, 2, 3], rng)
    roi_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (("streams", streams), ("nsdgeneral", nsdgeneral), ("prf-visualrois", prf)):
        nib.save(nib.Nifti1Image(data, affine), roi_dir / f"{name}.nii.gz")
    return streams, nsdgeneral, prf


def _write_streams_ctab(label_dir: Path) -> None:
    """``streams.mgz.ctab``: one ``value name`` line per label of :data:`STREAMS_CTAB`."""
    (label_dir / "streams.mgz.ctab").write_text("".join(f"{v} {n}\n" for v, n in STREAMS_CTAB.items()))


def _write_volume_betas(beta_dir: Path, sessions: list[int], shape: tuple[int, int, int, int],
                        affine: np.ndarray, formats: tuple[str, ...],
                        rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Per session, int16 (X, Y, Z, n_trials) betas in each of ``formats``; HDF5 stores (n_trials, Z, Y, X)."""
    betas = {}
    for s in sessions:
        data = rng.integers(-3000, 3000, size=shape, dtype=np.int16)
        betas[s] = data
        if "hdf5" in formats:
            with h5py.File(beta_dir / f"betas_session{s:02d}.hdf5", "w") as handle:
                handle.create_dataset("betas", data=data.transpose(3, 2, 1, 0))
        if "nifti" in formats:
            image = nib.Nifti1Image(data, affine)
            image.header.set_data_dtype(np.int16)
            nib.save(image, beta_dir / f"betas_session{s:02d}.nii.gz")
    return betas


def _write_surface_streams(label_dir: Path, n_vertices: tuple[int, int],
                           rng: np.random.Generator) -> np.ndarray:
    """``{lh,rh}.streams.mgz`` (n_vertices, 1, 1) labels; returns both hemispheres as int32."""
    surface_streams = np.concatenate([_blocks((n,), [1, 5], rng) for n in n_vertices]).astype(np.int32)
    for hemi, part in _hemispheres(surface_streams, n_vertices):
        nib.save(nib.MGHImage(part[:, None, None], np.eye(4)), label_dir / f"{hemi}.streams.mgz")
    return surface_streams


def _write_surface_betas(surf_dir: Path, sessions: list[int], n_vertices: tuple[int, int],
                         trials_per_session: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Per session, ``{lh,rh}.betas_sessionNN.mgh`` float32 (n_vertices, 1, 1, n_trials); returns them."""
    surface = {}
    for s in sessions:
        data = (rng.standard_normal((sum(n_vertices), trials_per_session)) * 2).astype(np.float32)
        surface[s] = data
        for hemi, part in _hemispheres(data, n_vertices):
            nib.save(nib.MGHImage(part[:, None, None, :], np.eye(4)),
                     surf_dir / f"{hemi}.betas_session{s:02d}.mgh")
    return surface


def _write_surface_ncsnr(surf_dir: Path, surface_ncsnr: np.ndarray, n_vertices: tuple[int, int]) -> None:
    """``{lh,rh}.ncsnr.mgh`` (n_vertices, 1, 1) float32."""
    for hemi, part in _hemispheres(surface_ncsnr, n_vertices):
        nib.save(nib.MGHImage(part[:, None, None], np.eye(4)), surf_dir / f"{hemi}.ncsnr.mgh")


def _write_stimuli(path: Path, ids: np.ndarray) -> None:
    """``imgBrick`` (73000, 4, 4, 3) uint8; the images of ``ids`` filled with ``id % 251 + 1``, others 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.unique(ids)
    with h5py.File(path, "w") as handle:
        brick = handle.create_dataset("imgBrick", shape=(N_STIMULI, STIMULUS_SIZE, STIMULUS_SIZE, 3),
                                      dtype=np.uint8, chunks=(64, STIMULUS_SIZE, STIMULUS_SIZE, 3),
                                      compression="gzip")
        pixels = (ids % 251 + 1).astype(np.uint8)[:, None, None, None]
        brick[ids] = np.broadcast_to(pixels, (len(ids), STIMULUS_SIZE, STIMULUS_SIZE, 3))


def _coco_of(ids: np.ndarray) -> tuple[dict[int, int], dict[int, str]]:
    """A made-up COCO id (``500000 + id``) and split (val2017 for every fifth id) of each 73k id."""
    ids = np.unique(ids)
    return ({int(i): 500000 + int(i) for i in ids},
            {int(i): "val2017" if i % 5 == 0 else "train2017" for i in ids})


def _write_stim_info(path: Path, coco_ids: dict[int, int], coco_split: dict[int, str]) -> None:
    """``nsd_stim_info_merged.csv``: unnamed 0-based id column, ``cocoId``, ``cocoSplit``, ``nsdId``."""
    lines = [",cocoId,cocoSplit,nsdId"]
    lines += [f"{i},{coco_ids[i]},{coco_split[i]},{i}" for i in sorted(coco_ids)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _write_captions(folder: Path, coco_ids: dict[int, int], coco_split: dict[int, str]) -> None:
    """``captions_{train,val}2017.json``: two captions per image, annotation ids counting up."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train2017", "val2017"):
        chosen = [coco_ids[i] for i in sorted(coco_ids) if coco_split[i] == split]
        annotations = [{"image_id": c, "id": 2 * n + k, "caption": f"image {c} caption {k}"}
                       for n, c in enumerate(chosen) for k in range(2)]
        images = [{"id": c, "file_name": f"{c:012d}.jpg"} for c in chosen]
        (folder / f"captions_{split}.json").write_text(json.dumps({"images": images,
                                                                   "annotations": annotations}))


def write_nsd_tree(root: str | Path, subject: int = 1, n_sessions: int = 2,
                   trials_per_session: int = 24, volume_shape: tuple[int, int, int] = (7, 9, 5),
                   n_images: int = 40, n_shared: int = 6, formats: tuple[str, ...] = ("hdf5", "nifti"),
                   n_vertices: tuple[int, int] = (30, 26), write_ctab: bool = True,
                   write_responses: bool = True, write_ncsnr: bool = True,
                   write_stimuli: bool = True, seed: int = 0) -> FakeNSD:
    """Write a fake NSD tree under ``root``; returns what was written.

    All random draws come from one generator seeded with ``seed``, in a fixed order (design, ROI
    atlases, volume betas, volume ncsnr, surface labels, surface betas, surface ncsnr), so that the
    same arguments always give the same tree; the ``write_*`` flags skip files, never draws. The
    brainmask (all ones), stimulus brick, stimulus table and COCO captions (``write_stimuli``) are
    derived from those draws without drawing.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    subj = f"subj{subject:02d}"
    sessions = list(range(1, n_sessions + 1))

    masterordering, subjectim, sharedix = _draw_design(rng, n_images, n_shared,
                                                       n_sessions * trials_per_session)
    _write_design(root, masterordering, subjectim, sharedix)
    ids_all = subjectim[subject - 1, masterordering - 1] - 1
    ids = {s: ids_all[(s - 1) * trials_per_session:s * trials_per_session] for s in sessions}
    if write_responses:
        _write_responses(root / f"nsddata/ppdata/{subj}/behav/responses.tsv", subject,
                         trials_per_session, ids, masterordering)

    affine = _volume_affine()
    streams, nsdgeneral, prf = _write_roi_atlases(root / f"nsddata/ppdata/{subj}/func1pt8mm/roi",
                                                  volume_shape, affine, rng)
    nib.save(nib.Nifti1Image(np.ones(volume_shape, np.int16), affine),
             root / f"nsddata/ppdata/{subj}/func1pt8mm/brainmask.nii.gz")
    label_dir = root / "nsddata/freesurfer/fsaverage/label"
    label_dir.mkdir(parents=True, exist_ok=True)
    if write_ctab:
        _write_streams_ctab(label_dir)

    beta_dir = root / f"nsddata_betas/ppdata/{subj}/func1pt8mm/{BETA_VERSION}"
    beta_dir.mkdir(parents=True, exist_ok=True)
    betas = _write_volume_betas(beta_dir, sessions, (*volume_shape, trials_per_session), affine,
                                formats, rng)
    ncsnr = rng.random(volume_shape).astype(np.float32)
    if write_ncsnr:
        nib.save(nib.Nifti1Image(ncsnr, affine), beta_dir / "ncsnr.nii.gz")

    surface_streams = _write_surface_streams(label_dir, n_vertices, rng)
    surf_dir = root / f"nsddata_betas/ppdata/{subj}/fsaverage/{BETA_VERSION}"
    surf_dir.mkdir(parents=True, exist_ok=True)
    surface = _write_surface_betas(surf_dir, sessions, n_vertices, trials_per_session, rng)
    surface_ncsnr = rng.random(sum(n_vertices)).astype(np.float32)
    if write_ncsnr:
        _write_surface_ncsnr(surf_dir, surface_ncsnr, n_vertices)

    coco_ids, coco_split = _coco_of(subjectim.ravel() - 1)
    if write_stimuli:
        _write_stimuli(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", subjectim.ravel() - 1)
        _write_stim_info(root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv", coco_ids, coco_split)
        _write_captions(root / "nsddata_stimuli/stimuli/nsd/annotations", coco_ids, coco_split)

    return FakeNSD(root=root, subject=subject, sessions=sessions,
                   trials_per_session=trials_per_session, volume_shape=volume_shape, affine=affine,
                   betas=betas, ids=ids, shared_ids=sharedix - 1, streams=streams,
                   nsdgeneral=nsdgeneral, prf=prf, ncsnr=ncsnr, n_vertices=n_vertices,
                   surface_streams=surface_streams, surface=surface, surface_ncsnr=surface_ncsnr,
                   coco_ids=coco_ids, coco_split=coco_split)
