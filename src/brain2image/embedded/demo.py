"""The embedded default end to end (``brain2image demo`` / ``make demo``): simulate a subject
viewing procedural scenes, written as an NSD tree, then run the whole method on it with the
bundled model through :func:`brain2image.pipeline.run_pipeline`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..config import ReconstructionConfig
from ..pipeline import RunConfig, run_pipeline
from .simulate.study import simulate_study

__all__ = ["DEMO_STUDY", "run_demo"]

#: Size of the demo's simulated study: 6 sessions (4,410 training trials of 1,820 images) and 30
#: shared test images, so that 30 × 5 samples × 3 diffusion methods keep the demo within a few
#: minutes on a 2-core CPU; everything else (noise: median ncsnr 0.4) is simulate's default.
DEMO_STUDY = {"n_images": 1850, "n_shared": 30, "n_sessions": 6}


def run_demo(out_dir: str | os.PathLike, *, seed: int = 0, progress: bool = True,
             threads: int | None = None, simulate_options: dict | None = None,
             n_samples: int = 5) -> Path:
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
        Arguments of :func:`brain2image.simulate.study.simulate_study` (sizes, noise) that
        override :data:`DEMO_STUDY`.
    n_samples : int
        Samples per test image (the paper's settings otherwise, plus the ``oracle`` method).

    Returns
    -------
    Path of the report.
    """
    out = Path(out_dir)
    study_dir = out / "study"
    timings: dict[str, float] = {}
    if not (study_dir / "simulation_truth.h5").is_file():
        start = time.perf_counter()
        simulate_study(study_dir, seed=seed, progress=progress, **{**DEMO_STUDY, **(simulate_options or {})})
        timings["simulate"] = round(time.perf_counter() - start, 2)
    recon = ReconstructionConfig(methods=("z_only", "c_only", "z_plus_c", "oracle"), seed=seed,
                                 n_samples=n_samples, batch_size=25)
    config = RunConfig(nsd_root=str((study_dir / "nsd").resolve()), out_dir=str(out.resolve()),
                       threads=threads, reconstruction=recon)
    return run_pipeline(config, progress=progress, timer_seed=timings)

