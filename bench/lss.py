"""Benchmark single-trial betas (LSS and LSA) on one run at the issue's size.

One synthetic, seeded run (default 300 volumes x 60 trials x 100,000 voxels, TR 1.5 s, jittered
onsets, 12 confounds, float32 BOLD in scanner units) is generated in a fresh process per method, so
each peak RSS is that run's own; the wall time covers ``single_trial_betas`` only (design, nuisance
projection, percent signal change, solve), not the data generation. For comparison, nilearn's
per-trial reference (one ``FirstLevelModel`` per trial, the beta-series pattern) is timed on a small
voxel count, with the largest difference from ``single_trial_betas`` on the same data.

Usage: ``python bench/lss.py [--volumes 300] [--trials 60] [--voxels 100000] [--reference-voxels 500]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

TR = 1.5


def _peak_mb() -> float:
    """Peak resident memory of this process (MB): VmHWM, which ``_reset_peak`` can lower; else ru_maxrss."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak() -> bool:
    """Reset the peak to the current RSS (Linux ``clear_refs`` 5), so a peak excludes data generation."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def synthetic_run(n_volumes: int, n_trials: int, n_voxels: int, seed: int = 0) -> dict:
    """BOLD (n_volumes, n_voxels) float32, frame times, onsets, durations and confounds of one run."""
    from brain2image.glm import GlmSettings, trial_design

    rng = np.random.default_rng(seed)
    frame_times = np.arange(n_volumes) * TR
    spacing = (frame_times[-1] - 20.0) / n_trials
    onsets = 6.0 + np.arange(n_trials) * spacing + rng.uniform(0, spacing / 2, n_trials)
    durations = np.full(n_trials, 3.0)
    confounds = rng.standard_normal((n_volumes, 12)).cumsum(axis=0) * 0.05
    trials = trial_design(frame_times, onsets, durations, None, GlmSettings()).trials.astype(np.float32)
    bold = rng.standard_normal((n_volumes, n_voxels), dtype=np.float32) * 10
    bold += trials @ (rng.standard_normal((n_trials, n_voxels), dtype=np.float32) * 20)
    bold += rng.uniform(800, 1500, n_voxels).astype(np.float32)
    return {"bold": bold, "frame_times": frame_times, "onsets": onsets, "durations": durations,
            "confounds": confounds}


def one(method: str, n_volumes: int, n_trials: int, n_voxels: int) -> dict:
    """Time one ``single_trial_betas`` call; peak RSS of this process before and after it."""
    from brain2image.glm import GlmSettings, single_trial_betas

    run = synthetic_run(n_volumes, n_trials, n_voxels)
    reset = _reset_peak()
    before = _peak_mb()
    t0 = time.perf_counter()
    betas = single_trial_betas(**run, settings=GlmSettings(method=method))
    seconds = time.perf_counter() - t0
    return {"method": method, "seconds": seconds, "peak_rss_mb": _peak_mb(), "peak_rss_before_mb": before,
            "peak_reset": reset,
            "bold_mb": run["bold"].nbytes / 1024**2, "betas_mb": betas.nbytes / 1024**2}


def reference(n_volumes: int, n_trials: int, n_voxels: int) -> dict:
    """Time nilearn's one-FirstLevelModel-per-trial LSS and compare it with ``single_trial_betas``."""
    import nibabel as nib
    import pandas as pd
    from nilearn.glm.first_level import FirstLevelModel

    from brain2image.glm import single_trial_betas

    run = synthetic_run(n_volumes, n_trials, n_voxels)
    image = nib.Nifti1Image(run["bold"].T[:, None, None, :].astype(np.float64), np.eye(4))
    mask = nib.Nifti1Image(np.ones((n_voxels, 1, 1), dtype=np.uint8), np.eye(4))
    confounds = pd.DataFrame(run["confounds"], columns=[f"c{k}" for k in range(run["confounds"].shape[1])])
    t0 = time.perf_counter()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n_trials):
            events = pd.DataFrame({"onset": run["onsets"], "duration": run["durations"],
                                   "trial_type": np.where(np.arange(n_trials) == i, "trial", "other")})
            model = FirstLevelModel(t_r=TR, hrf_model="glover", drift_model="cosine", high_pass=0.01,
                                    signal_scaling=0, noise_model="ols", mask_img=mask)
            model.fit(image, events=events, confounds=confounds)
            rows.append(model.compute_contrast("trial", output_type="effect_size").get_fdata()[:, 0, 0])
    nilearn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = single_trial_betas(**{**run, "bold": run["bold"].astype(np.float64)})
    ours_s = time.perf_counter() - t0
    ref = np.stack(rows)
    return {"nilearn_s": nilearn_s, "ours_s": ours_s,
            "max_rel_diff": float(np.abs(ours - ref).max() / np.abs(ref).max())}


def _child(args: argparse.Namespace, what: str) -> dict:
    command = [sys.executable, __file__, "--one", what, "--volumes", str(args.volumes), "--trials", str(args.trials),
               "--voxels", str(args.voxels), "--reference-voxels", str(args.reference_voxels)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure LSS and LSA in fresh processes, then nilearn's per-trial reference on a few voxels."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--voxels", type=int, default=100_000)
    parser.add_argument("--reference-voxels", type=int, default=500, help="voxels of the nilearn comparison")
    parser.add_argument("--methods", nargs="+", default=["lss", "lsa"], choices=["lss", "lsa"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one == "reference":
        print(json.dumps(reference(args.volumes, args.trials, args.reference_voxels)))
        return
    if args.one:
        print(json.dumps(one(args.one, args.volumes, args.trials, args.voxels)))
        return
    for method in args.methods:
        row = _child(args, method)
        print(f"{method}: {args.volumes} volumes x {args.trials} trials x {args.voxels} voxels: "
              f"{row['seconds']:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB "
              f"({row['peak_rss_before_mb']:.0f} MB {'at' if row['peak_reset'] else 'peak before'} the call, "
              f"with the BOLD: {row['bold_mb']:.0f} MB float32)")
    row = _child(args, "reference")
    print(f"nilearn reference (one FirstLevelModel per trial, LSS): {args.reference_voxels} voxels: "
          f"{row['nilearn_s']:.1f} s vs single_trial_betas {row['ours_s']:.3f} s; "
          f"max |difference| / max |beta| = {row['max_rel_diff']:.1e}")


if __name__ == "__main__":
    main()
