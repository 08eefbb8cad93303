"""Write small fake NSD trees (real layout, tiny sizes) with known betas, for the nsd tests.

Independent of ``brain2image.embedded.simulate``: every file is written here with h5py / nibabel / scipy,
following docs/nsd_format.md (1-based ids on disk, HDF5 betas in (n_trials, Z, Y, X) order).
"""

from __future__ import annotations

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

    def path(self, relative: str) -> Path:
        """Absolute path of a file of the tree."""
        return self.root / relative

    def betas_file(self, session: int, suffix: str = ".hdf5") -> Path:
        """Path of a session's volume betas."""
        return (self.root / f"nsddata_betas/ppdata/subj{self.subject:02d}/func1pt8mm/"
                f"{BETA_VERSION}/betas_session{session:02d}{suffix}")


def _blocks(shape: tuple[int, ...], values: list[int], rng: np.random.Generator) -> np.ndarray:
    """A label volume: each value fills a random contiguous region, the rest 0."""
    out = np.zeros(shape, dtype=np.int16)
    flat = out.reshape(-1)
    cuts = np.sort(rng.choice(np.arange(1, flat.size), size=2 * len(values), replace=False))
    for value, (a, b) in zip(values, cuts.reshape(-1, 2), strict=True):
        flat[a:b] = value
    return out


