"""The stage abstraction: the registry, options defined once, a stage added by one class."""

import argparse
import contextlib
import dataclasses
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from method_plugins import HalfStrength, methods_registered

from brain2image.cli import main
from brain2image.config import (
    DecoderConfig,
    EncodingOptions,
    ReconstructionConfig,
    RunConfig,
    ZcConfig,
    config_to_dict,
    run_config_from_dict,
)
from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.stages import (
    Option,
    Stage,
    StageContext,
    get_stage,
    pipeline_stages,
    register_stage,
    stage_names,
    unregister_stage,
)

PIPELINE = ["prepare", "features", "fit", "transfer", "reconstruct", "evaluate", "encode", "brain_correlation",
            "report"]


# ---------------------------------------------------------------------------------- the example stage
@dataclass
class DecodingTableSettings:
    """Settings of the example stage (its own table, ``[decoding_table]``, in a run config)."""

    float_format: str = field(default="%.4f", metadata={"help": "printf format of the numbers"})


class DecodingTableStage(Stage):
    """docs/stages.md's worked example: each decoder's test accuracy, one CSV row per (target, ROI)."""

    name = "decoding_table"
    help = "write the decoders' test accuracy as CSV"
    description = "One row per decoder file: target, ROI, voxels, targets, mean / median test r, median alpha."
    sections = ("decoder",)
    settings_class = DecodingTableSettings
    path_options = (
        Option("decoders", "decoder files (brain2image fit)", type=Path, nargs="+", role="input", required=True),
        Option("out", "CSV to write (decoding.csv in a run)", type=Path, role="output", required=True),
    )

    def inputs(self, ctx):
        d, layout = ctx.config.decoder, ctx.layout
        decoders = ctx.path("decoders", lambda: [layout.decoder(t, roi) for t, roi in d.targets.items()])
        return {f"decoder_{i}": path for i, path in enumerate(decoders)}

    def outputs(self, ctx):
        return {"table": ctx.path("out", lambda: ctx.layout.root / "decoding.csv")}

    def run(self, ctx, shard=None):
        import pandas as pd

        from brain2image.formats.decoder_file import DecoderFile

        self.refuse_shard(shard)
        rows = []
        for path in self.inputs(ctx).values():
            decoder = DecoderFile.read(path)
            rows.append({"target": decoder.attrs["target"], "roi": decoder.attrs["roi"], **decoder.summary()})
        out = self.outputs(ctx)["table"]
        pd.DataFrame(rows).to_csv(out, index=False, float_format=self.settings(ctx.config).float_format)
        return out


@contextlib.contextmanager
def registered(stage_cls, **where):
    register_stage(stage_cls, **where)
    try:
        yield get_stage(stage_cls.name)
    finally:
        unregister_stage(stage_cls.name)


