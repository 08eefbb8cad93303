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


# ------------------------------------------------------- options: no abbreviation, lists accumulate, old spellings
def _prepare_settings(monkeypatch, argv):
    """The ``[prepare]`` settings ``main(["prepare", ...])`` would run with (the stage's command replaced)."""
    from brain2image.stages import get_stage
    from brain2image.stages.base import CommandOutput

    seen = {}
    stage = type(get_stage("prepare"))

    def record(self, ctx):
        seen["prepare"] = ctx.config.prepare
        return CommandOutput([])

    monkeypatch.setattr(stage, "command", record)
    assert main(["prepare", "--subject", "1", "--check", *argv]) == 0
    return seen["prepare"]


def test_a_repeated_list_option_accumulates(monkeypatch):
    settings = _prepare_settings(monkeypatch, ["--rois", "streams:early", "--rois", "nsdgeneral", "streams:ventral"])
    assert [str(roi) for roi in settings.rois] == ["streams:early", "nsdgeneral", "streams:ventral"]
    assert [str(roi) for roi in _prepare_settings(monkeypatch, ["--rois", "nsdgeneral"]).rois] == ["nsdgeneral"]
    args = build_parser().parse_args(["features", "--out", "o", "--nsd-root", "n", "--feature", "z", "--feature", "c"])
    assert args.feature == ["z", "c"]  # the default list is replaced by the first occurrence, then extended


def test_every_list_option_accumulates():
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if action.option_strings and action.nargs in ("+", "*"):
                assert type(action).__name__ in ("AccumulateList", "_Renamed"), (name, action.dest)


@pytest.mark.parametrize("argv, words", [
    (["demo", "--out", "d", "--n-samp", "1"], "brain2image demo: error: unrecognized arguments: --n-samp 1; "
     "abbreviations are not accepted: write --n-samples for --n-samp"),
    (["demo", "--out", "d", "--thread", "1"], "write --threads for --thread"),
    (["prepare", "--subject", "1", "--ro", "x"], "write --roi or --rois or --root for --ro"),
    (["--no-prog", "demo", "--out", "d"], "unrecognized arguments: --no-prog"),
])
def test_abbreviations_are_refused(capsys, argv, words):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("argv, words", [
    (["prepare", "--subject", "1", "--raw-int16"], "--raw-int16 was renamed to --scale raw"),
    ([*FIT, "--dtype", "float32"], "--dtype was renamed to --ridge-dtype"),
    (["encode", "--pair", "z", "c"], "--pair was renamed to --partition-pairs"),
    (["reconstruct", "--steps", "5"], "--steps was renamed to --num-inference-steps"),
])
def test_old_spellings_say_what_they_were_renamed_to(capsys, argv, words):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and words in err, err
    assert err.startswith(f"brain2image {argv[0]}: error: ")


def test_an_nsd_atlas_roi_given_to_roi_names_rois(capsys):
    """``--roi`` is a BIDS / betas ROI (NAME=MASK); NSD's atlas ROIs stay ``--rois``, which the error names."""
    with pytest.raises(SystemExit) as stop:
        main(["prepare", "--subject", "1", "--roi", "streams:early"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert "expected NAME=MASK.nii.gz or NAME=reliable:N" in err and "--rois streams:early" in err, err


def test_every_old_spelling_of_the_table_is_refused(capsys):
    from brain2image.commands._common import RENAMED_OPTIONS

    commands = _subparsers(build_parser())
    for command, renamed in RENAMED_OPTIONS.items():
        for old, new in renamed.items():
            if type(commands[command]._option_string_actions[old]).__name__ != "_Renamed":
                continue  # still an option of its own there
            with pytest.raises(SystemExit):
                main([command, old, "x"])
            err = capsys.readouterr().err
            assert err.startswith(f"brain2image {command}: error: {old} was renamed to {new}"), err


def test_fit_offers_one_roi_flag_per_target():
    help_text = _subparsers(build_parser())["fit"].format_help()
    assert "--roi " in help_text and "--target " in help_text
    for flag in ("--z-roi", "--c-roi", "--targets", "--rois"):
        assert flag not in help_text, flag


def test_run_ray_reads_the_config_after_a_bare_ray_and_says_the_address(tmp_path, monkeypatch, capsys):
    import brain2image.cluster.ray_runner as ray_runner

    config = tmp_path / "run.toml"
    config.write_text(f'nsd_root = "{tmp_path}"\nout_dir = "{tmp_path / "out"}"\n')
    seen = []
    monkeypatch.setattr("brain2image.prechecks.check_before_run", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(ray_runner, "run_on_ray", lambda cfg, address, **kw: seen.append(address) or tmp_path)
    for argv, address in [(["--ray", str(config)], "local"), ([str(config), "--ray"], "local"),
                          (["--ray=auto", str(config)], "auto"), ([str(config), "--ray", "host:6379"], "host:6379")]:
        assert main(["run", *argv]) == 0, argv
        assert seen[-1] == address
        first = capsys.readouterr().out.splitlines()[0]
        assert first.startswith("--ray: running on ") and (address == "local" or repr(address) in first), first
