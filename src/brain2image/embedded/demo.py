"""The embedded default end to end (``brain2image demo`` / ``make demo``).

Simulate a subject viewing procedural scenes, written as an NSD tree, then run the whole method on
it with the bundled model through :func:`brain2image.pipeline.run_pipeline`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import ReconstructionConfig, RunConfig, SourceConfig, check_config
from ..errors import InvalidArgumentError
from ..methods import builtin_methods
from ..pipeline import run_pipeline
from .simulate.study import simulate_study

__all__ = ["DEMO_STUDY", "DEMO_SOURCES", "BIDS_DEMO_MASKS", "BIDS_DEMO_CONFOUNDS", "run_demo", "demo_config",
           "bids_demo_config"]

#: The formats the demo's study can be simulated in.
DEMO_SOURCES = ("nsd", "bids")

#: Size of the demo's simulated study: 6 sessions (4,410 training trials of 1,820 images) and 30
#: shared test images, so that 30 × 5 samples × 3 diffusion methods keep the demo within a few
#: minutes on a 2-core CPU; everything else (noise: median ncsnr 0.4) is simulate's default.
DEMO_STUDY = {"n_images": 1850, "n_shared": 30, "n_sessions": 6}


def demo_config(out_dir: str | os.PathLike, *, seed: int = 0, threads: int | None = None,
                n_samples: int = 5) -> RunConfig:
    """The demo's run config: the defaults (bundled model), every method, the nsd source on ``<out_dir>/study/nsd``.

    Parameters
    ----------
    out_dir : path
        Run folder.
    seed : int
        Seed of the samples.
    threads : int, optional
        Torch CPU threads (default: all cores).
    n_samples : int
        Samples per test image.

    Returns
    -------
    RunConfig
    """
    out = Path(out_dir)
    recon = ReconstructionConfig(methods=builtin_methods(), seed=seed, n_samples=n_samples,
                                 batch_size=25)
    source = SourceConfig(kind="nsd", root=str((out / "study" / "nsd").resolve()))  # the simulated NSD tree
    return RunConfig(out_dir=str(out.resolve()), threads=threads, source=source, reconstruction=recon)


#: Confounds of the BIDS demo's GLM: the global signals. The simulated head motion is small, and regressing
#: its parameters costs more than it removes (measured once, with scikit-learn's RidgeCV on a study of
#: ncsnr 1.0: z decoding r 0.71 with these, 0.64 with the six motion parameters and their derivatives added).
BIDS_DEMO_CONFOUNDS = ("csf", "white_matter")

#: ROI masks of the simulated BIDS study (``derivatives/rois``), by ROI name; ``{subject}`` is the BIDS subject.
BIDS_DEMO_MASKS = {name: f"derivatives/rois/{{subject}}/anat/{{subject}}_space-T1w_desc-{name}_mask.nii.gz"
                   for name in ("early", "ventral", "visual")}


def bids_demo_config(out_dir: str | os.PathLike, *, seed: int = 0, threads: int | None = None,
                     n_samples: int = 5) -> RunConfig:
    """The BIDS demo's run config: :func:`demo_config` on the simulated BIDS study ``<out_dir>/study/bids``.

    Single-trial betas by LSS from the fMRIPrep-style derivatives, the split from the events'
    ``trial_split`` column (training images are shown twice, as NSD repeats its images), the study's
    ROI masks (``early``, ``ventral`` and their union with the other visual areas, ``visual``, which
    the encoding models), stimuli at their simulated size (64 px).
    """
    config = demo_config(out_dir, seed=seed, threads=threads, n_samples=n_samples)
    root = (Path(out_dir) / "study" / "bids").resolve()
    source = SourceConfig(kind="bids", root=str(root), task="images", space="T1w", image_size=64,
                          split_column="trial_split", confounds=list(BIDS_DEMO_CONFOUNDS),
                          roi={name: str(root / mask) for name, mask in BIDS_DEMO_MASKS.items()})
    encoding = dataclasses.replace(config.encoding, roi="visual")
    return dataclasses.replace(config, source=source, nsd_root=None, subject="sub-01", encoding=encoding)


def _simulate(study_dir: Path, source: str, seed: int, progress: bool, options: dict | None) -> dict[str, float]:
    """Simulate the demo's study (NSD tree or BIDS dataset) unless its truth is there; returns the timing."""
    if (study_dir / "simulation_truth.h5").is_file():
        return {}
    start = time.perf_counter()
    if source == "bids":
        from .simulate.bids_study import simulate_bids_study

        simulate_bids_study(study_dir, preset="demo", seed=seed, progress=progress, **(options or {}))
    else:
        simulate_study(study_dir, preset="demo", seed=seed, progress=progress, **(options or {}))
    return {"simulate": round(time.perf_counter() - start, 2)}


def run_demo(out_dir: str | os.PathLike, *, seed: int = 0, progress: bool = True,
             threads: int | None = None, simulate_options: dict | None = None,
             n_samples: int = 5, redo: Sequence[str] = (), source: str = "nsd") -> Path:
    """The embedded default end to end: simulate a subject, then :func:`run_pipeline`.

    Parameters
    ----------
    out_dir : path
        Run folder (the simulated NSD tree goes to ``<out_dir>/study``).
    seed : int
        Seed of the simulation and of the samples.
    progress : bool
    threads : int, optional
        Torch CPU threads (default: all cores).
    simulate_options : dict, optional
        Arguments of :func:`brain2image.embedded.simulate.study.simulate_study` (sizes, noise) that
        override :data:`DEMO_STUDY`.
    n_samples : int
        Samples per test image (the paper's settings otherwise, plus the ``oracle`` method).
    redo : sequence of str
        Stages to recompute with every stage after them (``--redo``; :func:`run_pipeline`).
    source : {"nsd", "bids"}
        The simulated study's format: an NSD tree, or a BIDS dataset with fMRIPrep-style derivatives
        whose single-trial betas ``prepare`` estimates (:func:`bids_demo_config`).

    Returns
    -------
    Path of the report.
    """
    if source not in DEMO_SOURCES:
        raise InvalidArgumentError(f"demo source {source!r}: expected one of {', '.join(DEMO_SOURCES)}")
    make_config = bids_demo_config if source == "bids" else demo_config
    config = make_config(out_dir, seed=seed, threads=threads, n_samples=n_samples)
    if source == "nsd":
        check_config(config)  # a bad option fails before the study is simulated
    timings = _simulate(Path(out_dir) / "study", source, seed, progress, simulate_options)
    check_config(config)  # a BIDS subject is checked against the simulated dataset
    return run_pipeline(config, progress=progress, timer_seed=timings, redo=redo)