def write_nsd_tree(root: str | Path, subject: int = 1, n_sessions: int = 2,
                   trials_per_session: int = 24, volume_shape: tuple[int, int, int] = (7, 9, 5),
                   n_images: int = 40, n_shared: int = 6, formats: tuple[str, ...] = ("hdf5", "nifti"),
                   n_vertices: tuple[int, int] = (30, 26), write_ctab: bool = True,
                   write_responses: bool = True, write_ncsnr: bool = True,
                   seed: int = 0) -> FakeNSD:
    """Write a fake NSD tree under ``root``; returns what was written."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    subj = f"subj{subject:02d}"
    n_trials = n_sessions * trials_per_session

    # ---- design: subjectim 1-based, shared images first and sorted; masterordering 1-based
    pool = rng.choice(np.arange(1, 73001), size=n_shared + 8 * (n_images - n_shared), replace=False)
    sharedix = np.sort(pool[:n_shared])
    own = pool[n_shared:].reshape(8, n_images - n_shared)
    subjectim = np.concatenate([np.tile(sharedix, (8, 1)), own], axis=1)
    # shared images seen 1, 2 or 3 times each
    shared_draws = np.repeat(np.arange(1, n_shared + 1), 1 + np.arange(n_shared) % 3)
    others = rng.integers(n_shared + 1, n_images + 1, size=n_trials - shared_draws.size)
    masterordering = rng.permutation(np.concatenate([shared_draws, others]))
    expdesign = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    expdesign.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(expdesign, {"masterordering": masterordering[None, :].astype(np.float64),
                                 "subjectim": subjectim.astype(np.float64),
                                 "sharedix": sharedix[None, :].astype(np.float64)})
    ids_all = subjectim[subject - 1, masterordering - 1] - 1
    sessions = list(range(1, n_sessions + 1))
    ids = {s: ids_all[(s - 1) * trials_per_session:s * trials_per_session] for s in sessions}

    # ---- behaviour: 12 runs per session, TRIAL counted within the run
    if write_responses:
        rows = []
        for s in sessions:
            runs = np.array_split(np.arange(trials_per_session), min(12, trials_per_session))
            for run, trials in enumerate(runs, start=1):
                for t_in_run, t in enumerate(trials, start=1):
                    rows.append([subject, s, run, t_in_run, ids[s][t] + 1,
                                 int(masterordering[(s - 1) * trials_per_session + t]), 0.5, 0, 1,
                                 700, 0, 0, 0, 0, 1, 0, 0, 1, 0])
        header = ["SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD",
                  "ISCORRECT", "RT", "CHANGEMIND", "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT",
                  "ISCORRECTCURRENT", "TOTAL1", "TOTAL2", "BUTTON", "MISSINGDATA"]
        responses = root / f"nsddata/ppdata/{subj}/behav/responses.tsv"
        responses.parent.mkdir(parents=True, exist_ok=True)
        responses.write_text("\n".join(["\t".join(header)]
                                       + ["\t".join(map(str, r)) for r in rows]) + "\n")

    # ---- ROI atlases (X, Y, Z), int16
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -5.0]
    streams = _blocks(volume_shape, [1, 5, 2, 6], rng)
    nsdgeneral = np.where(streams > 0, 1, rng.choice([-1, 0], size=volume_shape)).astype(np.int16)
    prf = _blocks(volume_shape, [1, 2, 3], rng)
    roi_dir = root / f"nsddata/ppdata/{subj}/func1pt8mm/roi"
    roi_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (("streams", streams), ("nsdgeneral", nsdgeneral), ("prf-visualrois", prf)):
        nib.save(nib.Nifti1Image(data, affine), roi_dir / f"{name}.nii.gz")
    label_dir = root / "nsddata/freesurfer/fsaverage/label"
    label_dir.mkdir(parents=True, exist_ok=True)
    if write_ctab:
        (label_dir / "streams.mgz.ctab").write_text(
            "".join(f"{v} {n}\n" for v, n in STREAMS_CTAB.items()))

    # ---- volume betas: int16 (X, Y, Z, n_trials); HDF5 stores (n_trials, Z, Y, X)
    beta_dir = root / f"nsddata_betas/ppdata/{subj}/func1pt8mm/{BETA_VERSION}"
    beta_dir.mkdir(parents=True, exist_ok=True)
    betas = {}
    for s in sessions:
        data = rng.integers(-3000, 3000, size=(*volume_shape, trials_per_session), dtype=np.int16)
        betas[s] = data
        if "hdf5" in formats:
            with h5py.File(beta_dir / f"betas_session{s:02d}.hdf5", "w") as handle:
                handle.create_dataset("betas", data=data.transpose(3, 2, 1, 0))
        if "nifti" in formats:
            image = nib.Nifti1Image(data, affine)
            image.header.set_data_dtype(np.int16)
            nib.save(image, beta_dir / f"betas_session{s:02d}.nii.gz")
    ncsnr = rng.random(volume_shape).astype(np.float32)
    if write_ncsnr:
        nib.save(nib.Nifti1Image(ncsnr, affine), beta_dir / "ncsnr.nii.gz")

    # ---- fsaverage: labels (n_vertices, 1, 1), betas (n_vertices, 1, 1, n_trials) float32
    surface_streams = np.concatenate([_blocks((n,), [1, 5], rng) for n in n_vertices]).astype(np.int32)
    surf_dir = root / f"nsddata_betas/ppdata/{subj}/fsaverage/{BETA_VERSION}"
    surf_dir.mkdir(parents=True, exist_ok=True)
    split = [0, n_vertices[0], sum(n_vertices)]
    for h, hemi in enumerate(("lh", "rh")):
        part = surface_streams[split[h]:split[h + 1]]
        nib.save(nib.MGHImage(part[:, None, None], np.eye(4)), label_dir / f"{hemi}.streams.mgz")
    surface = {}
    for s in sessions:
        data = (rng.standard_normal((sum(n_vertices), trials_per_session)) * 2).astype(np.float32)
        surface[s] = data
        for h, hemi in enumerate(("lh", "rh")):
            part = data[split[h]:split[h + 1]]
            nib.save(nib.MGHImage(part[:, None, None, :], np.eye(4)),
                     surf_dir / f"{hemi}.betas_session{s:02d}.mgh")

    surface_ncsnr = rng.random(sum(n_vertices)).astype(np.float32)
    if write_ncsnr:
        for h, hemi in enumerate(("lh", "rh")):
            nib.save(nib.MGHImage(surface_ncsnr[split[h]:split[h + 1], None, None], np.eye(4)),
                     surf_dir / f"{hemi}.ncsnr.mgh")

    return FakeNSD(root=root, subject=subject, sessions=sessions,
                   trials_per_session=trials_per_session, volume_shape=volume_shape, affine=affine,
                   betas=betas, ids=ids, shared_ids=sharedix - 1, streams=streams,
                   nsdgeneral=nsdgeneral, prf=prf, ncsnr=ncsnr, n_vertices=n_vertices,
                   surface_streams=surface_streams, surface=surface, surface_ncsnr=surface_ncsnr)
