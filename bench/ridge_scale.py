"""Benchmark of the ridge decoders at NSD scale against the paper's ridge, on files on disk.

Synthetic problems (seeded): each image has a latent signal ``F`` (``N_FACTORS`` values); a
trial's voxels are ``F @ M`` (a random linear map, per-voxel signal strength, offset and scale)
plus unit noise; the test rows average 3 such trials. Targets are a rank-``TARGET_RANK`` map of
``F`` with per-target strength plus noise, so cross-validation picks different alphas per
target. Each problem is written once through the project's formats (a prepared file via
:class:`~brain2image.formats.prepared.PreparedWriter`, a feature store via
:class:`~brain2image.formats.feature_store.FeatureStore`) and reused while its spec is unchanged.

Cases, each run in a fresh subprocess (so its peak RSS, ``ru_maxrss``, is that case's alone):

- ``ours``: :func:`brain2image.decoding.fit_decoder_from_files` with the default
  :class:`~brain2image.config.DecoderConfig` (what ``brain2image fit`` runs) on the z problem
  (24,949 trials x 5,000 voxels -> 6,400 targets, ~9,000 training images).
- ``baseline``: the paper's script on the same files: targets materialised per trial,
  sklearn's ``StandardScaler`` on X, himalaya's ``RidgeCV`` (numpy backend, alphas 1e-6 ... 1,
  ``fit_intercept=False``, its default 5-fold CV) on all targets at once.
- ``c``: ``ours`` on the c problem (24,980 trials x 7,800 voxels -> 59,136 targets).

Wall time covers reading the inputs, the fit, the test predictions (and, for ours, writing the
decoder file); test r is the mean over targets of Pearson r on the held-out test images.

Usage: ``python bench/ridge_scale.py [--quick] [--cases ours baseline c] [--repeat 2]``.
Other benchmarks import :func:`run_ridge_cases` (rows as dicts) and :func:`format_table`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

N_FACTORS, TARGET_RANK, TEST_REPEATS, SESSION_ROWS = 100, 16, 3, 2500
BASELINE_ALPHAS = tuple(10.0 ** k for k in range(-6, 1))
CASES = ("ours", "baseline", "c")
DEFAULT_DATA = Path(tempfile.gettempdir()) / "brain2image-ridge-scale"


@dataclasses.dataclass(frozen=True)
class Problem:
    """Size and seed of one synthetic decoding problem."""

    name: str
    n_images: int
    n_trials: int
    n_voxels: int
    feature_shape: tuple[int, ...]
    n_test: int = 1000
    seed: int = 0

    @property
    def size(self) -> str:
        """``trials x voxels -> targets`` for the table."""
        return f"{self.n_trials} x {self.n_voxels} -> {int(np.prod(self.feature_shape))}"


PROBLEMS = {
    "full": {"z": Problem("z", 9000, 24949, 5000, (4, 40, 40), seed=1),
             "c": Problem("c", 9000, 24980, 7800, (77, 768), seed=2)},
    "quick": {"z": Problem("z", 1200, 3300, 800, (4, 20, 20), n_test=200, seed=1),
              "c": Problem("c", 1200, 3330, 1000, (77, 96), n_test=200, seed=2)},
}
CASE_PROBLEM = {"ours": "z", "baseline": "z", "c": "c"}


# ----------------------------------------------------------------------------- data
def _trial_images(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    """Image of each training trial: every image once, extra repeats (up to 3) at random, shuffled."""
    extra = rng.choice(2 * problem.n_images, size=problem.n_trials - problem.n_images, replace=False)
    counts = 1 + np.bincount(extra % problem.n_images, minlength=problem.n_images)
    return rng.permutation(np.repeat(np.arange(problem.n_images), counts))


def _voxel_map(problem: Problem, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signal map (N_FACTORS, n_voxels), voxel offsets and scales."""
    strength = rng.uniform(0.05, 0.8, problem.n_voxels)
    M = rng.standard_normal((N_FACTORS, problem.n_voxels)) / np.sqrt(N_FACTORS) * strength
    return M.astype(np.float32), rng.uniform(0, 5, problem.n_voxels), rng.uniform(0.5, 2, problem.n_voxels)


