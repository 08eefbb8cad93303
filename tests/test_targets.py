"""The decoder-target registry and ``[decoder] targets`` (brain2image.targets)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from brain2image.config import DecoderConfig, config_from_dict, run_config_from_dict
from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.formats.decoder_file import DecoderFile
from brain2image.ldm.targets import CaptionTarget, LatentTarget
from brain2image.targets import (
    BUILTIN_TARGETS,
    Target,
    default_target_rois,
    get_target,
    register_target,
    target_names,
    unregister_target,
)


class _Flat(Target):
    name = "flat"
    default_roi = "early"
    conditions_generation = False

    def shape(self, model, config):
        return (3,)

    def batches(self, model, stimuli, ids, config, state=None):
        yield ids, np.zeros((len(ids), 3), dtype=np.float32)


def test_entry_points_register_z_and_c_in_order():
    assert target_names()[:2] == BUILTIN_TARGETS == ("z", "c")
    assert isinstance(get_target("z"), LatentTarget) and isinstance(get_target("c"), CaptionTarget)
    assert get_target("c").fit_in_parts and not get_target("z").fit_in_parts


def test_default_targets_are_the_papers():
    assert default_target_rois() == {"z": "early", "c": "ventral"} == DecoderConfig().targets


def test_a_registered_target_follows_the_builtins_and_is_accepted_by_the_config():
    register_target(_Flat)
    try:
        assert target_names() == ("z", "c", "flat")
        config = config_from_dict(DecoderConfig, {"targets": {"z": "early", "flat": "early"}})
        assert config.targets == {"z": "early", "flat": "early"}
        with pytest.raises(InvalidArgumentError, match="already registered"):
            register_target(_Flat)
    finally:
        unregister_target("flat")
    assert "flat" not in target_names()


def test_unknown_target_is_one_line_naming_the_registered_ones():
    with pytest.raises(InvalidArgumentError, match="unknown decoder target 'depth'; expected some of"):
        get_target("depth")
    with pytest.raises(InvalidArgumentError) as error:
        config_from_dict(DecoderConfig, {"targets": {"depth": "early"}}, where="run.toml")
    text = str(error.value)
    assert "\n" not in text and '[decoder] targets = {"depth": "early"}' in text and '"z", "c"' in text


@pytest.mark.parametrize("value", [{}, {"z": 3}, "z=early", ["z"]])
def test_bad_targets_tables_are_refused(value):
    with pytest.raises(InvalidArgumentError, match=r"\[decoder\] targets"):
        config_from_dict(DecoderConfig, {"targets": value}, where="run.toml")


def test_command_line_pairs_become_the_table():
    assert config_from_dict(DecoderConfig, {"targets": ["z=v1", "c=ventral"]}).targets == {"z": "v1", "c": "ventral"}


@pytest.mark.parametrize("key", ["z_roi", "c_roi"])
def test_old_roi_keys_name_the_new_one(tmp_path, key):
    with pytest.raises(DataFormatError, match=r"unknown key '%s'.*\[decoder\] targets" % key):
        run_config_from_dict({"nsd_root": "nsd", "out_dir": "out", "decoder": {key: "early"}}, base_dir=tmp_path)


def test_decoder_files_written_with_z_roi_and_c_roi_still_read(tmp_path):
    path = tmp_path / "subj01_z_early.h5"
    decoder = DecoderFile(test_ids=np.arange(2), test_pred=np.zeros((2, 3), np.float32),
                          test_corr=np.zeros(3, np.float32), alphas=np.ones(3), cv_score=np.zeros(3),
                          config=DecoderConfig(), coef=np.zeros((4, 3), np.float32),
                          intercept=np.zeros(3, np.float32), x_mean=np.zeros(4, np.float32),
                          x_std=np.ones(4, np.float32), attrs={"target": "z", "roi": "early"})
    decoder.write(path)
    with h5py.File(path, "r+") as handle:
        values = json.loads(handle.attrs["decoder_config"])
        values.pop("targets")
        handle.attrs["decoder_config"] = json.dumps({"z_roi": "v1", "c_roi": "ventral", **values})
    assert DecoderFile.read(path).config.targets == {"z": "v1", "c": "ventral"}


def test_a_method_cannot_draw_from_a_target_that_does_not_condition_generation():
    from brain2image.ldm.reconstruct import generate_reconstructions
    from brain2image.methods import ReconstructionMethod

    class _FromFlat(ReconstructionMethod):
        name = "from_flat"
        needs = ("flat",)

        def generate(self, batch, generators):
            raise AssertionError("never drawn")

    register_target(_Flat)
    try:
        with pytest.raises(InvalidArgumentError, match=r"'from_flat' needs targets \['flat'\], which do not"):
            generate_reconstructions(None, [1, 2], methods=[_FromFlat()], features={"flat": np.zeros((2, 3))})
    finally:
        unregister_target("flat")


def test_a_run_refuses_a_method_whose_target_it_does_not_decode(tmp_path):
    from brain2image.config import ReconstructionConfig, RunConfig
    from brain2image.stages import StageContext, get_stage

    config = RunConfig(nsd_root=str(tmp_path), out_dir=str(tmp_path / "run"),
                       decoder=DecoderConfig(targets={"c": "ventral"}),
                       reconstruction=ReconstructionConfig(methods=("z_only",)))
    with pytest.raises(InvalidArgumentError, match=r"draw from target 'z', which \[decoder\] targets .* does not"):
        get_stage("reconstruct").inputs(StageContext(config, progress=False))
