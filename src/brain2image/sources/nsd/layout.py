"""Where every NSD file lives: one place resolves the paths of an NSD tree.

Paths follow the NSD data manual (see ``docs/nsd_format.md``); the root is the folder that holds
``nsddata/``, ``nsddata_betas/`` and ``nsddata_stimuli/``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import MissingFileError

__all__ = [
    "BETA_FORMATS",
    "BETA_SCALE",
    "DEFAULT_BETA_VERSION",
    "HEMIS",
    "NSDLayout",
    "SESSIONS_PER_SUBJECT",
    "SPACES",
    "SIMULATION_MARKER",
    "TRIALS_PER_SESSION",
    "is_simulated_tree",
    "resolve_nsd_root",
]

#: Sessions each subject (1..8) completed.
SESSIONS_PER_SUBJECT: dict[int, int] = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
#: Stimulus trials per scan session (6 runs x 63 + 6 runs x 62).
TRIALS_PER_SESSION = 750
#: Betas are stored as int16 percent signal change times this factor.
BETA_SCALE = 300.0
#: The beta version Takagi & Nishimoto used.
DEFAULT_BETA_VERSION = "betas_fithrf_GLMdenoise_RR"
#: Spaces the reader supports (volume spaces plus the fsaverage surface).
SPACES = ("func1pt8mm", "func1mm", "MNI", "fsaverage")
#: On-disk formats of volume betas.
BETA_FORMATS = ("hdf5", "nifti")
#: Surface hemispheres, in the order their vertices are concatenated.
HEMIS = ("lh", "rh")
#: File at the root of an NSD tree written by ``brain2image simulate``.
SIMULATION_MARKER = "brain2image_simulation.json"
#: The simulator's ground truth, beside (not inside) the NSD tree it writes.
SIMULATION_TRUTH = "simulation_truth.h5"


def resolve_nsd_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the NSD root: the explicit argument, else ``$NSD_ROOT``.

    Raises
    ------
    MissingFileError
        If neither is given or the folder does not exist.
    """
    if root is None:
        root = os.environ.get("NSD_ROOT")
        if not root:
            raise MissingFileError("no NSD root given: pass --nsd-root / nsd_root= or set $NSD_ROOT")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise MissingFileError(f"NSD root {path} is not a directory")
    return path


def is_simulated_tree(nsd_root: str | os.PathLike) -> bool:
    """Whether ``nsd_root`` is a simulated NSD tree rather than real data.

    True when the root holds :data:`SIMULATION_MARKER` or its parent folder holds
    ``simulation_truth.h5`` (the layout ``brain2image simulate --out DIR`` writes: ``DIR/nsd``).
    """
    root = Path(nsd_root).expanduser()
    return (root / SIMULATION_MARKER).is_file() or (root.resolve().parent / SIMULATION_TRUTH).is_file()


#: Experiment-wide files, relative to the NSD root (the same for every subject).
EXPDESIGN_RELPATH = Path("nsddata/experiments/nsd/nsd_expdesign.mat")
STIM_INFO_RELPATH = Path("nsddata/experiments/nsd/nsd_stim_info_merged.csv")
STIMULI_RELPATH = Path("nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5")
#: Folder of the COCO ``captions_{train,val}2017.json`` files (not shipped with NSD).
CAPTIONS_RELDIR = Path("nsddata_stimuli/stimuli/nsd/annotations")

