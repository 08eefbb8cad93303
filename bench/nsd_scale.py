"""Every stage of a run at NSD subject-1 size, on the machine it runs on: one table.

Inputs, nothing downloaded:

* an NSD-size simulated subject (``brain2image simulate --preset nsd``: 40 sessions × 750 trials,
  10,000 images at 425 px, 15,724 nsdgeneral voxels), made in ``--study`` when missing;
* ``random:sd-v1-4``, Stable Diffusion v1.4's architecture with seeded random weights (z 4×40×40,
  c 77×768, 512 px images).

Each case runs in its own subprocess, so its peak resident memory is its own (``os.wait4``); peak
GPU memory is ``torch.cuda.max_memory_allocated``. The decoders and the encoding models are fitted
on the prepared file's real voxels and on feature stores of the real shapes filled with seeded
random values (the features of 10,000 images would take hours on a CPU; their values do not change
a ridge fit's cost). On the CPU, the cases that would take hours run on a part and are
extrapolated, each marked ``extrapolated`` with what was measured:

* z and c features: a sample of images, scaled to all 10,000;
* reconstruction: 4 images × 1 sample per method at 512 px with a short DDIM schedule; the U-Net
  time per call is timed and scaled to the paper's schedule (50 steps, strength 0.8) and to
  982 × 5 samples × 3 methods;
* evaluation: all 8 metrics with random-weight networks on a sample of images × 5 samples,
  scaled to 982 images;
* encoding: the first sessions only, scaled to 40 sessions with the solvers' cost model.

On a GPU every case runs at full size, and reconstruction reports samples/s at batch sizes 1, 4,
16 and 32.

Usage::

    python bench/nsd_scale.py --study /tmp/nsd_study --work /tmp/nsd_bench [--device cuda]
        [--cases prepare features fit reconstruct evaluate encode] [--fit-targets z c] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "random:sd-v1-4"
#: SD v1.4's feature shapes (the features case checks the model gives them).
Z_SHAPE, C_SHAPE = (4, 40, 40), (77, 768)
#: The encoding spaces besides z and c: one z_c level and one U-Net layer (per-channel means).
ZC_SPACE, UNET_SPACE, UNET_WIDTH = "zc_0.5", "unet_mid_block_s0.5_t0.5", 1280
#: The paper's test set and generation settings.
N_TEST, N_SAMPLES, N_METHODS, FULL_STEPS, STRENGTH = 982, 5, 3, 50, 0.8
CASES = ("prepare", "features", "fit", "reconstruct", "evaluate", "encode")


@dataclass
class Settings:
    """What every case needs (passed to the child processes as JSON)."""

    study: str
    work: str
    device: str
    threads: int | None
    feature_sample: int
    eval_sample: int
    encode_sessions: list[int]
    fit_targets: list[str]

    @property
    def nsd_root(self) -> Path:
        """The simulated study's NSD tree."""
        return Path(self.study) / "nsd"

    @property
    def prepared(self) -> Path:
        """The prepared file of all 40 sessions."""
        return Path(self.work) / "prepared" / "subj01.h5"

    def store(self, name: str) -> Path:
        """A full-size feature store of random values (fit and encoding inputs)."""
        return Path(self.work) / "stores" / f"{name}.h5"

    @property
    def on_gpu(self) -> bool:
        """Whether the cases run at full size on CUDA."""
        return self.device.startswith("cuda")


def _row(stage: str, size: str, wall: float, amount: float, unit: str, note: str = "measured") -> dict:
    return {"stage": stage, "size": size, "wall_s": wall, "throughput": f"{amount / wall:.3g} {unit}/s",
            "note": note}


def _gpu_peak(settings: Settings) -> float | None:
    if not settings.on_gpu:
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


# --------------------------------------------------------------------------------------- cases
def case_prepare(settings: Settings) -> list[dict]:
    """``prepare`` on every session of the study."""
    from brain2image.formats.prepared import PreparedData
    from brain2image.sources.nsd.prepare import prepare_subject

    start = time.perf_counter()
    prepare_subject(settings.nsd_root, 1, settings.prepared, progress=False)
    wall = time.perf_counter() - start
    data = PreparedData(settings.prepared)
    n_trials = len(data.trials("train")["ids"]) + len(data.trials("test_trials")["ids"])
    size = (f"{len(data.attrs['sessions'])} sessions, {n_trials:,} trials, "
            f"{data.n_voxels('nsdgeneral'):,} nsdgeneral voxels")
    return [_row("prepare", size, wall, n_trials, "trials")]


