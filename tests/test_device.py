"""One device for the whole run: the device check, the auto backends, memory sizing, out-of-memory lines."""

from __future__ import annotations

import contextlib
import dataclasses
import re

import numpy as np
import pytest
import torch
from prepared_writer import write_prepared

from brain2image.cli import main
from brain2image.config import DecoderConfig, EncodingConfig, RunConfig
from brain2image.decoding import DecoderFile, fit_decoder_from_files
from brain2image.devices import check_device, device_scope, free_memory, is_out_of_memory
from brain2image.encoding.analysis import encode_arrays
from brain2image.errors import InvalidArgumentError, ResourceError
from brain2image.formats.feature_store import FeatureStore
from brain2image.pipeline import run_pipeline
from brain2image.ridge.backend import get_backend, resolve_backend
from brain2image.ridge.memory import (
    MIN_SHARE,
    SAFETY,
    chunk_for_memory,
    decoder_bytes,
    decoder_target_chunk,
    encoding_bytes,
    encoding_target_chunk,
)
from brain2image.stages import Stage, StageContext, get_stage, run_stage
from brain2image.stages.fit import FitStage

FIT = ["fit", "--prepared", "p.h5", "--features", "f.h5", "--out", "o", "--target", "z"]
GIB = 2**30


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------- the device check
def test_device_must_be_a_torch_device_this_machine_has(no_cuda):
    assert check_device("cpu") == "cpu"
    with pytest.raises(InvalidArgumentError, match=r"device = 'gpu': not a torch device; expected 'cpu', 'cuda'"):
        check_device("gpu")
    with pytest.raises(InvalidArgumentError, match="device type 'meta' is not supported"):
        check_device("meta")
    cuda = (rf"device = 'cuda': CUDA is not available on this machine \(torch {re.escape(torch.__version__)} built "
            r"(for CUDA \S+|without CUDA); no GPU visible\); use device = 'cpu'")
    with pytest.raises(InvalidArgumentError, match=cuda):
        check_device("cuda")


def test_cuda_index_must_exist(one_gpu):
    assert check_device("cuda") == "cuda" and check_device("cuda:0") == "cuda:0"
    with pytest.raises(InvalidArgumentError, match=r"'cuda:1': this machine has 1 CUDA device\(s\)"):
        check_device("cuda:1")


