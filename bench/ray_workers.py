"""Benchmark: the demo's reconstruction stage on a local Ray of 1 vs 2 workers.

A demo run folder (the embedded simulated study, bundled model) is made up to ``fit`` once; then
``reconstruct`` runs as Ray tasks (:func:`brain2image.cluster.ray_runner.run_on_ray`) on a local
Ray of 1 CPU (one shard) and of 2 CPUs (two shards), each time from an empty ``recon/``. Wall
times include the workers' start (imports, model load), as a real run pays them; the Ray
session's own start is left out. Prints both times, their ratio and the load average.

Run: ``OMP_NUM_THREADS=1 python bench/ray_workers.py [--out /tmp/b2i_ray_bench] [--n-samples 1] [--small]``
(``--small``: 300 images, 1 session instead of the demo's 1,850 images, 6 sessions).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from pathlib import Path

from brain2image.cluster.ray_runner import run_on_ray
from brain2image.config import RunConfig
from brain2image.embedded.demo import demo_config
from brain2image.embedded.simulate.study import simulate_study
from brain2image.pipeline import run_pipeline

#: A smaller simulated study than the demo's (``--small``).
SMALL_STUDY = {"n_images": 300, "n_shared": 30, "n_sessions": 1}


def demo_folder_up_to_fit(out: Path, n_samples: int, small: bool) -> RunConfig:
    """The demo's run folder in ``out`` with prepare, features and fit done; its config (one torch thread)."""
    config = dataclasses.replace(demo_config(out, n_samples=n_samples), threads=1)
    if not (out / "study" / "simulation_truth.h5").is_file():
        simulate_study(out / "study", preset="demo", seed=0, progress=False, **(SMALL_STUDY if small else {}))
    run_pipeline(config, progress=False, stages=["prepare", "features", "fit"])
    return config


def timed_reconstruction(config: RunConfig, workers: int) -> float:
    """Seconds of the reconstruction stage on a local Ray of ``workers`` CPUs (``workers`` shards)."""
    import ray

    shutil.rmtree(Path(config.out_dir) / "recon", ignore_errors=True)
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        run_on_ray(config, n_shards=workers, stages=["reconstruct"], progress=False)
        return time.perf_counter() - start
    finally:
        ray.shutdown()


def main() -> None:
    """Make the demo folder, time 1 and 2 workers, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/b2i_ray_bench"))
    parser.add_argument("--n-samples", type=int, default=1, help="samples per test image (the demo: 5)")
    parser.add_argument("--small", action="store_true", help="a 300-image study instead of the demo's")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    config = demo_folder_up_to_fit(args.out, args.n_samples, args.small)
    print(f"demo folder up to fit: {time.perf_counter() - start:.1f} s ({args.out})")
    seconds = {workers: timed_reconstruction(config, workers) for workers in (1, 2)}
    for workers, wall in seconds.items():
        print(f"reconstruct on {workers} Ray worker(s): {wall:.1f} s")
    print(f"ratio 1 worker / 2 workers: {seconds[1] / seconds[2]:.2f}")
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
