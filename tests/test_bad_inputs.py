"""The bad-input table: each bad input through the real CLI is one line, exit status 2, nothing half-written.

Every case starts from a copy of a small, valid study (simulated NSD tree, prepared file, feature
stores, a tiny model folder, a decoder, a reconstruction folder), breaks one thing and runs one
``brain2image`` command on it. For each case the test asserts:

- exit status 2 and exactly one line on stderr, ``brain2image <command>: error: ...``, with no
  traceback, which contains the words that name the file, field or value at fault;
- nothing half-written: every file of the case's folder is byte-for-byte as before (same names,
  same sizes, same modification times), and no temporary file is left anywhere.

Config values have their own table in ``tests/test_config_validation.py``; this one covers files
and data. ``BAD_INPUTS`` is counted in docs/development.md.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from ldm_dummy import single_torch_thread
from study_fixtures import one_error_line, simulate_small_study, tiny_study

from brain2image.cli import main

#: The valid study's settings that differ from the small study's (study_fixtures.SMALL_STUDY).
STUDY = {"n_images": 600, "n_sessions": 2, "volume_shape": (10, 12, 8),
         "roi_sizes": {"early": 40, "ventral": 40, "midventral": 8, "lateral": 8}, "image_size": 32}


@dataclass(frozen=True)
class Study:
    """Paths of one case's copy of the valid study."""

    root: Path

    @property
    def nsd(self) -> Path:
        return self.root / "study" / "nsd"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared" / "subj01.h5"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def store(self, feature: str) -> Path:
        return next(self.features.glob(f"subj01_*_{feature}.h5"))

    @property
    def decoder(self) -> Path:
        return next((self.root / "decoders").glob("*.h5"))

    @property
    def recon(self) -> Path:
        return self.root / "recon"

    @property
    def betas_dir(self) -> Path:
        return self.nsd / "nsddata_betas" / "ppdata" / "subj01" / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"

    @property
    def roi_dir(self) -> Path:
        return self.nsd / "nsddata" / "ppdata" / "subj01" / "func1pt8mm" / "roi"

    @property
    def stimuli(self) -> Path:
        return self.nsd / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"

    @property
    def out(self) -> Path:
        return self.root / "out"


def _ok(argv: list[str]) -> None:
    assert main(["--no-progress", *argv]) == 0, argv


@pytest.fixture(scope="module")
def valid_study(tmp_path_factory) -> Path:
    """A small valid study with every file a stage reads; cases copy it."""
    root = tmp_path_factory.mktemp("valid")
    study = Study(root)
    with single_torch_thread():
        tiny_study(root, model=study.model.name, **STUDY)
        _ok(["prepare", "--nsd-root", str(study.nsd), "--subject", "1", "--out", str(study.prepared)])
        _ok(["features", "--nsd-root", str(study.nsd), "--prepared", str(study.prepared), "--model",
             str(study.model), "--out", str(study.features)])
        _ok(["fit", "--prepared", str(study.prepared), "--features", str(study.store("z")), "--target", "z",
             "--out", str(root / "decoders"), "--alphas", "1", "100", "--cv-folds", "2"])
        _ok(["reconstruct", "--z", str(study.decoder), "--model", str(study.model), "--out", str(study.recon),
             "--methods", "z_only", "--n-samples", "1", "--num-inference-steps", "4"])
    return root


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ breakages
def _truncate(path: Path, keep: int = 100) -> None:
    data = path.read_bytes()[:keep]
    path.write_bytes(data)


def _nan_betas(s: Study) -> None:
    """Session 1's betas as float32 with one NaN and one inf in an nsdgeneral voxel."""
    import nibabel as nib

    x, y, z = np.argwhere(np.asarray(nib.load(s.roi_dir / "nsdgeneral.nii.gz").dataobj) > 0)[0]
    path = s.betas_dir / "betas_session01.hdf5"
    with h5py.File(path, "r") as f:
        betas = f["betas"][:].astype(np.float32)  # (trials, Z, Y, X)
    betas[3, z, y, x] = np.nan
    betas[7, z, y, x] = np.inf
    path.unlink()
    with h5py.File(path, "w") as f:
        f["betas"] = betas


def _wrong_shape_roi(s: Study) -> None:
    import nibabel as nib

    path = s.roi_dir / "nsdgeneral.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj)[:-1]
    nib.save(nib.Nifti1Image(data, image.affine), path)


def _drop_column(path: Path, column: str) -> None:
    import pandas as pd

    pd.read_csv(path, sep="\t").drop(columns=[column]).to_csv(path, sep="\t", index=False)