def _help(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(out.getvalue().split())


# ---------------------------------------------------------------------------------- registry
def test_registry_lists_the_stages_in_pipeline_order():
    assert stage_names() == PIPELINE
    assert [s.name for s in pipeline_stages()] == PIPELINE
    assert get_stage("fit").name == "fit" and get_stage("report").name == "report"
    with pytest.raises(InvalidArgumentError, match="no stage named 'fitt'"):
        get_stage("fitt")


def test_a_builtin_stage_keeps_its_place_whatever_the_registration_order():
    prepare, fit = type(get_stage("prepare")), type(get_stage("fit"))
    try:
        unregister_stage("prepare")
        unregister_stage("fit")
        register_stage(fit)
        register_stage(prepare)
        assert stage_names() == PIPELINE
    finally:
        for cls in (prepare, fit):
            if cls.name not in stage_names():
                register_stage(cls)
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_stage(fit)


def test_stage_commands_follow_the_pipeline_order_in_help():
    text = _help([])
    positions = [text.index(f" {name.replace('_', '-')} ") for name in PIPELINE]
    assert positions == sorted(positions)


def test_a_new_stage_is_one_class():
    with registered(DecodingTableStage, after="fit"):
        assert stage_names() == PIPELINE[:3] + ["decoding_table"] + PIPELINE[3:]
        assert "decoding-table write the decoders' test accuracy as CSV" in _help([])
        text = _help(["decoding-table"])
        for flag in ("--decoders", "--out", "--targets", "--float-format", "--no-progress", "-v"):
            assert flag in text, flag
        assert "printf format of the numbers (default: %.4f)" in text
    assert "decoding_table" not in stage_names()
    with pytest.raises(InvalidArgumentError, match="no such stage"):
        register_stage(DecodingTableStage, after="nope")


def test_a_new_stage_runs_as_a_command(tmp_path, capsys):
    from brain2image.config import DecoderConfig as Config
    from brain2image.formats.decoder_file import DecoderFile

    paths = []
    for target, roi in (("z", "early"), ("c", "ventral")):
        rng = np.random.default_rng(len(target))
        decoder = DecoderFile(test_ids=np.arange(4), test_pred=rng.standard_normal((4, 3)),
                              test_corr=np.array([0.5, 0.25, 0.125]), alphas=np.ones(3), cv_score=np.zeros(3),
                              config=Config(), coef=np.zeros((2, 3)), intercept=np.zeros(3), x_mean=np.zeros(2),
                              x_std=np.ones(2), attrs={"target": target, "roi": roi})
        paths.append(decoder.write(tmp_path / f"subj01_{target}_{roi}.h5"))
    with registered(DecodingTableStage):
        out = tmp_path / "table.csv"
        assert main(["decoding-table", "--decoders", *map(str, paths), "--out", str(out), "--float-format",
                     "%.2f"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("target,roi,n_voxels,n_targets,mean_r")
    assert lines[1].startswith("z,early,2,3,0.29,0.25")


def test_stage_settings_table_is_checked(tmp_path):
    config = run_config_from_dict({"nsd_root": "n", "out_dir": str(tmp_path), "decoding_table": {"float_formt": 1}})
    assert config.stage_settings == {"decoding_table": {"float_formt": 1}}
    with registered(DecodingTableStage):
        with pytest.raises(DataFormatError, match="unknown key 'float_formt'.*did you mean 'float_format'"):
            get_stage("decoding_table").settings(config)
        from brain2image.stages import check_stage_settings

        with pytest.raises(DataFormatError, match=r"unknown table \[decoding_tabel\].*did you mean \[decoding_table\]"):
            check_stage_settings(run_config_from_dict({"nsd_root": "n", "out_dir": "o", "decoding_tabel": {}}))


# ---------------------------------------------------------------------------------- options defined once
def test_every_option_is_in_its_command_help_with_its_default():
    for stage in pipeline_stages():
        text = _help([stage.command_name()])
        for option in stage.options():
            if option.hidden:
                continue
            assert (option.key if option.positional else option.flag) in text, (stage.name, option.key)
            if option.default not in (None, False) and not option.required:
                shown = option.default
                if isinstance(shown, (list, tuple)):
                    shown = " ".join(str(v) for v in shown)
                assert f"(default: {shown})" in text, (stage.name, option.key, shown)


def test_command_defaults_are_the_config_defaults():
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    from brain2image.commands._common import register_stage_command

    for stage in pipeline_stages():
        register_stage_command(subparsers, stage)
    fit = get_stage("fit").context_from_args(parser.parse_args(
        ["fit", "--prepared", "p.h5", "--features", "f.h5", "--out", "o", "--target", "z"]))
    assert fit.config.decoder == DecoderConfig()
    recon = get_stage("reconstruct").context_from_args(parser.parse_args(["reconstruct", "--out", "o"]))
    assert recon.config.reconstruction == ReconstructionConfig()
    assert (recon.config.model, recon.config.device, recon.config.dtype) == ("bundled", "cpu", None)
    encode = get_stage("encode").context_from_args(parser.parse_args(
        ["encode", "--prepared", "p.h5", "--features", "z=z.h5", "--out", "o", "--model", "m", "--seed", "3"]))
    assert encode.config.encoding.analysis_config() == dataclasses.replace(
        EncodingOptions().analysis_config(), seed=3)
    assert encode.config.zc == ZcConfig(seed=3)
    assert encode.paths["features"] == [("z", Path("z.h5"))]
    no_model = get_stage("encode").context_from_args(parser.parse_args(
        ["encode", "--prepared", "p.h5", "--features", "z=z.h5", "--out", "o"]))
    assert no_model.config.zc is None


def test_each_stage_defines_each_option_once():
    for stage in pipeline_stages():
        keys = [o.key for o in stage.options()]
        assert len(keys) == len(set(keys)), stage.name
    seed = next(o for o in get_stage("encode").options() if o.key == "seed")
    assert seed.sections == ("encoding", "zc") and "also sets [zc] seed" in seed.help


def test_memory_options_are_options_of_their_stage():
    named = {"fit": "decoder.target_chunk", "features": "features.batch_size",
             "reconstruct": "reconstruction.batch_size", "encode": "encoding.target_chunk"}
    for stage in pipeline_stages():
        keys = {f"{section}.{o.key}" for o in stage.options() for section in o.sections}
        wanted = [*stage.memory_options, *(o for part in stage.part_memory_options.values() for o in part)]
        assert set(wanted) <= keys, stage.name
        if stage.name in named:
            assert stage.memory_options == (named[stage.name],)
    assert get_stage("encode").part_memory_options == {"features_zc": ("zc.batch_size",)}


# ---------------------------------------------------------------------------------- stage behaviour
def test_stages_without_shards_refuse_one(tmp_path):
    ctx = StageContext(RunConfig(nsd_root="n", out_dir=str(tmp_path)))
    for name in ("prepare", "fit", "evaluate", "encode", "report"):
        with pytest.raises(InvalidArgumentError, match=f"stage '{name}' does not run on shards"):
            get_stage(name).run(ctx, shard=(1, 2))
    assert {s.name for s in pipeline_stages() if s.shardable} == {"features", "reconstruct"}


def test_context_pickles_without_its_model(tmp_path):
    ctx = StageContext(RunConfig(nsd_root="n", out_dir=str(tmp_path), zc=ZcConfig()), progress=False)
    ctx._model = object()
    copy = pickle.loads(pickle.dumps(ctx))
    assert copy._model is None and copy.config == ctx.config and copy.in_run_folder


def test_run_config_round_trips_through_json():
    config = RunConfig(nsd_root="/n", out_dir="/o", zc=ZcConfig(zc_strengths=[0.5]),
                       stage_settings={"decoding_table": {"float_format": "%.2f"}})
    assert run_config_from_dict(config_to_dict(config)) == config
    assert run_config_from_dict(config_to_dict(RunConfig(nsd_root="/n", out_dir="/o"))).zc is None


def test_reconstruct_reads_what_its_methods_need_plug_ins_included(tmp_path):
    def inputs(*methods):
        config = RunConfig(nsd_root="n", out_dir=str(tmp_path), reconstruction=ReconstructionConfig(methods=methods))
        return list(get_stage("reconstruct").inputs(StageContext(config)))

    with methods_registered(HalfStrength):
        assert inputs("z_plus_c_half") == ["z", "c"]
        assert inputs("oracle", "z_only") == ["z", "z_true", "c_true"]
        parser = argparse.ArgumentParser()
        from brain2image.commands._common import register_stage_command

        register_stage_command(parser.add_subparsers(dest="command"), get_stage("reconstruct"))
        args = parser.parse_args(["reconstruct", "--out", "o", "--methods", "z_only", "z_plus_c_half"])
        assert get_stage("reconstruct").context_from_args(args).config.reconstruction.methods == (
            "z_only", "z_plus_c_half")


def test_run_layout_paths_of_the_stages(tmp_path):
    ctx = StageContext(RunConfig(nsd_root="n", out_dir=str(tmp_path), subject=2))
    assert get_stage("prepare").outputs(ctx) == {"prepared": tmp_path / "prepared" / "subj02.h5"}
    assert get_stage("fit").outputs(ctx) == {"decoder_z": tmp_path / "decoders" / "subj02_z_early.h5",
                                             "decoder_c": tmp_path / "decoders" / "subj02_c_ventral.h5"}
    recon_inputs = get_stage("reconstruct").inputs(ctx)
    assert list(recon_inputs) == ["z", "c", "z_true", "c_true"]
    assert recon_inputs["z_true"] == tmp_path / "features" / "nsd_bundled_z.h5"
    assert get_stage("encode").outputs(ctx) == {"encoding": tmp_path / "encoding"}
    assert not get_stage("encode").is_done(ctx)