def _write_prepared(problem: Problem, path: Path, F: np.ndarray, rng: np.random.Generator) -> None:
    from brain2image.formats.prepared import PreparedRoi, PreparedWriter, TrialIndex

    train_ids = _trial_images(problem, rng)
    test_ids = np.arange(problem.n_images, problem.n_images + problem.n_test)
    test_trial_ids = np.repeat(test_ids, TEST_REPEATS)
    M, offset, scale = _voxel_map(problem, rng)
    roi = PreparedRoi(key="roi", atlas="roi", label="", label_values=np.zeros(0, np.int64),
                      columns=np.arange(problem.n_voxels), ncsnr=None, positions={})

    def rows(ids: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(ids), problem.n_voxels), dtype=np.float32)
        return ((F[ids] @ M + noise) * scale + offset).astype(np.float32)

    def index(ids: np.ndarray) -> TrialIndex:
        return TrialIndex(ids, np.ones(len(ids), np.int16), np.arange(1, len(ids) + 1))

    with PreparedWriter(path, {"subject": 1, "space": "func1pt8mm", "rois": ["roi"]},
                        index(train_ids), index(test_trial_ids), [roi]) as writer:
        test_trials = rows(test_trial_ids)
        writer.write_session(rows(train_ids[:SESSION_ROWS]), test_trials)
        for start in range(SESSION_ROWS, len(train_ids), SESSION_ROWS):
            writer.write_session(rows(train_ids[start:start + SESSION_ROWS]),
                                 np.zeros((0, problem.n_voxels), np.float32))
        test = test_trials.reshape(problem.n_test, TEST_REPEATS, -1).mean(axis=1)
        writer.write_test(test_ids, np.full(problem.n_test, TEST_REPEATS), {"roi": test})