def _load_model(settings: Settings):
    from brain2image.ldm.loading import load_ldm

    start = time.perf_counter()
    model = load_ldm(MODEL, device=settings.device)
    return model, time.perf_counter() - start


def case_features(settings: Settings) -> list[dict]:
    """Features z and c of a sample of the study's images (CPU) or of all of them (GPU)."""
    from brain2image.config import FeatureConfig
    from brain2image.formats.feature_store import FeatureStore
    from brain2image.formats.prepared import PreparedData
    from brain2image.ldm.features import extract_features
    from brain2image.sources.nsd import NSDStimuli

    model, load_s = _load_model(settings)
    ids = PreparedData(settings.prepared).image_ids()
    rows = [{**_row("load random:sd-v1-4", "VAE + U-Net + CLIP text, 1.07 B parameters", load_s, 1, "model"),
             "throughput": ""}]
    for feature, shape in (("z", Z_SHAPE), ("c", C_SHAPE)):
        n = len(ids) if settings.on_gpu else settings.feature_sample
        out = Path(settings.work) / "features" / f"{feature}_{n}.h5"
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        extract_features(NSDStimuli(settings.nsd_root), ids[:n], model, feature, out, FeatureConfig(), progress=False)
        wall = time.perf_counter() - start
        got = FeatureStore.open(out).feature_shape
        if tuple(got) != shape:
            raise SystemExit(f"{feature} features have shape {got}, expected {shape}")
        size = f"{len(ids):,} images, {feature} {'×'.join(map(str, shape))}"
        if n == len(ids):
            rows.append(_row(f"features {feature}", size, wall, n, "img"))
        else:
            rows.append(_row(f"features {feature}", size, wall * len(ids) / n, len(ids), "img",
                             f"extrapolated from {n} images"))
    return rows


def _write_random_store(path: Path, ids: np.ndarray, shape: tuple[int, ...], seed: int) -> None:
    """A finished feature store of seeded standard-normal values (written in 256 MB blocks)."""
    from brain2image.formats.feature_store import FeatureStore

    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"feature": path.stem, "model": f"{MODEL} (random values)", "resolution": 0, "seed": seed}
    store = FeatureStore.create(path, ids, shape, attrs)
    rng = np.random.default_rng(seed)
    block = max(1, (256 * 2**20) // (4 * int(np.prod(shape))))
    for start in range(0, len(ids), block):
        part = ids[start:start + block]
        store.write(part, rng.standard_normal((len(part), *shape), dtype=np.float32))
    store.finalize()


def write_stores(settings: Settings) -> None:
    """The full-size random-value stores of z, c, one z_c level and one U-Net layer."""
    from brain2image.formats.prepared import PreparedData

    ids = PreparedData(settings.prepared).image_ids()
    shapes = {"z": Z_SHAPE, "c": C_SHAPE, ZC_SPACE: Z_SHAPE, UNET_SPACE: (UNET_WIDTH,)}
    for seed, (name, shape) in enumerate(shapes.items()):
        _write_random_store(settings.store(name), ids, shape, seed)


def case_fit(settings: Settings) -> list[dict]:
    """Both decoders at full size: z ← early, c ← ventral, with the run's defaults on this device."""
    from brain2image.config import DecoderConfig
    from brain2image.decoding import fit_decoder_from_files
    from brain2image.formats.prepared import PreparedData

    write_stores(settings)
    config, data = DecoderConfig(), PreparedData(settings.prepared)
    rows = []
    rois = config.targets
    for target, roi in ((target, rois[target]) for target in settings.fit_targets):
        n_trials, n_voxels = len(data.trials("train")["ids"]), data.n_voxels(roi)
        n_targets = int(np.prod(Z_SHAPE if target == "z" else C_SHAPE))
        out = Path(settings.work) / "decoders" / f"{target}.h5"
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        fit_decoder_from_files(settings.prepared, settings.store(target), roi, target, out, config,
                               device=settings.device, progress=False)
        wall = time.perf_counter() - start
        size = f"{n_trials:,} trials × {n_voxels:,} {roi} voxels → {n_targets:,} targets"
        rows.append(_row(f"fit {target}", size, wall, n_targets, "targets"))
    return rows


class _UnetClock:
    """Seconds spent in ``unet.forward`` and the number of calls (CUDA synchronised)."""

    def __init__(self, unet: Any, cuda: bool) -> None:
        self.seconds, self.calls, self._cuda, self._start = 0.0, 0, cuda, 0.0
        unet.register_forward_pre_hook(lambda *_: self._begin())
        unet.register_forward_hook(lambda *_: self._end())

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    def _begin(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _end(self) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


def _full_unet_calls(method: str, batches: int) -> int:
    if method == "z_only":
        return 0
    steps = FULL_STEPS if method == "c_only" else int(FULL_STEPS * STRENGTH)
    return steps * batches


def _generate(model: Any, clock: _UnetClock, method: str, n: int, batch: int, steps: int) -> tuple[float, float]:
    """Generate ``n`` images × 1 sample of ``method``; returns (wall s, U-Net s)."""
    from brain2image.config import ReconstructionConfig
    from brain2image.ldm.reconstruct import generate_reconstructions

    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, *Z_SHAPE), dtype=np.float32)
    c = 0.5 * rng.standard_normal((n, *C_SHAPE), dtype=np.float32)
    config = ReconstructionConfig(n_samples=1, batch_size=batch, num_inference_steps=steps)
    clock.seconds, clock.calls = 0.0, 0
    start = time.perf_counter()
    images = generate_reconstructions(model, np.arange(n), z=z, c=c, methods=[method], config=config,
                                      progress=False)[method]
    wall = time.perf_counter() - start
    side = 320 if method == "z_only" else 512
    if images.shape[2:] != (side, side, 3):
        raise SystemExit(f"{method} images have shape {images.shape[2:]}, expected ({side}, {side}, 3)")
    return wall, clock.seconds


