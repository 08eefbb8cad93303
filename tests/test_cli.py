"""CLI conventions: common options anywhere, one-line errors with status 2, help text everywhere."""

import argparse
import contextlib
import io

import pytest

from brain2image.cli import build_parser, main
from brain2image.commands._common import show_progress, verbosity

FIT = ["fit", "--prepared", "p.h5", "--features", "f.h5", "--out", "o", "--target", "z"]


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("argv, verbose, progress", [
    (FIT, 0, True),
    ([*FIT, "-v", "--no-progress"], 1, False),
    (["-v", "--no-progress", *FIT], 1, False),
    (["-v", *FIT, "-vv"], 3, True),
    (["run", "c.toml", "--no-progress"], 0, False),
    (["--no-progress", "demo", "--out", "d"], 0, False),
])
def test_common_options_before_or_after_the_command(argv, verbose, progress):
    args = build_parser().parse_args(argv)
    assert verbosity(args) == verbose and show_progress(args) is progress


def test_every_command_option_has_help_and_the_prepared_file_is_named_one_way():
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            assert action.help, (name, action.dest)
        text = sub.format_help()
        assert "prepared_subj" not in text, name
        for flag in ("--progress ", "--steps ", "--guidance ", "--folds ", "--n-folds"):
            assert flag not in text, (name, flag)


def test_cli_error_is_one_line_with_status_2(tmp_path, capsys):
    code = main(["fit", "--prepared", str(tmp_path / "missing.h5"), "--features", str(tmp_path / "f.h5"),
                 "--out", str(tmp_path), "--target", "w"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("brain2image fit: error: ")
    assert "--roi is required for target 'w'" in err


def test_missing_file_error_names_the_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.toml not found" in err


@pytest.mark.parametrize("toml, message", [
    ('[encoding]\nn_folds = 3\n', "unknown key 'n_folds' in {path} [encoding]; did you mean 'cv_folds'?"),
    ('report_images = 3\n', "unknown key 'report_images' in {path} (top level); did you mean '[report] n_images'?"),
    ('[zc]\nstrengths = [0.5]\n', "unknown key 'strengths' in {path} [zc]; did you mean 'zc_strengths'?"),
    ('[decoder]\ntarget_chunks = 3\n', "did you mean 'target_chunk'?"),
])
def test_unknown_config_key_names_the_new_key(tmp_path, capsys, toml, message):
    path = tmp_path / "run.toml"
    path.write_text(f'nsd_root = "nsd"\nout_dir = "out"\n{toml}')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(path=path) in err


def test_argparse_errors_also_exit_2():
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as stop:
        main(["fit", "--cv-folds", "x"])
    assert stop.value.code == 2


def test_sessions_parse_error_is_clear(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--subject", "1", "--sessions", "1-x"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("brain2image prepare: error: argument --sessions: ")
    assert "sessions '1-x': expected a count (37) or a list" in err and "see brain2image prepare --help" in err


def test_a_bad_config_value_is_one_line_naming_key_value_and_expected(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('nsd_root = "nsd"\nout_dir = "out"\n[reconstruction]\nn_samples = "5"\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f'brain2image run: error: {path}: [reconstruction] n_samples = "5": expected an integer ≥ 1\n'
    assert not (tmp_path / "out").exists()