def _corrupt_weights(s: Study) -> None:
    weights = next((s.model / "unet").glob("*.safetensors"))
    _truncate(weights, 64)


def _other_study_store(s: Study) -> None:
    """Replace the z store by the z features of another simulated study with the same image ids."""
    other = s.root / "other"
    simulate_small_study(other, **STUDY, seed=1)
    store = s.store("z")
    _ok(["features", "--nsd-root", str(other / "nsd"), "--prepared", str(s.prepared), "--model", str(s.model),
         "--out", str(other / "features"), "--feature", "z"])
    shutil.rmtree(other / "nsd")
    shutil.copy2(next((other / "features").glob("*_z.h5")), store)


def _one_shard(s: Study) -> None:
    _ok(["features", "--nsd-root", str(s.nsd), "--prepared", str(s.prepared), "--model", str(s.model),
         "--out", str(s.out), "--feature", "z", "--shard", "1/2"])


def _captions_removed(s: Study) -> None:
    for path in (s.nsd / "nsddata_stimuli" / "stimuli" / "nsd" / "annotations").glob("captions_*.json"):
        path.unlink()


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every write of bytes or of an HDF5 dataset fails half-way with ENOSPC, as on a full disk."""
    real_write_bytes = Path.write_bytes

    def full_disk_write(self, data):
        real_write_bytes(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    def full_disk_dataset(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Can't write data (file write failed: errno = 28, "
                      "error message = 'No space left on device')")

    monkeypatch.setattr(Path, "write_bytes", full_disk_write)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", full_disk_dataset)
    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk_dataset)


def _nothing(s: Study) -> None:
    return None


def _unfinished_study(s: Study) -> None:
    """A study folder (``study_config.json`` of ``subjects = [1]``) whose subject has no metrics yet."""
    from brain2image.config import RunConfig

    config = RunConfig(nsd_root=str(s.nsd), out_dir=str(s.out), model=str(s.model), subjects=[1])
    s.out.mkdir()
    (s.out / "study_config.json").write_text(json.dumps(config.to_dict(), indent=2))


# --------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class BadInput:
    """One row of the table: a breakage, the command run on it, words the error line must hold."""

    name: str
    argv: Callable[[Study], list[str]]
    expected: Callable[[Study], list[str]]
    breakage: Callable[[Study], None] = _nothing
    full_disk: bool = False


def _prepare(s: Study, *extra: str) -> list[str]:
    return ["prepare", "--nsd-root", str(s.nsd), "--subject", "1", "--out", str(s.out / "subj01.h5"), *extra]


def _features(s: Study, *extra: str) -> list[str]:
    return ["features", "--nsd-root", str(s.nsd), "--prepared", str(s.prepared), "--model", str(s.model),
            "--out", str(s.out), *extra]


def _fit(s: Study, *extra: str, features: Path | None = None, out: Path | None = None) -> list[str]:
    return ["fit", "--prepared", str(s.prepared), "--features", str(features or s.store("z")), "--target", "z",
            "--out", str(out or s.out), "--alphas", "1", "100", "--cv-folds", "2", *extra]


def _reconstruct(s: Study, *extra: str) -> list[str]:
    return ["reconstruct", "--z", str(s.decoder), "--model", str(s.model), "--out", str(s.out), "--methods",
            "z_only", "--n-samples", "1", "--num-inference-steps", "4", *extra]


def _encode(s: Study, *extra: str) -> list[str]:
    return ["encode", "--prepared", str(s.prepared), "--features", f"z={s.store('z')}", "--out", str(s.out),
            "--cv-folds", "2", "--no-maps", *extra]


def _run_config(s: Study, text: str) -> list[str]:
    path = s.root / "run.toml"
    path.write_text(text)
    return ["run", str(path)]


BAD_INPUTS = [
    # prepare
    BadInput("prepare: subject not in the tree", lambda s: _prepare(s)[:4] + ["2", "--out", str(s.out / "p.h5")],
             lambda s: ["subj02"]),
    BadInput("prepare: NSD root missing", lambda s: ["prepare", "--nsd-root", str(s.root / "nowhere"), "--subject",
                                                    "1", "--out", str(s.out / "p.h5")],
             lambda s: [str(s.root / "nowhere")]),
    BadInput("prepare: first session's betas missing", _prepare, lambda s: ["betas_session01.hdf5", "--sessions"],
             lambda s: (s.betas_dir / "betas_session01.hdf5").unlink()),
    BadInput("prepare: betas file truncated", _prepare, lambda s: ["betas_session02.hdf5"],
             lambda s: _truncate(s.betas_dir / "betas_session02.hdf5")),
    BadInput("prepare: NaN and inf in float betas", _prepare, lambda s: ["betas_session01.hdf5", "2", "non-finite"],
             _nan_betas),
    BadInput("prepare: ROI file of the wrong shape", _prepare, lambda s: ["nsdgeneral.nii.gz", "shape"],
             _wrong_shape_roi),
    BadInput("prepare: ROI file missing", _prepare, lambda s: ["nsdgeneral.nii.gz"],
             lambda s: (s.roi_dir / "nsdgeneral.nii.gz").unlink()),
    BadInput("prepare: ncsnr file truncated", _prepare, lambda s: ["ncsnr.nii.gz"],
             lambda s: _truncate(s.betas_dir / "ncsnr.nii.gz")),
    BadInput("prepare: experiment design missing", _prepare, lambda s: ["nsd_expdesign.mat"],
             lambda s: next(s.nsd.rglob("nsd_expdesign.mat")).unlink()),
    BadInput("prepare: behaviour file without its 73KID column", _prepare, lambda s: ["responses.tsv", "73KID"],
             lambda s: _drop_column(next(s.nsd.rglob("responses.tsv")), "73KID")),
    BadInput("prepare: more sessions asked than on disk", lambda s: _prepare(s, "--sessions", "5"),
             lambda s: ["session"]),
    BadInput("prepare: unknown ROI label", lambda s: _prepare(s, "--rois", "streams:nowhere"),
             lambda s: ["nowhere"]),
    BadInput("prepare: disk full while writing over an existing file (ENOSPC)",
             lambda s: ["prepare", "--nsd-root", str(s.nsd), "--subject", "1", "--out", str(s.prepared)],
             lambda s: [str(s.prepared), "No space left on device"], full_disk=True),
    # features
    BadInput("features: disk full when the store is created (ENOSPC)", lambda s: _features(s, "--feature", "z"),
             lambda s: [str(s.out), "No space left on device"], full_disk=True),
    BadInput("features: shard beyond the count", lambda s: _features(s, "--shard", "3/2"), lambda s: ["3/2"]),
    BadInput("features: shard not i/n", lambda s: _features(s, "--shard", "half"), lambda s: ["half"]),
    BadInput("features: model folder missing", lambda s: _features(s, "--model", str(s.root / "no_model")),
             lambda s: [str(s.root / "no_model"), "not found"]),
    BadInput("features: corrupt weights in the model folder", _features, lambda s: ["unet"], _corrupt_weights),
    BadInput("features: stimuli file truncated", _features, lambda s: ["nsd_stimuli.hdf5"],
             lambda s: _truncate(s.stimuli)),
    BadInput("features: captions missing", lambda s: _features(s, "--feature", "c"), lambda s: ["captions"],
             _captions_removed),
    BadInput("features: image id outside the 73k space", lambda s: _features(s)[:3] + _features(s)[5:] +
             ["--ids", "0", "73000"], lambda s: ["73000"]),
    BadInput("features: prepared file is not HDF5", _features, lambda s: [str(s.prepared)],
             lambda s: s.prepared.write_text("not a prepared file\n")),
    # fit
    BadInput("fit: feature store from another study", _fit, lambda s: ["stimuli"], _other_study_store),
    BadInput("fit: ROI not in the prepared file", lambda s: _fit(s, "--roi", "lateral"), lambda s: ["lateral"]),
    BadInput("fit: feature store missing", lambda s: _fit(s, features=s.root / "missing_z.h5"),
             lambda s: [str(s.root / "missing_z.h5")]),
    BadInput("fit: feature store truncated", _fit, lambda s: ["_z.h5"], lambda s: _truncate(s.store("z"), 4096)),
    BadInput("fit: prepared file missing", _fit, lambda s: [str(s.prepared)], lambda s: s.prepared.unlink()),
    BadInput("fit: feature store lacks training images", _fit, lambda s: ["_z.h5", "ids"],
             lambda s: _drop_store_rows(s.store("z"))),
    BadInput("fit: disk full while writing over an existing decoder (ENOSPC)",
             lambda s: _fit(s, out=s.decoder.parent),
             lambda s: [str(s.decoder), "No space left on device", "unchanged"], full_disk=True),
    # reconstruct
    BadInput("reconstruct: decoder file missing",
             lambda s: ["reconstruct", "--z", str(s.root / "none.h5"), "--model", str(s.model), "--out", str(s.out),
                        "--methods", "z_only"],
             lambda s: [str(s.root / "none.h5")]),
    BadInput("reconstruct: decoder file truncated", _reconstruct, lambda s: [s.decoder.name],
             lambda s: _truncate(s.decoder, 2048)),
    BadInput("reconstruct: no decoded input", lambda s: ["reconstruct", "--model", str(s.model), "--out", str(s.out)],
             lambda s: ["--z", "--c"]),
    BadInput("reconstruct: oracle without the true features", lambda s: _reconstruct(s)[:-6] +
             ["--methods", "oracle"], lambda s: ["oracle", "--z-true"]),
    # merge
    BadInput("merge: one shard of two", lambda s: ["merge", str(next(s.out.glob("*shard-1-of-2.h5")))],
             lambda s: ["shard 2/2 missing"], _one_shard),
    # evaluate, report, encode
    BadInput("evaluate: reconstruction folder without index.csv",
             lambda s: ["evaluate", "--recon", str(s.root / "prepared"), "--out", str(s.out / "e.json"),
                        "--nsd-root", str(s.nsd)], lambda s: ["index.csv"]),
    BadInput("report: not a run folder", lambda s: ["report", str(s.root / "prepared")], lambda s: ["run_config"]),
    BadInput("encode: feature store of other images", _encode, lambda s: ["_z.h5"],
             lambda s: _drop_store_rows(s.store("z"))),
    # simulate
    BadInput("simulate: volume too small for the ROIs",
             lambda s: ["simulate", "--out", str(s.out), "--volume-shape", "8x8x8"],
             lambda s: ["volume_shape (8, 8, 8)"]),
    BadInput("simulate: volume shape not XxYxZ",
             lambda s: ["simulate", "--out", str(s.out), "--volume-shape", "8x8"], lambda s: ["8x8"]),
    BadInput("simulate: more shared images than images",
             lambda s: ["simulate", "--out", str(s.out), "--n-images", "100", "--n-shared", "200"],
             lambda s: ["shared"]),
    # run
    BadInput("run: NSD root missing (nothing written before the check)",
             lambda s: _run_config(s, f'nsd_root = "{s.root / "nowhere"}"\nout_dir = "{s.out}"\n'
                                      f'model = "{s.model}"\n'),
             lambda s: [str(s.root / "nowhere")]),
    BadInput("run: model folder missing",
             lambda s: _run_config(s, f'nsd_root = "{s.nsd}"\nout_dir = "{s.out}"\n'
                                      f'model = "{s.root / "gone" / "model"}"\n'),
             lambda s: ["not found"]),
    BadInput("run: config file missing", lambda s: ["run", str(s.root / "absent.toml")],
             lambda s: ["absent.toml"]),
    BadInput("run: config is not TOML",
             lambda s: _run_config(s, "nsd_root = [unclosed\n"), lambda s: ["run.toml"]),
    # options and messages that name the real cause (issue 23)
    BadInput("prepare: an NSD atlas ROI given to --roi (a BIDS mask option) names --rois",
             lambda s: _prepare(s, "--roi", "streams:early", "--roi", "streams:ventral"),
             lambda s: ["argument --roi", "expected NAME=MASK.nii.gz", "an NSD atlas ROI is --rois streams:early"]),
    BadInput("reconstruct: abbreviated option", lambda s: _reconstruct(s, "--n-samp", "2"),
             lambda s: ["unrecognized arguments: --n-samp 2", "write --n-samples for --n-samp"]),
    BadInput("prepare --check: subject not in the tree, before any design check",
             lambda s: ["prepare", "--nsd-root", str(s.nsd), "--subject", "3", "--check"],
             lambda s: ["subject 3 is not in the NSD tree", "subjects present: 1"]),
    BadInput("prepare: output path under a file", lambda s: _prepare(s)[:-1] + [str(s.prepared / "subj01.h5")],
             lambda s: [f"{s.prepared}/subj01.h5: cannot create its folder", f"{s.prepared} is a file"]),
    BadInput("report: study folder of a run whose subjects have not finished", lambda s: ["report", str(s.out)],
             lambda s: ["subj01", "metrics.json", "has not finished"], _unfinished_study),
    BadInput("run: a bare --ray before a missing config takes it as the config",
             lambda s: ["run", "--ray", str(s.root / "absent.toml")], lambda s: ["absent.toml", "not found"]),
    BadInput("run: model not in the local cache (checked before prepare)",
             lambda s: _run_config(s, f'nsd_root = "{s.nsd}"\nout_dir = "{s.out}"\nmodel = "nobody/no-such-model"\n'),
             lambda s: ["model = 'nobody/no-such-model' in", "run.toml", "cache"]),
    BadInput("run: corrupt weights in the model folder (checked before prepare)",
             lambda s: _run_config(s, f'nsd_root = "{s.nsd}"\nout_dir = "{s.out}"\nmodel = "{s.model}"\n'),
             lambda s: ["unet", "safetensors"], _corrupt_weights),
    BadInput("run: out_dir under a regular file",
             lambda s: _run_config(s, f'nsd_root = "{s.nsd}"\nout_dir = "{s.prepared / "run"}"\n'
                                      f'model = "{s.model}"\n'),
             lambda s: [str(s.prepared / "run"), "is a file"]),
    BadInput("run: free disk space below the estimate",
             lambda s: _run_config(s, f'nsd_root = "{s.nsd}"\nout_dir = "{s.out}"\nmodel = "{s.model}"\n'
                                      "[reconstruction]\nn_samples = 1000000000000000\n"),
             lambda s: ["GB free", "n_samples"]),
    # a resume with settings other than those a finished stage recorded (stages/<name>.json)
    BadInput("run: resume with another [reconstruction] n_samples than the folder computed",
             lambda s: _run_config(s, f'nsd_root = "{s.nsd}"\nout_dir = "{s.out}"\nmodel = "{s.model}"\n'
                                      "[reconstruction]\nn_samples = 1\n"),
             lambda s: ["stage reconstruct", "[reconstruction] n_samples = 5, now 1", "out_dir", "--redo reconstruct"],
             lambda s: _recorded_n_samples(s, "run")),
    BadInput("demo: --n-samples 1 over a 5-sample folder",
             lambda s: ["demo", "--out", str(s.root), "--n-samples", "1"],
             lambda s: ["stage reconstruct", "[reconstruction] n_samples = 5, now 1", "--out", "--redo reconstruct"],
             lambda s: _recorded_n_samples(s, "demo")),
    BadInput("run: resume with other [reconstruction] methods than the folder computed",
             lambda s: _run_config(s, f'nsd_root = "{s.nsd}"\nout_dir = "{s.out}"\nmodel = "{s.model}"\n'
                                      '[reconstruction]\nmethods = ["z_only"]\n'),
             lambda s: ["stage reconstruct", "[reconstruction] methods = [", 'now ["z_only"]', "--redo reconstruct"],
             lambda s: _recorded_n_samples(s, "run")),
]


def _recorded_n_samples(s: Study, command: str) -> None:
    """Record that reconstruct ran with ``n_samples = 5`` in the folder of ``run`` (``s.out``) or ``demo`` (root)."""
    from brain2image.config import RunConfig
    from brain2image.embedded.demo import demo_config
    from brain2image.stages import get_stage
    from brain2image.stages.recorded_settings import record_settings

    config = demo_config(s.root) if command == "demo" else RunConfig(nsd_root=str(s.nsd), out_dir=str(s.out),
                                                                      model=str(s.model))
    config = dataclasses.replace(config, reconstruction=dataclasses.replace(config.reconstruction, n_samples=5))
    record_settings(get_stage("reconstruct"), config)


def _drop_store_rows(path: Path) -> None:
    """Rewrite a feature store with only its first 5 images (a store made for other ids)."""
    from brain2image.formats.feature_store import FeatureStore

    store = FeatureStore.open(path)
    ids, values, attrs = store.ids[:5], store.read(store.ids[:5]), store.attrs
    path.unlink()
    small = FeatureStore.create(path, ids, values.shape[1:], attrs)
    small.write(ids, values)
    small.finalize()


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_a_bad_input_is_one_line_exit_2_and_nothing_half_written(case, valid_study, tmp_path, capsys, monkeypatch):
    study = Study(tmp_path / "case")
    shutil.copytree(valid_study, study.root)
    case.breakage(study)
    argv = case.argv(study)
    if case.full_disk:
        _fill_the_disk(monkeypatch)
    capsys.readouterr()
    before = _snapshot(study.root)
    try:
        with single_torch_thread():
            status = main(["--no-progress", *argv])
    except SystemExit as usage_error:  # argparse's one-line usage errors (OneLineParser)
        status = usage_error.code
    finally:
        monkeypatch.undo()
    err = one_error_line(capsys, argv[0])
    assert status == 2, (argv, err)
    for words in case.expected(study):
        assert words in err, (words, err)
    after = _snapshot(study.root)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    assert not [p for p in study.root.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial.h5")]


def test_the_table_has_at_least_thirty_distinct_cases():
    assert len({case.name for case in BAD_INPUTS}) == len(BAD_INPUTS) >= 30