def _write_store(problem: Problem, path: Path, F: np.ndarray, rng: np.random.Generator) -> None:
    from brain2image.formats.feature_store import FeatureStore

    n_targets = int(np.prod(problem.feature_shape))
    A = rng.standard_normal((N_FACTORS, TARGET_RANK)) / np.sqrt(N_FACTORS)
    B = rng.standard_normal((TARGET_RANK, n_targets)) / np.sqrt(TARGET_RANK) * rng.uniform(0, 1, n_targets)
    W = (A @ B).astype(np.float32)
    ids = np.arange(len(F))
    store = FeatureStore.create(path, ids, problem.feature_shape,
                                {"feature": problem.name, "model": "synthetic", "resolution": 0,
                                 "seed": problem.seed})
    block = max(1, (64 * 2**20) // (4 * n_targets))
    for start in range(0, len(ids), block):
        part = ids[start:start + block]
        noise = 0.5 * rng.standard_normal((len(part), n_targets), dtype=np.float32)
        store.write(part, (F[part] @ W + noise).reshape((len(part), *problem.feature_shape)))
    store.finalize()


def write_problem(problem: Problem, folder: str | os.PathLike) -> dict[str, Path]:
    """Write (or reuse) the prepared file and feature store of ``problem`` under ``folder``.

    Returns
    -------
    dict
        ``prepared`` and ``store`` paths.
    """
    folder = Path(folder) / f"{problem.name}_{problem.n_trials}x{problem.n_voxels}_s{problem.seed}"
    paths = {"prepared": folder / "prepared_subj01.h5", "store": folder / f"features_{problem.name}.h5"}
    spec = folder / "spec.json"
    wanted = json.dumps(dataclasses.asdict(problem))
    if spec.is_file() and spec.read_text() == wanted and all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for p in (*paths.values(), spec):
        p.unlink(missing_ok=True)
    rng = np.random.default_rng(problem.seed)
    F = rng.standard_normal((problem.n_images + problem.n_test, N_FACTORS)).astype(np.float32)
    _write_prepared(problem, paths["prepared"], F, rng)
    _write_store(problem, paths["store"], F, rng)
    spec.write_text(wanted)
    return paths


# ----------------------------------------------------------------------------- cases (children)
def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _cpu_s() -> float:
    """User + system CPU seconds of this process (all its threads): less sensitive to other load than wall."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def case_ours(paths: dict[str, Path], out_dir: Path, target: str = "z") -> dict[str, Any]:
    """``fit_decoder_from_files`` with the default config; wall s, test r, alphas chosen."""
    from brain2image.decoding import DecoderFile, fit_decoder_from_files

    t0 = time.perf_counter()
    out = fit_decoder_from_files(paths["prepared"], paths["store"], "roi", target, out_dir / "decoder.h5")
    wall = time.perf_counter() - t0
    decoder = DecoderFile.read(out)
    alphas, counts = np.unique(decoder.alphas, return_counts=True)
    return {"wall_s": wall, "test_r": float(np.nanmean(decoder.test_corr)),
            "fit_s": float(decoder.attrs.get("fit_seconds", np.nan)),
            "alphas": {f"{a:g}": int(c) for a, c in zip(alphas, counts, strict=True)}}


def case_baseline(paths: dict[str, Path], out_dir: Path, target: str = "z") -> dict[str, Any]:
    """The paper's ridge: per-trial targets, StandardScaler, himalaya RidgeCV (no intercept)."""
    from himalaya.ridge import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from brain2image.formats.feature_store import FeatureStore
    from brain2image.formats.prepared import PreparedData
    from brain2image.ridge import himalaya_backend
    from brain2image.stats import pearson_columns

    t0 = time.perf_counter()
    prepared, store = PreparedData(paths["prepared"]), FeatureStore(paths["store"])
    X, train_ids = prepared.train("roi")
    X_test, test_ids = prepared.test("roi")
    Y = store.read_flat(train_ids)                     # one row per trial, as the paper does
    scaler = StandardScaler()
    X = scaler.fit_transform(X)
    with himalaya_backend("numpy") as bk:
        ridge = RidgeCV(alphas=np.asarray(BASELINE_ALPHAS), fit_intercept=False)
        ridge.fit(X, Y)
        del X, Y
        pred = bk.to_numpy(ridge.predict(scaler.transform(X_test)))
    wall = time.perf_counter() - t0
    r = pearson_columns(store.read_flat(test_ids), pred)
    alphas, counts = np.unique(bk.to_numpy(ridge.best_alphas_), return_counts=True)
    return {"wall_s": wall, "test_r": float(np.nanmean(r)), "fit_s": np.nan,
            "alphas": {f"{a:g}": int(c) for a, c in zip(alphas, counts, strict=True)}}


def _child(case: str, size: str, data: Path) -> None:
    """Run one case in this (fresh) process and print its row as JSON."""
    problem = PROBLEMS[size][CASE_PROBLEM[case]]
    paths = write_problem(problem, data)
    with tempfile.TemporaryDirectory() as tmp:
        row = (case_baseline if case == "baseline" else case_ours)(paths, Path(tmp), problem.name)
    row.update(case=case, size=problem.size, peak_gb=_peak_gb(), cpu_s=_cpu_s(), load=os.getloadavg()[0])
    print(json.dumps(row))


# ----------------------------------------------------------------------------- driver
def run_case(case: str, size: str = "full", data: str | os.PathLike = DEFAULT_DATA) -> dict[str, Any]:
    """Run ``case`` (one of :data:`CASES`) at ``size`` (``"full"``, ``"quick"``) in a fresh subprocess.

    Returns
    -------
    dict
        ``case``, ``size``, ``wall_s``, ``peak_gb`` (the child's ``ru_maxrss``), ``cpu_s`` (its
        user + system CPU seconds, reading the inputs included), ``load`` (the 1-minute load
        average when it ended), ``test_r``, ``fit_s``, ``alphas`` (chosen alpha -> number of targets).
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", case, "--size", size, "--data", str(data)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_ridge_cases(cases: list[str] | tuple[str, ...] = CASES, *, quick: bool = False, repeat: int = 1,
                    data: str | os.PathLike = DEFAULT_DATA) -> list[dict[str, Any]]:
    """Run every case ``repeat`` times (order reversed on every other round); rows with ratios.

    The data are written first (not timed). ``ratio_time`` and ``ratio_ram`` of a row divide
    it by the baseline of the same round (absent without a baseline).
    """
    size = "quick" if quick else "full"
    for name in sorted({CASE_PROBLEM[c] for c in cases}):
        write_problem(PROBLEMS[size][name], data)
    rows: list[dict[str, Any]] = []
    for round_ in range(repeat):
        order = list(cases) if round_ % 2 == 0 else list(reversed(cases))
        found: dict[str, dict[str, Any]] = {}
        for case in order:
            found[case] = dict(run_case(case, size, data), round=round_ + 1)
            print(format_table([found[case]], header=not rows and len(found) == 1), flush=True)
        for case in order:
            row = found[case]
            if "baseline" in found and case != "baseline" and CASE_PROBLEM[case] == CASE_PROBLEM["baseline"]:
                row["ratio_time"] = row["wall_s"] / found["baseline"]["wall_s"]
                row["ratio_ram"] = row["peak_gb"] / found["baseline"]["peak_gb"]
                row["ratio_cpu"] = row["cpu_s"] / found["baseline"]["cpu_s"]
                print(f"round {round_ + 1}: {case} / baseline: time {row['ratio_time']:.3f}, "
                      f"CPU time {row['ratio_cpu']:.3f}, peak RAM {row['ratio_ram']:.3f}", flush=True)
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], header: bool = True) -> str:
    """Markdown table: case, size, wall s, CPU s, load, peak RAM GB, test r, ratios vs baseline, alphas."""
    lines = ["| round | case | size | wall s | CPU s | load | peak RAM GB | test r | time / baseline "
             "| CPU / baseline | RAM / baseline | alphas chosen |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"] if header else []
    for r in rows:
        ratios = [f"{r[k]:.3f}" if k in r else "" for k in ("ratio_time", "ratio_cpu", "ratio_ram")]
        lines.append(f"| {r.get('round', 1)} | {r['case']} | {r['size']} | {r['wall_s']:.1f} | "
                     f"{r.get('cpu_s', float('nan')):.0f} | {r.get('load', float('nan')):.1f} | "
                     f"{r['peak_gb']:.2f} | {r['test_r']:.3f} | {' | '.join(ratios)} | {r['alphas']} |")
    return "\n".join(lines)


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small problems (smoke check)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the order alternates")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the synthetic files")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--size", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.size, args.data)
        return
    print(f"ridge_scale {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = run_ridge_cases(args.cases, quick=args.quick, repeat=args.repeat, data=args.data)
    print("\n" + format_table(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
