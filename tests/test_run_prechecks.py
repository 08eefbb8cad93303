"""``brain2image run`` checks the model, the sources, the output folders and the disk before anything is written."""

from __future__ import annotations

import shutil
import time
from collections import namedtuple
from pathlib import Path

import pytest
from ldm_dummy import single_torch_thread
from study_fixtures import one_error_line, tiny_study

from brain2image.cli import main
from brain2image.config import load_run_config
from brain2image.errors import DataFormatError
from brain2image.prechecks import check_before_run, check_model_files, estimate_run_bytes


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """``(nsd root, model folder)`` of a tiny simulated study."""
    root = tmp_path_factory.mktemp("prechecks")
    with single_torch_thread():
        simulated, model = tiny_study(root)
    return simulated.nsd_root, model


def _config(tmp_path: Path, study: tuple[Path, Path], out: Path, model: str | None = None, extra: str = "") -> Path:
    nsd, model_dir = study
    path = tmp_path / "run.toml"
    path.write_text(f'nsd_root = "{nsd}"\nout_dir = "{out}"\nmodel = "{model or model_dir}"\n{extra}')
    return path


def _run(path: Path, capsys) -> tuple[int, str, float]:
    capsys.readouterr()
    start = time.perf_counter()
    status = main(["--no-progress", "run", str(path)])
    return status, one_error_line(capsys, "run"), time.perf_counter() - start


def test_a_model_missing_from_the_cache_is_refused_before_prepare(study, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    path = _config(tmp_path, study, out, model="nobody/no-such-model")
    status, err, elapsed = _run(path, capsys)
    assert status == 2
    assert "model = 'nobody/no-such-model'" in err and str(path) in err and "--model" not in err
    assert not out.exists() and elapsed < 10


def test_an_unwritable_out_dir_is_one_line_naming_it(study, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder\n")
    out = tmp_path / "a_file" / "run"
    status, err, _ = _run(_config(tmp_path, study, out), capsys)
    assert status == 2 and str(out) in err and "is a file" in err


def test_too_little_disk_is_refused_with_the_estimate_and_the_free_space(study, tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    out = tmp_path / "out"
    path = _config(tmp_path, study, out)
    needed = estimate_run_bytes(load_run_config(path), study[1])
    status, err, _ = _run(path, capsys)
    assert status == 2 and needed > 1000
    assert f"{needed / 1e9:.3g} GB" in err and "1e-06 GB free" in err and not out.exists()


def test_a_valid_run_passes_the_checks_and_writes_nothing(study, tmp_path, capsys, monkeypatch):
    out = tmp_path / "parent" / "out"
    path = _config(tmp_path, study, out, extra="subjects = [1]\n")
    check_before_run(load_run_config(path), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]
    ran = []
    monkeypatch.setattr("brain2image.pipeline.run_pipeline", lambda config, **options: ran.append(config) or
                        Path(config.out_dir) / "report.html")
    assert main(["--no-progress", "run", str(path)]) == 0
    assert [config.out_dir for config in ran] == [str(out)]


def test_the_estimate_counts_features_and_decoders_once_the_prepared_file_is_there(study, tmp_path):
    nsd, model = study
    config = load_run_config(_config(tmp_path, study, tmp_path / "out"))
    before = estimate_run_bytes(config, model)
    prepared = tmp_path / "out" / "prepared" / "subj01.h5"
    assert main(["--no-progress", "prepare", "--nsd-root", str(nsd), "--subject", "1", "--out", str(prepared)]) == 0
    assert estimate_run_bytes(config, model) > before > 0


def test_a_cached_hub_model_and_the_bundled_one_are_found_without_loading(study, tmp_path, monkeypatch):
    snapshot = tmp_path / "hf" / "hub" / "models--owner--tiny" / "snapshots" / "abc123"
    shutil.copytree(study[1], snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    assert check_model_files("owner/tiny") == snapshot
    assert check_model_files("bundled").is_dir() and check_model_files("random:sd-v1-4") is None
    weights = snapshot / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(DataFormatError, match="diffusion_pytorch_model.safetensors: not readable safetensors"):
        check_model_files("owner/tiny", "run.toml")
