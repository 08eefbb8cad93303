"""Benchmark of the encoding models on an NSD-sized synthetic problem.

NSD scale: ≈25k training trials (≈8.9k unique images × ~3 repetitions) × 15k voxels; feature
spaces z (6,400 dims) and c (59,136 dims). Training rows are reduced to unique images (exact, see
``brain2image.encoding.models``): the kernel or X^T X is built over unique images only, and c is
handled as a linear kernel over unique images. This 2-core machine cannot run the full problem in
a few minutes, so each space is measured at smaller numbers of unique images (full feature dims,
full voxel count) in a fresh subprocess (so ``ru_maxrss`` is that run's peak), and the time is
extrapolated to 8.9k unique images with the cost model of each solver:
kernel build ∝ n²·p, eigendecompositions ∝ n³, CV/refit ∝ n²·v (primal: X^T X ∝ n·p², SVD ∝ n·p²).

Usage: ``python bench/encoding.py [--sizes 600 1200] [--voxels 15000]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

SPACES = {"z": 6400, "c": 59136}
NSD_UNIQUE, NSD_TRIALS, NSD_VOXELS = 8859, 24980, 15000


def one(space: str, n_unique: int, n_voxels: int, n_test: int = 200) -> dict:
    """Time reduce / prepare / fit of one space at ``n_unique`` images; peak RSS of this process."""
    import torch

    torch.set_num_threads(2)
    from brain2image.encoding.models import fit_space, prepare_space, reduce_trials
    from brain2image.stats import pearson_columns

    rng = np.random.default_rng(0)
    p = SPACES[space]
    X = rng.standard_normal((n_unique + n_test, p), dtype=np.float32)
    train_index = np.repeat(np.arange(n_unique), 3)
    W = rng.standard_normal((p, 1), dtype=np.float32)
    Y = (X[train_index] @ W) / np.sqrt(p) + rng.standard_normal((len(train_index), n_voxels), dtype=np.float32)
    t0 = time.perf_counter()
    design = reduce_trials(train_index, Y)
    del Y
    t1 = time.perf_counter()
    data = prepare_space(X, design, np.arange(n_unique, n_unique + n_test))
    t2 = time.perf_counter()
    pred, _ = fit_space(data, design, n_folds=5, target_chunk=4096)
    t3 = time.perf_counter()
    pearson_columns(np.zeros_like(pred) + rng.standard_normal(pred.shape), pred, fill=0.0)
    return {"space": space, "kind": data.kind, "n_unique": n_unique, "n_trials": len(train_index),
            "n_voxels": n_voxels, "n_features": p, "reduce_s": t1 - t0, "prepare_s": t2 - t1, "fit_s": t3 - t2,
            "total_s": time.perf_counter() - t0,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def main() -> None:
    """Measure each space at ``--sizes`` in fresh subprocesses and extrapolate to NSD scale."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[600, 1200], help="unique images measured")
    parser.add_argument("--voxels", type=int, default=NSD_VOXELS)
    parser.add_argument("--one", nargs=2, metavar=("SPACE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.voxels)))
        return
    for space in SPACES:
        rows = []
        for n in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--one", space, str(n), "--voxels", str(args.voxels)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"measured  {space}: {row['kind']:6s} n_unique={n:5d} trials={row['n_trials']:6d} "
                  f"voxels={row['n_voxels']} p={row['n_features']}: prepare {row['prepare_s']:.1f}s "
                  f"fit {row['fit_s']:.1f}s total {row['total_s']:.1f}s peak RSS {row['peak_rss_gb']:.2f} GB")
        # Fit time ~ a·n^k between the two largest measured sizes (k clipped to the cost model's 1..3).
        a, b = rows[-2], rows[-1]
        k = float(np.clip(np.log(b["total_s"] / a["total_s"]) / np.log(b["n_unique"] / a["n_unique"]), 1, 3))
        t_nsd = b["total_s"] * (NSD_UNIQUE / b["n_unique"]) ** k
        p = b["n_features"]
        # Memory at NSD scale: features of all images + targets (trials) + kernels / Gram, float32.
        mem = 4 * ((NSD_UNIQUE + 1000) * p + NSD_TRIALS * NSD_VOXELS + 2 * NSD_UNIQUE * NSD_VOXELS
                   + (3 * NSD_UNIQUE**2 if b["kind"] == "kernel" else 3 * p * p + NSD_UNIQUE * p)) / 1024**3
        print(f"extrapolated {space}: NSD scale ({NSD_UNIQUE} unique images, {NSD_TRIALS} trials, "
              f"{NSD_VOXELS} voxels): ~{t_nsd / 60:.1f} min on this machine (time ∝ n^{k:.2f}), "
              f"~{mem:.1f} GB peak (estimate)")


if __name__ == "__main__":
    main()
