"""The bundled-model recipe at toy sizes: stages, checkpoints, resume, export, stock pipelines."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from ldm_dummy import one_torch_thread  # noqa: F401

from brain2image.config import ReconstructionConfig
from brain2image.embedded.bundled_training import _unet_config, bundled_model_dir, train_bundled_model
from brain2image.embedded.training_config import BundledTrainingConfig
from brain2image.ldm.loading import load_ldm
from brain2image.ldm.reconstruct import generate_reconstructions

pytestmark = pytest.mark.slow

TOY = BundledTrainingConfig(n_train_scenes=24, vae_channels=(8, 8, 8), vae_batch=4, vae_minutes=0.02,
                            unet_channels=(8, 16, 16), unet_batch=4, unet_minutes=0.02, checkpoint_minutes=0.0,
                            threads=1)


def test_recipe_trains_resumes_and_exports(tmp_path):
    export = train_bundled_model(tmp_path / "work", TOY, export_to=tmp_path / "model")
    work = tmp_path / "work"
    assert export == tmp_path / "model"
    for name in ("vae.ckpt", "cache.pt", "unet.ckpt", "vae/config.json", "unet_ema/config.json"):
        assert (work / name).exists(), name
    cache = torch.load(work / "cache.pt", weights_only=True)
    assert cache["mean"].shape == (24, 4, 16, 16) and cache["text"].shape == (24, 5, 32, 384)
    state = torch.load(work / "unet.ckpt", weights_only=True)["state"]
    assert state["step"] > 0 and state["elapsed"] >= TOY.unet_minutes * 60
    assert json.loads((export / "training_config.json").read_text())["unet_channels"] == [8, 16, 16]

    # A finished recipe is not retrained: rerunning leaves the checkpoint as it was.
    before = (work / "unet.ckpt").stat().st_mtime_ns
    train_bundled_model(work, TOY, export_to=tmp_path / "model")
    assert (work / "unet.ckpt").stat().st_mtime_ns == before
    # A larger U-Net budget resumes from the checkpoint (the VAE and cache are kept).
    # (sized from the time already spent, so a slow first step on a loaded machine still leaves room)
    longer = dataclasses.replace(TOY, unet_minutes=2 * max(TOY.unet_minutes, state["elapsed"] / 60))
    train_bundled_model(work, longer, export_to=tmp_path / "model")
    resumed = torch.load(work / "unet.ckpt", weights_only=True)["state"]
    assert resumed["step"] > state["step"] and resumed["elapsed"] >= longer.unet_minutes * 60

    # The exported folder is a diffusers model driven by the stock pipelines; the U-Net adds
    # the pooled caption embedding to its timestep embedding.
    model = load_ldm(str(export))
    assert model.unet.config.addition_embed_type == "text"
    assert (model.native_resolution, model.text_seq_len, model.text_width) == (64, 32, 384)
    c = model.encode_text(["a red ball in a field"]).numpy()
    config = ReconstructionConfig(num_inference_steps=3, n_samples=1, seed=3)
    first = generate_reconstructions(model, [0], c=c, methods=("c_only",), config=config, progress=False)
    again = generate_reconstructions(model, [0], c=c, methods=("c_only",), config=config, progress=False)
    assert first["c_only"].shape == (1, 1, 64, 64, 3)
    np.testing.assert_array_equal(first["c_only"], again["c_only"])


def test_unet_cross_attention_levels():
    # The default is the shipped U-Net's layout: no cross-attention at the coarsest level.
    finest_two = _unet_config(BundledTrainingConfig(), cross_attention_dim=384)
    assert finest_two["down_block_types"] == ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert finest_two["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    shipped = json.loads((bundled_model_dir() / "unet" / "config.json").read_text())
    assert shipped["down_block_types"] == finest_two["down_block_types"]
    assert shipped["block_out_channels"] == finest_two["block_out_channels"]
    every = _unet_config(dataclasses.replace(TOY, unet_cross_attention_levels=(True, True, True)), 384)
    assert every["down_block_types"] == ["CrossAttnDownBlock2D"] * 3
    assert every["up_block_types"] == ["CrossAttnUpBlock2D"] * 3
    with pytest.raises(ValueError, match="one entry per U-Net level"):
        _unet_config(dataclasses.replace(TOY, unet_cross_attention_levels=(True, True)), 384)
