"""Benchmark ``prepare`` on one session at real NSD size.

Writes a temporary tree with one subj01-sized session (750 x 83 x 104 x 81 int16 HDF5, ~1 GB,
h5py order (n_trials, Z, Y, X)) and a ~15k-voxel nsdgeneral-like blob, then, each in a fresh
process so peak memory is its own:

* the three HDF5 read strategies of ``read_volume_betas`` (slab / box / full), and
* ``prepare_subject`` end to end (default slab strategy),

printing seconds, MB/s of the session file and peak resident memory. The file is freshly written,
so reads hit the page cache (warm numbers). Temp files are deleted at the end.

Usage: ``python bench/prepare.py [--tmp DIR] [--voxels 15000]``
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import scipy.io

VOLUME = (81, 104, 83)  # subj01 func1pt8mm (X, Y, Z)
N_TRIALS = 750


def _blob(n_voxels: int) -> np.ndarray:
    """An ellipsoid of about n_voxels in the posterior half of the volume, shape (X, Y, Z)."""
    x, y, z = np.indices(VOLUME, dtype=np.float64)
    centre = np.array([40.0, 25.0, 35.0])
    radii = np.array([1.6, 1.0, 0.9])
    dist = (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2)
    threshold = np.sort(dist.ravel())[n_voxels - 1]
    return dist <= threshold


def build_tree(root: Path, n_voxels: int, seed: int = 0) -> Path:
    """Write the minimal tree; returns the session file."""
    rng = np.random.default_rng(seed)
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    design.parent.mkdir(parents=True)
    subjectim = np.stack([rng.permutation(73000)[:10000] + 1 for _ in range(8)])
    subjectim[:, :1000] = np.sort(subjectim[0, :1000])
    scipy.io.savemat(design, {"masterordering": rng.integers(1, 10001, size=(1, 30000)),
                              "subjectim": subjectim, "sharedix": subjectim[:1, :1000]})
    blob = _blob(n_voxels)
    streams = np.zeros(VOLUME, np.int16)
    streams[blob & (np.indices(VOLUME)[1] < 22)] = 1
    streams[blob & (np.indices(VOLUME)[1] >= 22)] = 5
    roi = root / "nsddata/ppdata/subj01/func1pt8mm/roi"
    roi.mkdir(parents=True)
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    nib.save(nib.Nifti1Image(blob.astype(np.int16), affine), roi / "nsdgeneral.nii.gz")
    nib.save(nib.Nifti1Image(streams, affine), roi / "streams.nii.gz")
    betas = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    betas.mkdir(parents=True)
    path = betas / "betas_session01.hdf5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("betas", shape=(N_TRIALS, *VOLUME[::-1]), dtype=np.int16)
        for start in range(0, N_TRIALS, 50):
            dataset[start:start + 50] = rng.integers(-3000, 3000, size=(50, *VOLUME[::-1]),
                                                     dtype=np.int16)
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(mode: str, root: Path) -> dict:
    """Run one measurement in this process; returns the figures."""
    from brain2image.sources.nsd import prepare_subject
    from brain2image.sources.nsd.betas import read_volume_betas

    mask = np.asarray(nib.load(root / "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz")
                      .dataobj) > 0
    session = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/" \
                     "betas_session01.hdf5"
    base = _peak_mb()
    start = time.perf_counter()
    if mode == "prepare":
        out = prepare_subject(root, 1, root / "prepared_subj01.h5", sessions=[1],
                              rois=("streams:early", "streams:ventral", "nsdgeneral"),
                              progress=False)
        n_vox = int(mask.sum())
        out.unlink()
    else:
        n_vox = read_volume_betas(session, np.argwhere(mask), "hdf5", strategy=mode).shape[1]
    seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "n_voxels": n_vox,
            "peak_rss_mb": _peak_mb(), "rss_before_mb": base}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark: build the temporary tree, time each mode in a fresh process, print a line each.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (``--tmp``, ``--voxels``); ``sys.argv[1:]`` when None. The hidden
        ``--worker MODE --root DIR`` pair runs one mode on an existing tree and prints its result
        as JSON (used by the parent process).

    Returns
    -------
    int
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tmp", default=None, help="folder for the temporary tree")
    parser.add_argument("--voxels", type=int, default=15000)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.root))))
        return 0
    root = Path(tempfile.mkdtemp(prefix="b2i-bench-prepare-", dir=args.tmp))
    try:
        start = time.perf_counter()
        session = build_tree(root, args.voxels)
        size_mb = session.stat().st_size / 2**20
        print(f"built {session.name}: {size_mb:.0f} MB (750 x {VOLUME[::-1]} int16, h5py order) "
              f"in {time.perf_counter() - start:.1f} s")
        for mode in ("slab", "box", "full", "prepare"):
            result = subprocess.run([sys.executable, __file__, "--worker", mode, "--root", str(root)],
                                    capture_output=True, text=True, check=True)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{mode:8s} {r['n_voxels']:6d} voxels  {r['seconds']:6.2f} s/session  "
                  f"{size_mb / r['seconds']:7.0f} MB/s of the session file  "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB (interpreter + imports "
                  f"{r['rss_before_mb']:.0f} MB; file {size_mb:.0f} MB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
