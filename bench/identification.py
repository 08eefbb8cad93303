"""Benchmark: vectorised two-way identification against the reference nested loops.

Data: 982 images × 5 samples × 4096-d random features with some signal (samples =
``signal`` × ground truth + noise; the default 0.02 keeps accuracies away from 1). The
nested-loop transcriptions (np.corrcoef per pair, as in the published evaluation scripts)
are timed on a subset of items, where the vectorised versions must give identical numbers
(to 1e-12); the vectorised versions are also timed at full size.

Run: ``OMP_NUM_THREADS=1 python bench/identification.py [--n-subset 200] [--signal 0.02]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from brain2image.evaluation.identification import (
    takagi_identification_per_item,
    two_way_identification_per_item,
)


def loop_two_way(real: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """MindEye / Brain-Diffuser definition with one np.corrcoef per pair."""
    n = len(real)
    out = np.empty(n)
    for j in range(n):
        own = np.corrcoef(real[j], pred[j])[0, 1]
        out[j] = sum(np.corrcoef(real[i], pred[j])[0, 1] < own for i in range(n) if i != j) / (n - 1)
    return out


def loop_takagi(gt: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Takagi & Nishimoto's definition with one np.corrcoef per (image, sample) pair."""
    n, k = samples.shape[:2]
    out = np.empty(n)
    for i in range(n):
        own = np.mean([np.corrcoef(gt[i], samples[i, m])[0, 1] for m in range(k)])
        wins = 0
        for j in range(n):
            if j != i:
                wins += own > np.mean([np.corrcoef(gt[i], samples[j, m])[0, 1] for m in range(k)])
        out[i] = wins / (n - 1)
    return out


def timed(fn, *args):
    """``fn(*args)`` and its wall time in seconds."""
    t0 = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - t0


def main() -> None:
    """Check the vectorised identifications against the loops on a subset, then time both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=982)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--n-subset", type=int, default=200)
    parser.add_argument("--signal", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    gt = rng.normal(size=(args.n, args.d)).astype(np.float32)
    samples = (args.signal * gt[:, None, :] + rng.normal(size=(args.n, args.k, args.d))).astype(np.float32)

    m = args.n_subset
    sub_gt, sub_s = gt[:m], samples[:m]
    ref_tw, t_ref_tw = timed(loop_two_way, sub_gt, sub_s[:, 0])
    vec_tw, t_vec_tw = timed(two_way_identification_per_item, sub_gt, sub_s[:, 0])
    ref_tk, t_ref_tk = timed(loop_takagi, sub_gt, sub_s)
    vec_tk, t_vec_tk = timed(takagi_identification_per_item, sub_gt, sub_s)
    assert np.max(np.abs(ref_tw - vec_tw)) <= 1e-12, "two-way: vectorised ≠ loops"
    assert np.max(np.abs(ref_tk - vec_tk)) <= 1e-12, "Takagi: vectorised ≠ loops"

    full_tw, t_full_tw = timed(two_way_identification_per_item, gt, samples[:, 0])
    full_tk, t_full_tk = timed(takagi_identification_per_item, gt, samples)

    print(f"subset: {m} items × {args.k} samples × {args.d} features")
    print(f"  two-way  loops {t_ref_tw:8.2f} s  vectorised {t_vec_tw:7.3f} s  ratio {t_ref_tw / t_vec_tw:8.0f}×  "
          f"accuracy {ref_tw.mean():.6f} = {vec_tw.mean():.6f}")
    print(f"  Takagi   loops {t_ref_tk:8.2f} s  vectorised {t_vec_tk:7.3f} s  ratio {t_ref_tk / t_vec_tk:8.0f}×  "
          f"accuracy {ref_tk.mean():.6f} = {vec_tk.mean():.6f}")
    print(f"full: {args.n} items × {args.k} samples × {args.d} features (vectorised)")
    print(f"  two-way  {t_full_tw:7.3f} s  accuracy {full_tw.mean():.6f}")
    print(f"  Takagi   {t_full_tk:7.3f} s  accuracy {full_tk.mean():.6f}")
    # Loop time scales as n² (two-way) and n² k (Takagi): extrapolate to the full size.
    scale = (args.n / m) ** 2
    print(f"  loops extrapolated to full size: two-way ≈ {t_ref_tw * scale:.0f} s, "
          f"Takagi ≈ {t_ref_tk * scale:.0f} s")


if __name__ == "__main__":
    main()
