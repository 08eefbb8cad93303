"""The embedded default end to end (``brain2image demo`` / ``make demo``).

Simulate a subject viewing procedural scenes, written as an NSD tree, then run the whole method on
it with the bundled model through :func:`brain2image.pipeline.run_pipeline`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import ReconstructionConfig, RunConfig, SourceConfig, check_config
from ..methods import builtin_methods
from ..pipeline import run_pipeline
from .simulate.study import simulate_study

__all__ = ["DEMO_STUDY", "run_demo", "demo_config"]

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


def run_demo(out_dir: str | os.PathLike, *, seed: int = 0, progress: bool = True,
             threads: int | None = None, simulate_options: dict | None = None,
             n_samples: int = 5, redo: Sequence[str] = ()) -> Path:
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

    Returns
    -------
    Path of the report.
    """
    config = demo_config(out_dir, seed=seed, threads=threads, n_samples=n_samples)
    check_config(config)  # a bad option fails before the study is simulated
    study_dir = Path(out_dir) / "study"
    timings: dict[str, float] = {}
    if not (study_dir / "simulation_truth.h5").is_file():
        start = time.perf_counter()
        simulate_study(study_dir, preset="demo", seed=seed, progress=progress, **(simulate_options or {}))
        timings["simulate"] = round(time.perf_counter() - start, 2)
    return run_pipeline(config, progress=progress, timer_seed=timings, redo=redo)
