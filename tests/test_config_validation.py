"""Config validation on load: every value's type, range and choices are checked before anything runs.

A bad value in a run config (``brain2image run``), in a stage command's options or in a
``RunConfig`` given to ``run_pipeline`` stops the run with one line naming the key, the value and
what is expected, and nothing is written.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from study_fixtures import one_error_line

from brain2image.cli import main
from brain2image.config import (
    DecoderConfig,
    EncodingConfig,
    ReconstructionConfig,
    RunConfig,
    ZcConfig,
    check_config,
    config_from_dict,
    config_to_dict,
    load_run_config,
    run_config_from_dict,
)
from brain2image.embedded.demo import demo_config
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.pipeline import check_run_inputs, run_pipeline

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))

#: (TOML lines after nsd_root / out_dir, the key as the message names it, the value as shown, expected).
BAD_VALUES = [
    ('subject = "one"', "subject", '"one"', "an NSD subject 1..8"),
    ("subject = 9", "subject", "9", "an NSD subject 1..8"),
    ("subject = true", "subject", "true", "an NSD subject 1..8"),
    ("threads = 0", "threads", "0", "an integer ≥ 1"),
    ('dtype = "fp16"', "dtype", '"fp16"', 'one of "float32", "float16", "bfloat16"'),
    ('model = 3', "model", "3", "a string"),
    ('[prepare]\nrois = "nsdgeneral"', "[prepare] rois", '"nsdgeneral"',
     'a non-empty list of strings, e.g. ["nsdgeneral"]'),
    ("[prepare]\nrois = []", "[prepare] rois", "[]", "a non-empty list of strings"),
    ("[prepare]\nsessions = 0", "[prepare] sessions", "0", "a count (37), a list of sessions ([1, 2, 5])"),
    ('[prepare]\nsessions = "1-x"', "[prepare] sessions", '"1-x"', 'a string of sessions and ranges ("1-3,7")'),
    ('[prepare]\nbeta_format = "nii"', "[prepare] beta_format", '"nii"', 'one of "hdf5", "nifti"'),
    ("[prepare]\nzscore_sessions = 1", "[prepare] zscore_sessions", "1", "true or false"),
    ("[features]\nbatch_size = 0", "[features] batch_size", "0", "an integer ≥ 1"),
    ("[features]\nz_resolution = 320.5", "[features] z_resolution", "320.5", "an integer ≥ 8"),
    ("[features]\nseed = -1", "[features] seed", "-1", "an integer ≥ 0"),
    ("[decoder]\nalphas = []", "[decoder] alphas", "[]", "a non-empty list of numbers > 0"),
    ("[decoder]\nalphas = [1.0, -1.0]", "[decoder] alphas", "[1.0, -1.0]", "a non-empty list of numbers > 0"),
    ("[decoder]\ncv_folds = 1", "[decoder] cv_folds", "1", "an integer ≥ 2"),
    ("[decoder]\ntarget_chunk = 0", "[decoder] target_chunk", "0", "an integer ≥ 1"),
    ('[decoder]\nbackend = "cuda"', "[decoder] backend", '"cuda"', 'one of "auto", "numpy", "torch", "torch_cuda"'),
    ('[reconstruction]\nn_samples = "5"', "[reconstruction] n_samples", '"5"', "an integer ≥ 1"),
    ("[reconstruction]\nn_samples = 0", "[reconstruction] n_samples", "0", "an integer ≥ 1"),
    ('[reconstruction]\nstrength = "high"', "[reconstruction] strength", '"high"', "a number in (0, 1]"),
    ("[reconstruction]\nstrength = 0.0", "[reconstruction] strength", "0.0", "a number in (0, 1]"),
    ("[reconstruction]\nguidance_scale = -1.0", "[reconstruction] guidance_scale", "-1.0", "a number ≥ 0"),
    ("[reconstruction]\nnum_inference_steps = 0", "[reconstruction] num_inference_steps", "0", "an integer ≥ 1"),
    ("[reconstruction]\neta = 2.0", "[reconstruction] eta", "2.0", "a number in [0, 1]"),
    ('[reconstruction]\nmethods = ["z_only", "zc"]', "[reconstruction] methods", '["z_only", "zc"]',
     'a non-empty list of items from "z_only", "c_only", "z_plus_c", "oracle"'),
    ('[reconstruction]\nmethods = "oracle"', "[reconstruction] methods", '"oracle"', 'e.g. ["oracle"]'),
    ('[encoding]\nenabled = "yes"', "[encoding] enabled", '"yes"', "true or false"),
    ('[encoding]\npartition_pairs = [["z", "c", "zc_0.5"]]', "[encoding] partition_pairs",
     '[["z", "c", "zc_0.5"]]', 'a list of pairs of feature spaces, e.g. [["z", "c"]]'),
    ('[encoding]\nsummary_rois = "early"', "[encoding] summary_rois", '"early"', 'a list of strings, e.g. ["early"]'),
    ("[zc]\nzc_strengths = [0.5, 1.5]", "[zc] zc_strengths", "[0.5, 1.5]", "a non-empty list of numbers in [0, 1]"),
    ("[zc]\npool_size = 0", "[zc] pool_size", "0", "an integer ≥ 1"),
    ('[evaluation]\nmetrics = "fast"', "[evaluation] metrics", '"fast"', 'one of "embedded", "full"'),
    ("[evaluation]\nsize = 5", "[evaluation] size", "5", "an integer ≥ 11"),
    ("[report]\nn_images = 0", "[report] n_images", "0", "an integer ≥ 1"),
]


def _write_config(tmp_path: Path, lines: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f'nsd_root = "{tmp_path / "nsd"}"\nout_dir = "{tmp_path / "out"}"\n{lines}\n')
    return path


@pytest.mark.parametrize("lines, key, shown, expected", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_in_a_run_config_stops_the_run_before_anything_is_written(tmp_path, capsys, lines, key,
                                                                              shown, expected):
    path = _write_config(tmp_path, lines)
    with pytest.raises(InvalidArgumentError) as error:
        load_run_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {key} = {shown}: expected ") and expected in message
    assert main(["run", str(path)]) == 2
    assert one_error_line(capsys) == f"brain2image run: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_a_bad_path_type_is_named_before_paths_are_resolved(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('nsd_root = 5\nout_dir = "out"\n')
    with pytest.raises(InvalidArgumentError, match="nsd_root = 5: expected a string"):
        load_run_config(path)


def _stage_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    """Stage commands with one bad option each, and the message (all outputs go under tmp_path/out)."""
    out = tmp_path / "out"
    fit = ["fit", "--prepared", "p.h5", "--features", "f.h5", "--out", str(out), "--target", "z"]
    recon = ["reconstruct", "--z", "z.h5", "--c", "c.h5", "--out", str(out)]
    features = ["features", "--nsd-root", "nsd", "--out", str(out), "--ids", "1", "2"]
    return [
        (["prepare", "--subject", "9", "--nsd-root", "nsd", "--out", str(out / "subj09.h5")],
         "subject = 9 (--subject): expected an NSD subject 1..8"),
        (["prepare", "--subject", "one", "--nsd-root", "nsd", "--out", str(out / "subj01.h5")],
         "subject = \"one\" (--subject): expected an NSD subject 1..8"),
        ([*fit, "--cv-folds", "1"], "[decoder] cv_folds = 1 (--cv-folds): expected an integer ≥ 2"),
        ([*fit, "--alphas", "-1"], "[decoder] alphas = [-1.0] (--alphas): expected a non-empty list of numbers > 0"),
        ([*recon, "--n-samples", "0"], "[reconstruction] n_samples = 0 (--n-samples): expected an integer ≥ 1"),
        ([*recon, "--strength", "1.5"], "[reconstruction] strength = 1.5 (--strength): expected a number in (0, 1]"),
        ([*features, "--batch-size", "0"], "[features] batch_size = 0 (--batch-size): expected an integer ≥ 1"),
        (["encode", "--prepared", "p.h5", "--features", "z=z.h5", "--out", str(out), "--cv-folds", "1"],
         "[encoding] cv_folds = 1 (--cv-folds): expected an integer ≥ 2"),
        (["evaluate", "--recon", "r", "--out", str(out / "e.json"), "--nsd-root", "nsd", "--size", "5"],
         "[evaluation] size = 5 (--size): expected an integer ≥ 11"),
    ]


def test_a_bad_option_of_a_stage_command_is_one_line_and_writes_nothing(tmp_path, capsys):
    for argv, message in _stage_cases(tmp_path):
        assert main(argv) == 2, argv
        assert message in one_error_line(capsys, argv[0])
        assert not (tmp_path / "out").exists(), argv


def test_report_checks_its_n_images_option(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps(config_to_dict(RunConfig(nsd_root="nsd", out_dir=str(run)))))
    assert main(["report", str(run), "--n-images", "0"]) == 2
    assert "[report] n_images = 0 (--n-images): expected an integer ≥ 1" in one_error_line(capsys, "report")
    assert sorted(p.name for p in run.iterdir()) == ["run_config.json"]


@pytest.mark.parametrize("argv, message", [
    (["features", "--nsd-root", "n", "--out", "o", "--ids", "1", "--shard", "3/2"],
     "argument --shard: shard 3/2: expected i/n with integers 1 ≤ i ≤ n, e.g. 1/4"),
    (["reconstruct", "--z", "z", "--c", "c", "--out", "o", "--shard", "1/0"], "shard 1/0: expected i/n"),
    (["fit", "--cv-folds", "x"], "argument --cv-folds: invalid int value: 'x'"),
])
def test_usage_errors_are_one_line_with_status_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = one_error_line(capsys, argv[0])
    assert message in err and f"see brain2image {argv[0]} --help" in err


def test_the_command_line_prints_one_line_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "brain2image.cli", "prepare", "--subject", "9", "--nsd-root",
                           str(tmp_path), "--out", str(out / "subj09.h5")], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr == "brain2image prepare: error: subject = 9 (--subject): expected an NSD subject 1..8\n"
    assert not out.exists()


# ------------------------------------------------------------------------------ run_pipeline
def _nsd_root(tmp_path: Path) -> Path:
    root = tmp_path / "nsd"
    (root / "nsddata").mkdir(parents=True)
    return root


@pytest.mark.parametrize("setup, message", [
    (lambda tmp: dict(nsd_root=str(tmp / "missing")), "nsd_root = '{tmp}/missing': folder not found; expected "
                                                      "the NSD root, the folder holding nsddata/"),
    (lambda tmp: dict(nsd_root=str(tmp)), "nsd_root = '{tmp}': no nsddata/ folder in it"),
    (lambda tmp: dict(nsd_root=str(_nsd_root(tmp)), model=str(tmp / "no" / "model")),
     "model = '{tmp}/no/model': folder not found; expected 'bundled', a diffusers hub id"),
    (lambda tmp: dict(nsd_root=str(_nsd_root(tmp)), model="./no/such/model"), "model = './no/such/model': folder"),
    (lambda tmp: dict(nsd_root=str(_nsd_root(tmp)), model="~/no-such-model-folder"), "folder not found"),
])
def test_run_checks_its_inputs_before_writing_anything(tmp_path, setup, message):
    out = tmp_path / "out"
    with pytest.raises(MissingFileError) as error:
        run_pipeline(RunConfig(out_dir=str(out), **setup(tmp_path)), progress=False)
    assert message.format(tmp=tmp_path) in str(error.value)
    assert not out.exists()


def test_run_checks_a_config_built_in_python_before_writing_anything(tmp_path):
    out = tmp_path / "out"
    config = RunConfig(nsd_root=str(_nsd_root(tmp_path)), out_dir=str(out),
                       reconstruction=ReconstructionConfig(n_samples=0))
    with pytest.raises(InvalidArgumentError, match=r"\[reconstruction\] n_samples = 0 \(--n-samples\): expected"):
        run_pipeline(config, progress=False)
    with pytest.raises(InvalidArgumentError, match=r"\[zc\] batch_size = 0"):
        run_pipeline(RunConfig(nsd_root=str(tmp_path), out_dir=str(out), zc=ZcConfig(batch_size=0)))
    assert not out.exists()


def test_hub_ids_and_named_models_are_left_to_the_loader(tmp_path):
    root = str(_nsd_root(tmp_path))
    for model in ("bundled", "CompVis/stable-diffusion-v1-4", "random:sd-v1-4@3", "gpt2"):
        check_run_inputs(RunConfig(nsd_root=root, out_dir="o", model=model))
    local = tmp_path / "models" / "sd"
    local.mkdir(parents=True)
    check_run_inputs(RunConfig(nsd_root=root, out_dir="o", model=str(local)))


# ------------------------------------------------------------------------------ valid configs
def test_the_demo_config_and_the_defaults_are_valid(tmp_path):
    config = demo_config(tmp_path, threads=2, n_samples=3)
    check_config(config)
    assert run_config_from_dict(config_to_dict(config)) == config
    check_config(RunConfig(nsd_root="n", out_dir="o", zc=ZcConfig()))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_configs_are_valid(example):
    check_config(load_run_config(example))


def test_command_line_forms_are_accepted_in_a_file(tmp_path):
    path = _write_config(tmp_path, '[prepare]\nsessions = "1-3,7"\n[encoding]\npartition_pairs = ["z:c"]\n'
                                   "[reconstruction]\nstrength = 1\nguidance_scale = 0")
    config = load_run_config(path)
    assert config.prepare.sessions == [1, 2, 3, 7]
    assert config.encoding.partition_pairs == [["z", "c"]]
    assert config.reconstruction.strength == 1 and config.reconstruction.guidance_scale == 0


def test_config_from_dict_checks_values_and_keeps_unknown_keys_a_format_error():
    with pytest.raises(InvalidArgumentError, match=r"^\[decoder\] cv_folds = 1 \(--cv-folds\): expected an"):
        config_from_dict(DecoderConfig, {"cv_folds": 1})
    with pytest.raises(InvalidArgumentError, match=r"^d.h5: \[encoding\] maps = \"no\": expected true or false$"):
        config_from_dict(EncodingConfig, {"maps": "no"}, where="d.h5")
    with pytest.raises(DataFormatError, match="unknown key 'n_folds' in d.h5 \\[encoding\\]; did you mean 'cv_folds'"):
        config_from_dict(EncodingConfig, {"n_folds": 3}, where="d.h5")
    assert config_from_dict(ReconstructionConfig, {"methods": ["oracle"]}).methods == ("oracle",)
    assert config_from_dict(RunConfig, {"nsd_root": None, "out_dir": ""}).nsd_root is None
    with pytest.raises(InvalidArgumentError, match=r"^nsd_root = null \(--nsd-root\): expected a string$"):
        config_from_dict(RunConfig, {"nsd_root": None, "out_dir": ""}, allow_none=False)


def test_the_generic_checks_read_what_a_class_declares_and_know_no_section():
    import ast
    from dataclasses import dataclass, field

    import brain2image.config_checks as checks

    imported = {node.module for node in ast.walk(ast.parse(Path(checks.__file__).read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and node.module}
    assert "config" not in imported and not any(name.startswith(("sources", "stages")) for name in imported)

    @dataclass
    class Toy:
        _section = "toy"
        low: int = field(default=0, metadata={"help": "low", "min": 0})
        high: int = field(default=1, metadata={"help": "high", "min": 0})

        @classmethod
        def _renamed_keys(cls):
            return {"top": "high"}

        @classmethod
        def _check_values(cls, values, where, allow_none):
            if values.get("low", 0) > values.get("high", 1):  # the keys given
                raise InvalidArgumentError(f"{where}: [toy] low > high")

    with pytest.raises(InvalidArgumentError, match=r"^t.toml: \[toy\] low = -1: expected an integer ≥ 0$"):
        checks.config_from_dict(Toy, {"low": -1}, where="t.toml")
    with pytest.raises(DataFormatError, match=r"^unknown key 'top' in t.toml \[toy\]; did you mean 'high'\?"):
        checks.config_from_dict(Toy, {"top": 3}, where="t.toml")
    with pytest.raises(InvalidArgumentError, match=r"^t.toml: \[toy\] low > high$"):
        checks.config_from_dict(Toy, {"low": 2}, where="t.toml")
    assert checks.config_from_dict(Toy, {"low": 1}) == Toy(low=1)