@dataclass(frozen=True)
class NSDLayout:
    """The paths of one subject's files in an NSD tree.

    Parameters
    ----------
    root : path-like or None
        NSD root (holds ``nsddata/``); ``None`` reads ``$NSD_ROOT``.
    subject : int
        Subject number, 1..8.
    space : str
        ``func1pt8mm`` (default), ``func1mm``, ``MNI`` or ``fsaverage``.
    beta_version : str
        Beta folder name, e.g. ``betas_fithrf_GLMdenoise_RR``.
    """

    root: Path
    subject: int
    space: str = "func1pt8mm"
    beta_version: str = DEFAULT_BETA_VERSION

    def __init__(self, root: str | os.PathLike | None, subject: int, space: str = "func1pt8mm",
                 beta_version: str = DEFAULT_BETA_VERSION) -> None:
        if not 1 <= int(subject) <= 8:
            raise ValueError(f"subject must be 1..8, got {subject!r}")
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        object.__setattr__(self, "root", resolve_nsd_root(root))
        object.__setattr__(self, "subject", int(subject))
        object.__setattr__(self, "space", space)
        object.__setattr__(self, "beta_version", beta_version)

    # ------------------------------------------------------------------ naming
    @property
    def subj(self) -> str:
        """Subject folder name, ``subjXX``."""
        return f"subj{self.subject:02d}"

    @property
    def is_surface(self) -> bool:
        """True for the fsaverage surface space."""
        return self.space == "fsaverage"

    # ------------------------------------------------------------ experiment
    def expdesign(self) -> Path:
        """``nsd_expdesign.mat`` (masterordering, subjectim, sharedix; 1-based)."""
        return self.root / EXPDESIGN_RELPATH

    def stim_info(self) -> Path:
        """``nsd_stim_info_merged.csv``: one row per 73k image."""
        return self.root / STIM_INFO_RELPATH

    def responses(self) -> Path:
        """The subject's ``behav/responses.tsv``: one row per stimulus trial."""
        return self.root / f"nsddata/ppdata/{self.subj}/behav/responses.tsv"

    # --------------------------------------------------------------- volumes
    def ppdata_dir(self) -> Path:
        """``nsddata/ppdata/subjXX/<space>`` (volume spaces)."""
        return self.root / f"nsddata/ppdata/{self.subj}/{self.space}"

    def brainmask(self) -> Path:
        """``brainmask.nii.gz`` of the volume space."""
        return self.ppdata_dir() / "brainmask.nii.gz"

    def roi_volume(self, atlas: str) -> Path:
        """Volume atlas ``roi/<atlas>.nii.gz`` of the volume space."""
        return self.ppdata_dir() / "roi" / f"{atlas}.nii.gz"

    def label_ctab(self, atlas: str) -> Path:
        """Label table ``nsddata/freesurfer/fsaverage/label/<atlas>.mgz.ctab``."""
        return self.root / f"nsddata/freesurfer/fsaverage/label/{atlas}.mgz.ctab"

    def subject_surface_label(self, hemi: str, atlas: str) -> Path:
        """Subject-native surface atlas ``nsddata/freesurfer/subjXX/label/<hemi>.<atlas>.mgz``."""
        return self.root / f"nsddata/freesurfer/{self.subj}/label/{hemi}.{atlas}.mgz"

    def fsaverage_label(self, hemi: str, atlas: str) -> Path:
        """Fsaverage atlas ``nsddata/freesurfer/fsaverage/label/<hemi>.<atlas>.mgz``, shape (n_vertices, 1, 1)."""
        return self.root / f"nsddata/freesurfer/fsaverage/label/{hemi}.{atlas}.mgz"

    # ----------------------------------------------------------------- betas
    def betas_dir(self) -> Path:
        """``nsddata_betas/ppdata/subjXX/<space>/<beta_version>``."""
        return self.root / f"nsddata_betas/ppdata/{self.subj}/{self.space}/{self.beta_version}"

    def betas_session(self, session: int, beta_format: str = "hdf5") -> Path:
        """Volume betas of one 1-based session: ``betas_sessionNN.hdf5`` or ``.nii.gz``."""
        suffix = {"hdf5": ".hdf5", "nifti": ".nii.gz"}.get(beta_format)
        if suffix is None:
            raise ValueError(f"beta_format must be one of {BETA_FORMATS}, got {beta_format!r}")
        return self.betas_dir() / f"betas_session{int(session):02d}{suffix}"

    def surface_betas(self, session: int, hemi: str) -> Path:
        """Fsaverage betas ``<hemi>.betas_sessionNN.mgh``, shape (n_vertices, 1, 1, n_trials)."""
        return self.betas_dir() / f"{hemi}.betas_session{int(session):02d}.mgh"

    def session_files(self, session: int, beta_format: str = "hdf5") -> list[Path]:
        """Every beta file one session needs in this space (two hemispheres on fsaverage)."""
        if self.is_surface:
            return [self.surface_betas(session, hemi) for hemi in HEMIS]
        return [self.betas_session(session, beta_format)]

    def ncsnr(self) -> Path:
        """Noise-ceiling SNR ``ncsnr.nii.gz`` beside the volume betas."""
        return self.betas_dir() / "ncsnr.nii.gz"

    def surface_ncsnr(self, hemi: str) -> Path:
        """Fsaverage noise-ceiling SNR ``<hemi>.ncsnr.mgh``, shape (n_vertices, 1, 1)."""
        return self.betas_dir() / f"{hemi}.ncsnr.mgh"

    def ncsnr_files(self) -> list[Path]:
        """The ncsnr file(s) of this space: one volume, or one per hemisphere on fsaverage."""
        if self.is_surface:
            return [self.surface_ncsnr(hemi) for hemi in HEMIS]
        return [self.ncsnr()]

    def sessions_on_disk(self, beta_format: str = "hdf5") -> list[int]:
        """1-based sessions whose beta files are all present, sorted."""
        directory = self.betas_dir()
        if not directory.is_dir():
            return []
        if self.is_surface:
            pattern = re.compile(r"^lh\.betas_session(\d+)\.mgh$")
        else:
            suffix = {"hdf5": r"\.hdf5", "nifti": r"\.nii\.gz"}[beta_format]
            pattern = re.compile(rf"^betas_session(\d+){suffix}$")
        found = []
        for entry in directory.iterdir():
            match = pattern.match(entry.name)
            if match:
                session = int(match.group(1))
                if all(p.is_file() for p in self.session_files(session, beta_format)):
                    found.append(session)
        return sorted(found)

    # -------------------------------------------------------------- stimuli
    def stimuli(self) -> Path:
        """``nsd_stimuli.hdf5`` (dataset ``imgBrick``, (73000, 425, 425, 3) uint8)."""
        return self.root / STIMULI_RELPATH

    def captions(self, split: str) -> Path:
        """COCO ``captions_<split>.json`` (``train2017`` or ``val2017``), added by the user."""
        return self.root / CAPTIONS_RELDIR / f"captions_{split}.json"