def case_reconstruct(settings: Settings) -> list[dict]:
    """Generation at 512 px: CPU 4 images × 1 sample per method (short schedule, scaled); GPU batches."""
    model, _ = _load_model(settings)
    clock = _UnetClock(model.unet, settings.on_gpu)
    rows: list[dict] = []
    if settings.on_gpu:
        for batch in (1, 4, 16, 32):
            _generate(model, clock, "z_plus_c", batch, batch, FULL_STEPS)  # warm-up
            wall, _ = _generate(model, clock, "z_plus_c", 2 * batch, batch, FULL_STEPS)
            rows.append(_row(f"reconstruct z+c, batch {batch}", "512 px, 40 DDIM steps, guidance 5", wall,
                             2 * batch, "samples"))
        return rows
    n, steps = 4, 5
    for method in ("z_only", "c_only", "z_plus_c"):
        wall, unet_s = _generate(model, clock, method, n, n, steps)
        rows.append(_extrapolated_generation(method, n, steps, wall, unet_s, clock.calls))
    return rows


def _extrapolated_generation(method: str, n: int, steps: int, wall: float, unet_s: float, calls: int) -> dict:
    """Scale ``n`` images × 1 sample at ``steps`` to the paper's schedule and 982 × 5 samples.

    z only is one VAE decoding per image, whatever the number of samples (they are copies).
    """
    if method == "z_only":
        note = f"extrapolated: {n} VAE decodings scaled to {N_TEST} (z only is deterministic: one per image)"
        return _row("reconstruct z_only", f"{N_TEST} images, 320 px", wall * N_TEST / n, N_TEST, "images", note)
    per_call = unet_s / calls
    full = (wall - unet_s + per_call * _full_unet_calls(method, 1)) * N_TEST * N_SAMPLES / n
    note = (f"extrapolated: {n} images × 1 sample, {steps} DDIM steps ({calls} U-Net calls of batch {2 * n} "
            f"with guidance, {per_call:.1f} s each) scaled to {FULL_STEPS} steps and {N_TEST * N_SAMPLES:,} samples")
    return _row(f"reconstruct {method}", f"{N_TEST} × {N_SAMPLES} samples, 512 px", full, N_TEST * N_SAMPLES,
                "samples", note)


def _random_extractors() -> dict:
    """Every metric network with random weights (architecture and cost as with real weights)."""
    from brain2image.evaluation.feature_networks import load_feature_network
    from brain2image.evaluation.feature_spaces import NETWORK_SPACES, network_extractors

    extractors: dict = {}
    for network in sorted({net for net, _, _ in NETWORK_SPACES.values()}):
        extractors.update(network_extractors(load_feature_network(network, weights=None)))
    return extractors


