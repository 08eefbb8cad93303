"""Wall time and peak memory of the transfer stage at a chosen size (``brain2image.transfer.transfer_decoders``).

Synthetic inputs, written once into ``--work`` through the formats' own writers: a new subject
whose first session holds ``--alignment-images`` images that the references saw, ``--shared``
repeated test images (3 trials each, in 3 sessions); ``--refs`` reference subjects with their
prepared files and a full-data decoder of ``--targets`` targets from ``--voxels`` voxels (random
weights: the cost does not depend on them); the new subject's feature store. The measurement runs
in a child process, so its peak resident memory is the stage's own::

    python bench/transfer_scale.py --work /tmp/transfer-bench                       # z of SD at 320 px
    python bench/transfer_scale.py --work /tmp/transfer-bench-c --targets 59136 --voxels 7604 --refs 1   # c

It prints the size, the wall time of the transfer (and of the own decoder on the same trials) and
the peak RSS of each.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

from brain2image.config import DecoderConfig
from brain2image.formats.decoder_file import DecoderFile
from brain2image.formats.feature_store import FeatureStore
from brain2image.formats.prepared import PreparedRoi, PreparedWriter, TrialIndex


def _prepared(path: Path, subject: int, train_ids: np.ndarray, shared: np.ndarray, n_voxels: int,
              rng: np.random.Generator) -> None:
    """A prepared file: ``train_ids`` in session 1, each shared image in sessions 1, 2 and 3."""
    test_ids = np.repeat(shared, 3)
    sessions = np.tile(np.arange(1, 4, dtype=np.int16), len(shared))
    train = TrialIndex(train_ids, np.ones(len(train_ids), np.int16), np.arange(1, len(train_ids) + 1))
    trials = TrialIndex(test_ids, sessions, np.arange(1, len(test_ids) + 1))
    roi = PreparedRoi(key="roi", atlas="roi", label="", label_values=np.zeros(0, np.int64),
                      columns=np.arange(n_voxels), ncsnr=None, positions={})
    attrs = {"subject": subject, "space": "func1pt8mm", "rois": ["roi"]}
    with PreparedWriter(path, attrs, train, trials, [roi]) as writer:
        writer.write_session(rng.standard_normal((len(train_ids), n_voxels), dtype=np.float32),
                             rng.standard_normal((len(test_ids), n_voxels), dtype=np.float32))
        writer.write_test(shared, np.full(len(shared), 3), {"roi": writer.read_test_trials("roi")[::3]})


def make_inputs(work: Path, args: argparse.Namespace) -> None:
    """Write the synthetic study into ``work`` (skipped when it is there)."""
    if (work / "done").is_file():
        return
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    aligned = np.arange(args.alignment_images, dtype=np.int64)
    shared = np.arange(100_000, 100_000 + args.shared, dtype=np.int64)
    _prepared(work / "new.h5", 1, aligned, shared, args.voxels, rng)
    store = FeatureStore.create(work / "features.h5", np.concatenate([aligned, shared]), (args.targets,),
                                attrs={"feature": "c", "model": "bench", "resolution": 0, "seed": 0})
    ids = np.concatenate([aligned, shared])
    for start in range(0, len(ids), 256):
        block = ids[start:start + 256]
        store.write(block, rng.standard_normal((len(block), args.targets), dtype=np.float32))
    store.finalize()
    for ref in range(2, 2 + args.refs):
        _prepared(work / f"ref{ref}.h5", ref, aligned, shared, args.voxels, rng)
        n = args.targets
        DecoderFile(test_ids=shared, test_pred=rng.standard_normal((len(shared), n), dtype=np.float32),
                    test_corr=np.zeros(n), alphas=np.ones(n), cv_score=np.zeros(n), config=DecoderConfig(),
                    coef=rng.standard_normal((args.voxels, n), dtype=np.float32) * 0.01,
                    intercept=np.zeros(n, np.float32), x_mean=np.zeros(args.voxels), x_std=np.ones(args.voxels),
                    attrs={"target": "c", "roi": "roi"}).write(work / f"ref{ref}_c_roi.h5")
    (work / "done").write_text("")


def _measure(work: str, refs: int, decoder: str, queue: multiprocessing.Queue) -> None:
    """In a child process: run the transfer once; put its wall time and peak RSS on ``queue``."""
    from brain2image.transfer import TransferSettings, transfer_decoders
    from brain2image.transfer.split import ReferenceSubject

    root = Path(work)
    references = [ReferenceSubject(r, root / f"ref{r}.h5", {"c": root / f"ref{r}_c_roi.h5"})
                  for r in range(2, 2 + refs)]
    settings = TransferSettings(list(range(2, 2 + refs)), str(root), sessions=1, decoder=decoder)
    start = time.perf_counter()
    transfer_decoders(root / "new.h5", {"c": ("roi", root / "features.h5", root / f"out_{decoder}.h5")}, references,
                      settings, root / f"split_{decoder}.json", config=DecoderConfig(cv_folds=5))
    queue.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20))


def main() -> None:
    """Parse the sizes, write the inputs, measure the transfer and the own decoder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--voxels", type=int, default=5960, help="ROI voxels of every subject (early: 5,960)")
    parser.add_argument("--targets", type=int, default=6400, help="decoder targets (z of SD at 320 px: 6,400)")
    parser.add_argument("--refs", type=int, default=3)
    parser.add_argument("--alignment-images", type=int, default=500, help="first-session images the references saw")
    parser.add_argument("--shared", type=int, default=200, help="repeated test images")
    args = parser.parse_args()
    make_inputs(args.work, args)
    print(f"{args.voxels} voxels, {args.targets} targets, {args.refs} reference(s), {args.alignment_images} "
          f"alignment images, {args.shared} shared test images")
    context = multiprocessing.get_context("spawn")
    for decoder in ("transfer", "own"):
        queue = context.Queue()
        child = context.Process(target=_measure, args=(str(args.work), args.refs, decoder, queue))
        child.start()
        seconds, peak = queue.get()
        child.join()
        print(f"  {decoder:8s}  wall {seconds:7.1f} s   peak RSS {peak:5.2f} GB")


if __name__ == "__main__":
    main()