def test_run_refuses_a_missing_gpu_before_writing_anything(no_cuda, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(InvalidArgumentError, match="device = 'cuda': CUDA is not available"):
        run_pipeline(RunConfig(nsd_root=str(tmp_path), out_dir=str(out), device="cuda"))
    assert not out.exists()
    config = tmp_path / "run.toml"
    config.write_text(f'nsd_root = "{tmp_path}"\nout_dir = "{out}"\ndevice = "cuda:0"\n')
    assert main(["run", str(config)]) == 2
    assert "brain2image run: error: device = 'cuda:0': CUDA is not available" in _one_error_line(capsys)
    assert not out.exists()


def test_every_stage_command_checks_the_device(no_cuda, capsys):
    assert main([*FIT, "--device", "cuda"]) == 2
    assert "brain2image fit: error: device = 'cuda': CUDA is not available" in _one_error_line(capsys)
    assert main(["evaluate", "--recon", "r", "--out", "o.json", "--nsd-root", "n", "--device", "cuda"]) == 2
    assert "device = 'cuda'" in _one_error_line(capsys)


def test_the_stages_that_compute_take_device():
    for name in ("features", "fit", "reconstruct", "evaluate", "encode"):
        assert "device" in {o.key for o in get_stage(name).options()}, name


def test_a_cuda_index_becomes_the_current_device_inside_the_scope(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def cuda_device(index):
        entered.append(index)
        yield

    monkeypatch.setattr(torch.cuda, "device", cuda_device)
    for device in ("cpu", "cuda", "cuda:1"):
        with device_scope(device):
            pass
    assert entered == [1]           # "cuda" keeps the current device; "cpu" touches nothing
    assert free_memory("cpu") is None


# ---------------------------------------------------------------------------------- backends
def test_auto_backend_follows_the_device(one_gpu):
    assert resolve_backend("auto", "cpu") == "numpy"
    assert resolve_backend("auto", "cuda") == "torch_cuda"
    assert resolve_backend("auto", "cuda:0") == "torch_cuda"
    assert resolve_backend("torch", "cuda") == "torch" and resolve_backend("numpy", "cuda") == "numpy"
    with pytest.raises(InvalidArgumentError, match=r"\[decoder\] backend = 'torch_cuda' runs on the GPU but "
                                                   r"device = 'cpu'; expected device = 'cuda'"):
        resolve_backend("torch_cuda", "cpu", option="[decoder] backend")
    with pytest.raises(InvalidArgumentError, match=r"\[encoding\] backend = 'jax': unknown backend"):
        resolve_backend("jax", "cpu", option="[encoding] backend")


def test_torch_cuda_without_cuda_is_an_error_not_a_skip(no_cuda, capsys):
    with pytest.raises(InvalidArgumentError, match="device = 'cuda': CUDA is not available"):
        resolve_backend("torch_cuda", "cuda")
    with pytest.raises(InvalidArgumentError, match="backend 'torch_cuda': CUDA is not available"):
        get_backend("torch_cuda")
    assert main([*FIT, "--backend", "torch_cuda"]) == 2
    assert "[decoder] backend = 'torch_cuda' runs on the GPU but device = 'cpu'" in _one_error_line(capsys)


def test_backends_default_to_auto():
    assert DecoderConfig().backend == "auto" and EncodingConfig().backend == "auto"
    assert DecoderConfig().target_chunk == 8192 and EncodingConfig().target_chunk is None


# ---------------------------------------------------------------------------------- memory sizing
def test_chunk_is_what_the_free_memory_holds():
    # (free * SAFETY - fixed) / per_target, in [1, n_targets], at most the cap
    assert chunk_for_memory(10_000, 1000, free=4_000_000, fixed=1_000_000) == int((4e6 * SAFETY - 1e6) // 1000)
    assert chunk_for_memory(500, 1000, free=4_000_000) == 500
    assert chunk_for_memory(10_000, 1000, free=4_000_000, cap=64) == 64
    # a fixed part over the budget still leaves MIN_SHARE of it to the chunks; never below 1 target
    assert chunk_for_memory(10_000, 1000, free=4_000_000, fixed=10**9) == int(4e6 * SAFETY * MIN_SHARE // 1000)
    assert chunk_for_memory(10_000, 1000, free=1_000, fixed=10_000) == 1


def test_decoder_chunk_on_the_cpu_is_the_config_value():
    shape = dict(n_rows=27_000, n_images=9_000, n_features=7_000, n_targets=59_136)
    for backend in ("numpy", "torch"):
        assert decoder_target_chunk(8192, backend, **shape, free=1) == 8192
        assert decoder_target_chunk(None, backend, **shape) == 8192
        assert decoder_target_chunk(100, backend, **shape) == 100


def test_decoder_chunk_on_the_gpu_follows_the_free_memory(monkeypatch):
    shape = dict(n_rows=27_000, n_images=9_000, n_features=7_000, n_targets=59_136)
    fixed, per_target = decoder_bytes(27_000, 9_000, 7_000, "float32")
    assert fixed == 4 * (7_000 * 7_000 + 2 * 27_000 * 7_000)
    assert per_target == 4 * (9_000 + 3 * 27_000 + 2 * 7_000 + 7_000)
    small = decoder_target_chunk(None, "torch_cuda", **shape, free=8 * GIB)
    assert small == int((8 * GIB * SAFETY - fixed) // per_target) and 1 < small < 8192
    assert decoder_target_chunk(8192, "torch_cuda", **shape, free=8 * GIB) == small    # fewer than the config
    assert decoder_target_chunk(8192, "torch_cuda", **shape, free=140 * GIB) == 8192    # the config caps it
    assert decoder_target_chunk(None, "torch_cuda", **shape, free=140 * GIB) == 59_136
    assert decoder_target_chunk(None, "torch_cuda", **shape, dtype="float64", free=8 * GIB) < small
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * GIB, 80 * GIB))
    assert decoder_target_chunk(None, "torch_cuda", **shape) == small                   # measured


def test_encoding_chunk_on_the_gpu_follows_the_free_memory():
    shape = dict(n_unique=9_000, n_test=1_000, n_voxels=15_000)
    assert encoding_target_chunk(None, "numpy", **shape) is None                             # all voxels
    assert encoding_target_chunk(500, "torch", **shape) == 500
    fixed, per_voxel = encoding_bytes(9_000, 1_000, 15_000, n_kernels=2, n_alphas=9, n_folds=5)
    chunk = encoding_target_chunk(None, "torch_cuda", **shape, n_kernels=2, free=12 * GIB)
    assert chunk == int((12 * GIB * SAFETY - fixed) // per_voxel) and 1 < chunk < 15_000
    assert encoding_target_chunk(None, "torch_cuda", **shape, free=140 * GIB) == 15_000
    assert encoding_target_chunk(256, "torch_cuda", **shape, free=140 * GIB) == 256


# ---------------------------------------------------------------------------------- out of memory
def test_out_of_memory_in_a_stage_command_is_one_line_naming_the_option(monkeypatch, capsys):
    def run(self, ctx, shard=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                          "capacity of 79.15 GiB of which 1.2 GiB is free.\nIf reserved ...")

    monkeypatch.setattr(FitStage, "run", run)
    assert main(FIT) == 2
    err = _one_error_line(capsys)
    assert err.startswith("brain2image fit: error: stage fit ran out of GPU memory on device 'cpu' "
                          "(CUDA out of memory. Tried to allocate 2.00 GiB); lower [decoder] target_chunk "
                          "(--target-chunk)")


class _ZcStage(Stage):
    name = "zc_test"
    memory_options = ("encoding.target_chunk",)
    part_memory_options = {"features_zc": ("zc.batch_size",)}

    def __init__(self, error: BaseException, part: str | None):
        self.error, self.part = error, part

    def run(self, ctx, shard=None):
        if self.part is None:
            raise self.error
        with ctx.timed(self.part):
            raise self.error


@pytest.mark.parametrize("part, named", [("features_zc", "[zc] batch_size (--batch-size)"),
                                         ("encode", "[encoding] target_chunk (--target-chunk)"),
                                         (None, "[encoding] target_chunk (--target-chunk)")])
def test_out_of_memory_names_the_option_of_the_part_that_ran_out(tmp_path, part, named):
    ctx = StageContext(RunConfig(nsd_root="n", out_dir=str(tmp_path)), progress=False)
    with pytest.raises(ResourceError) as info:
        run_stage(_ZcStage(MemoryError("Unable to allocate 3.2 GiB for an array"), part), ctx)
    message = str(info.value)
    assert "\n" not in message and message.endswith(f"; lower {named}")
    assert "ran out of host memory (Unable to allocate 3.2 GiB for an array)" in message
    assert message.startswith(f"stage zc_test ({part}) ran out" if part else "stage zc_test ran out")


def test_other_errors_pass_through(tmp_path):
    ctx = StageContext(RunConfig(nsd_root="n", out_dir=str(tmp_path)), progress=False)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_stage(_ZcStage(RuntimeError("shape mismatch"), "encode"), ctx)
    assert is_out_of_memory(RuntimeError("CUSOLVER_STATUS_ALLOC_FAILED when calling syevd"))
    assert not is_out_of_memory(ValueError("CUDA out of memory"))


def test_a_stage_without_memory_options_says_what_to_do(tmp_path):
    ctx = StageContext(RunConfig(nsd_root="n", out_dir=str(tmp_path)), progress=False)
    stage = _ZcStage(torch.cuda.OutOfMemoryError("CUDA out of memory."), None)
    stage.memory_options = ()
    with pytest.raises(ResourceError, match=r"no option of this stage bounds it; use device = 'cpu' \(--device cpu\)"):
        run_stage(stage, ctx)


# ---------------------------------------------------------------------------------- torch on the CPU = numpy
def _decoder_files(tmp_path):
    rng = np.random.default_rng(3)
    ids = np.arange(0, 240, 2, dtype=np.int64)
    X_img = rng.standard_normal((len(ids), 20))
    feats = (X_img @ rng.standard_normal((20, 12)) + 0.3 * rng.standard_normal((len(ids), 12))).astype(np.float32)
    train_rows = np.repeat(np.arange(100), 2)
    prepared = write_prepared(tmp_path / "prepared.h5", ids[train_rows], ids[100:],
                              {"early": {"train": X_img[train_rows] + 0.5 * rng.standard_normal((200, 20)),
                                         "test": X_img[100:]}}, attrs={"subject": 1})
    store = FeatureStore.create(tmp_path / "z.h5", ids, (3, 4), {"feature": "z", "model": "m", "resolution": 8,
                                                                "seed": 0})
    store.write(ids, feats.reshape(-1, 3, 4))
    return prepared, store.finalize()


def test_decoder_on_torch_matches_numpy(tmp_path):
    prepared, store = _decoder_files(tmp_path)
    config = DecoderConfig(alphas=[1.0, 10.0, 100.0, 1000.0], cv_folds=3)
    files = {b: fit_decoder_from_files(prepared, store, "early", "z", tmp_path / f"{b}.h5", config,
                                       backend=None if b == "auto" else b)
             for b in ("auto", "numpy", "torch")}
    auto, numpy_, torch_ = (DecoderFile.read(files[b], load_weights=True) for b in ("auto", "numpy", "torch"))
    assert auto.attrs["backend"] == "numpy" and auto.attrs["target_chunk"] == 8192
    np.testing.assert_array_equal(auto.coef, numpy_.coef)
    assert torch_.attrs["backend"] == "torch"
    np.testing.assert_array_equal(torch_.alphas, numpy_.alphas)
    np.testing.assert_allclose(torch_.coef, numpy_.coef, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(torch_.test_corr, numpy_.test_corr, atol=1e-4)


def _encoding_problem(seed=0, n_images=80, n_test=20, dims=(6, 120), n_vox=10):
    rng = np.random.default_rng(seed)
    n_all = n_images + n_test
    X1 = rng.standard_normal((n_all, dims[0])).astype(np.float32)
    X2 = rng.standard_normal((n_all, dims[1])).astype(np.float32)
    signal = np.concatenate([X1 @ rng.standard_normal((dims[0], n_vox)) / np.sqrt(dims[0]),
                             X2 @ rng.standard_normal((dims[1], n_vox)) / np.sqrt(dims[1])], axis=1)
    train_index = np.repeat(np.arange(n_images), 2)
    Y_train = signal[train_index] + rng.standard_normal((len(train_index), 2 * n_vox))
    test_index = np.arange(n_images, n_all)
    Y_test = signal[test_index] + 0.5 * rng.standard_normal((n_test, 2 * n_vox))
    return {"s1": X1, "s2": X2}, train_index, Y_train.astype(np.float32), test_index, Y_test.astype(np.float32)


def test_encoding_on_torch_matches_numpy():
    problem = _encoding_problem()
    config = EncodingConfig(cv_folds=3, banded_n_iter=5, partition_pairs=[["s1", "s2"]])
    results = {b: encode_arrays(*problem, config=dataclasses.replace(config, backend=b))
               for b in ("auto", "numpy", "torch")}
    for name in ("s1", "s2"):
        np.testing.assert_array_equal(results["auto"].spaces[name]["r"], results["numpy"].spaces[name]["r"])
        assert isinstance(results["torch"].spaces[name]["r"], np.ndarray)
        np.testing.assert_allclose(results["torch"].spaces[name]["r"], results["numpy"].spaces[name]["r"], atol=1e-4)
        np.testing.assert_allclose(results["torch"].spaces[name]["alpha"], results["numpy"].spaces[name]["alpha"],
                                   rtol=1e-6)
    joint = {b: results[b].partitions["s1|s2"] for b in results}
    assert isinstance(joint["torch"]["r_joint"], np.ndarray)
    np.testing.assert_allclose(joint["torch"]["r_joint"], joint["numpy"]["r_joint"], atol=1e-4)
    np.testing.assert_allclose(joint["torch"]["weight_a"], joint["numpy"]["weight_a"], atol=1e-4)