def case_evaluate(settings: Settings) -> list[dict]:
    """The 8-metric table (random-weight networks) on real-size images, 5 samples each."""
    from brain2image.evaluation.evaluate import METRIC_SETS, evaluate_reconstructions, load_real_images
    from brain2image.sources.nsd import NSDStimuli

    n = N_TEST if settings.on_gpu else settings.eval_sample
    _, real = load_real_images(NSDStimuli(settings.nsd_root), range(n))
    rng = np.random.default_rng(0)
    recon = rng.integers(0, 256, size=(n, N_SAMPLES, 512, 512, 3), dtype=np.uint8)
    extractors = _random_extractors()
    start = time.perf_counter()
    evaluate_reconstructions(real, recon, METRIC_SETS["full"], extractors=extractors, device=settings.device)
    wall = time.perf_counter() - start
    size = f"{N_TEST} × {N_SAMPLES} samples, 8 metrics, {len(METRIC_SETS['full'])} feature spaces"
    if n == N_TEST:
        return [_row("evaluate", size, wall, N_TEST * N_SAMPLES, "samples")]
    return [_row("evaluate", size, wall * N_TEST / n, N_TEST * N_SAMPLES, "samples",
                 f"extrapolated from {n} images × {N_SAMPLES} samples")]


def _encode(settings: Settings, prepared: Path, out: Path) -> float:
    from brain2image.config import EncodingConfig
    from brain2image.encoding.analysis import run_encoding_analysis

    stores = {name: str(settings.store(name)) for name in ("z", "c", ZC_SPACE, UNET_SPACE)}
    config = EncodingConfig(partition_pairs=[["z", "c"]], maps=False)
    start = time.perf_counter()
    run_encoding_analysis(prepared, stores, out, config=config, device=settings.device)
    return time.perf_counter() - start


def case_encode(settings: Settings) -> list[dict]:
    """Encoding models of z, c, one z_c level and one U-Net layer on every nsdgeneral voxel.

    Plus the z:c variance partition (banded ridge). On the CPU: the first sessions, scaled to all
    of them by a power law in the number of unique training images fitted through two sizes.
    """
    from brain2image.formats.prepared import PreparedData
    from brain2image.sources.nsd.prepare import prepare_subject

    write_stores(settings)
    full = PreparedData(settings.prepared)
    n_full = len(np.unique(full.trials("train")["ids"]))
    size = (f"{full.n_voxels('nsdgeneral'):,} voxels, {n_full:,} training images; z, c, {ZC_SPACE}, "
            f"{UNET_SPACE} + z:c partition")
    if settings.on_gpu:
        wall = _encode(settings, settings.prepared, Path(settings.work) / "encode_full")
        return [_row("encode", size, wall, full.n_voxels("nsdgeneral"), "voxels")]
    points = []
    for sessions in settings.encode_sessions:
        part = Path(settings.work) / "prepared" / f"subj01_{sessions}sessions.h5"
        if not part.is_file():
            prepare_subject(settings.nsd_root, 1, part, sessions=sessions, progress=False)
        n = len(np.unique(PreparedData(part).trials("train")["ids"]))
        points.append((n, _encode(settings, part, Path(settings.work) / f"encode_{sessions}")))
    (n1, t1), (n2, t2) = points[0], points[-1]
    exponent = float(np.log(t2 / t1) / np.log(n2 / n1))
    wall = t2 * (n_full / n2) ** exponent
    note = (f"extrapolated: {t1:.0f} s at {n1:,} and {t2:.0f} s at {n2:,} training images "
            f"({settings.encode_sessions[0]} and {settings.encode_sessions[-1]} sessions), power {exponent:.2f}")
    return [_row("encode", size, wall, full.n_voxels("nsdgeneral"), "voxels", note)]


CASE_FUNCTIONS: dict[str, Callable[[Settings], list[dict]]] = {
    "prepare": case_prepare, "features": case_features, "fit": case_fit, "reconstruct": case_reconstruct,
    "evaluate": case_evaluate, "encode": case_encode}


# ------------------------------------------------------------------------------------- harness
def _child(case: str, settings_json: str, result: str) -> None:
    """Run one case in this process and write its rows (with the GPU peak) to ``result``."""
    settings = Settings(**json.loads(settings_json))
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    rows = CASE_FUNCTIONS[case](settings)
    peak = _gpu_peak(settings)
    for row in rows:
        row["gpu_peak_gb"] = peak
    Path(result).write_text(json.dumps(rows))


def run_case(case: str, settings: Settings) -> list[dict]:
    """Run ``case`` in a fresh process; its rows get that process's peak resident memory."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rows.json"
        process = subprocess.Popen([sys.executable, __file__, "--child", case, "--settings",
                                    json.dumps(vars(settings)), "--result", str(result)])
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            return [{"stage": case, "size": "", "wall_s": float("nan"), "throughput": "",
                     "note": f"failed (exit {process.returncode})", "gpu_peak_gb": None, "ram_peak_gb": None}]
        rows = json.loads(result.read_text())
    for row in rows:
        row["ram_peak_gb"] = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return rows


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU, {os.cpu_count()} cores"


def format_table(rows: list[dict], device: str, markdown: bool) -> str:
    """The table: stage, size, wall, throughput, peak RAM, peak GPU memory, device, note."""
    kind = "GPU" if device.startswith("cuda") else "CPU"
    header = ["stage", "size", "wall", "throughput", "peak RAM", "peak GPU", "", "note"]
    lines = []
    for row in rows:
        gpu = "" if row.get("gpu_peak_gb") is None else f"{row['gpu_peak_gb']:.1f} GB"
        ram = "" if row.get("ram_peak_gb") is None else f"{row['ram_peak_gb']:.1f} GB"
        lines.append([row["stage"], row["size"], _duration(row["wall_s"]), row["throughput"], ram, gpu, kind,
                      row["note"]])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in [header, *lines])


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


#: Cases that read the simulated NSD tree (fit and reconstruct need only the prepared file and stores).
STUDY_CASES = {"prepare", "features", "evaluate", "encode"}


def _ensure_study(settings: Settings) -> dict | None:
    """Simulate the NSD-size study when ``--study`` has none; returns its row."""
    if (settings.nsd_root / "nsddata").is_dir():
        return None
    start = time.perf_counter()
    command = Path(sys.executable).parent / "brain2image"
    subprocess.run([str(command), "simulate", "--preset", "nsd", "--out", settings.study, "--no-progress"],
                   check=True)
    return _row("simulate --preset nsd", "40 sessions, 10,000 images at 425 px", time.perf_counter() - start,
                40, "sessions")


def main(argv: list[str] | None = None) -> None:
    """Run the chosen cases and print the table of every case measured in ``--work`` (``case_<name>.json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="nsd_scale_study", help="simulated NSD-size study (made when missing)")
    parser.add_argument("--work", default="nsd_scale_work", help="prepared file, stores, decoders")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--feature-sample", type=int, default=8, help="images whose features the CPU computes")
    parser.add_argument("--eval-sample", type=int, default=8, help="images the CPU evaluates (× 5 samples)")
    parser.add_argument("--encode-sessions", type=int, nargs=2, default=[2, 4],
                        help="CPU: encode on these first sessions, then scale to all")
    parser.add_argument("--fit-targets", nargs="+", choices=("z", "c"), default=["z", "c"],
                        help="the decoders the fit case fits (each keeps its row from earlier invocations)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.settings, args.result)
        return
    settings = Settings(str(Path(args.study).resolve()), str(Path(args.work).resolve()), args.device, args.threads,
                        args.feature_sample, args.eval_sample, list(args.encode_sessions), list(args.fit_targets))
    work = Path(settings.work)
    work.mkdir(parents=True, exist_ok=True)
    needs_study = bool(STUDY_CASES & set(args.cases)) or not settings.prepared.is_file()
    simulated = _ensure_study(settings) if needs_study else None
    if simulated is not None:
        (work / "case_simulate.json").write_text(json.dumps([simulated]))
    for case in args.cases:
        rows = run_case(case, settings)
        saved = work / f"case_{case}.json"
        measured = {row["stage"] for row in rows}
        kept = [row for row in json.loads(saved.read_text()) if row["stage"] not in measured] if saved.is_file() else []
        saved.write_text(json.dumps(kept + rows))
        print(format_table(rows, settings.device, markdown=False).split("\n", 1)[1], flush=True)
    # The table holds every case measured in this work folder (earlier invocations included).
    table = [row for case in ("simulate", *CASES) if (work / f"case_{case}.json").is_file()
             for row in json.loads((work / f"case_{case}.json").read_text())]
    print(f"\nbench/nsd_scale.py on {_device_name(settings.device)}, {time.strftime('%Y-%m-%d')}\n")
    print(format_table(table, settings.device, args.markdown))


if __name__ == "__main__":
    main()
