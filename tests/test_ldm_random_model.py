"""random:sd-v1-4: Stable Diffusion v1.4's architecture from shipped configs, seeded random weights."""

import dataclasses
import json
import logging

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from brain2image.config import ReconstructionConfig
from brain2image.errors import InvalidArgumentError
from brain2image.evaluation.evaluate import evaluate_recon_dir
from brain2image.formats.feature_store import model_slug
from brain2image.formats.run_layout import RunLayout
from brain2image.ldm.loading import load_ldm
from brain2image.ldm.random_model import (
    RANDOM_WEIGHTS_LABEL,
    RandomModelSpec,
    build_random_module,
    known_architectures,
    load_clip_tokenizer,
    parse_random_model,
    random_weights_marking,
)
from brain2image.ldm.reconstruct import generate_reconstructions
from brain2image.report import render_report
from brain2image.sources.nsd import NSDStimuli
from brain2image.sources.nsd.layout import SIMULATION_MARKER, is_simulated_tree

SD14 = "random:sd-v1-4"


@pytest.fixture(scope="module")
def sd14():
    """The full-size model, built once (about 1.07 B float32 parameters, 4.3 GB)."""
    return load_ldm(SD14)


# ------------------------------------------------------------------ names, tokenizer (fast)
def test_names_parse_to_architecture_and_seed():
    assert "sd-v1-4" in known_architectures()
    assert parse_random_model(SD14) == RandomModelSpec("sd-v1-4", 0)
    assert parse_random_model("random:sd-v1-4@7") == RandomModelSpec("sd-v1-4", 7)
    assert parse_random_model("random:sd-v1-4@7").name == "random:sd-v1-4@7"
    assert parse_random_model("random:sd-v1-4@0").name == SD14
    with pytest.raises(InvalidArgumentError, match=r"unknown random architecture 'sd-v9'.*random:sd-v1-4") as error:
        load_ldm("random:sd-v9")
    assert "\n" not in str(error.value)
    with pytest.raises(InvalidArgumentError, match="non-negative integer"):
        parse_random_model("random:sd-v1-4@-1")


def test_model_slug_has_no_colon():
    assert model_slug(SD14) == "random--sd-v1-4"
    assert model_slug("random:sd-v1-4@3") == "random--sd-v1-4@3"
    assert RunLayout.of("run", 1, SD14).feature_store("z").name == "nsd_random--sd-v1-4_z.h5"
    assert model_slug("CompVis/stable-diffusion-v1-4") == "CompVis--stable-diffusion-v1-4"


def test_tokenizer_is_the_clip_bpe_tokenizer():
    tokenizer = load_clip_tokenizer(parse_random_model(SD14).folder, 77)
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer(["a photo of a cat", ""], padding="max_length", max_length=77, truncation=True)["input_ids"]
    assert [len(ids) for ids in padded] == [77, 77] and padded[1][:3] == [49406, 49407, 49407]


# ------------------------------------------------------------------ marking (fast)
def test_marking_and_warning_on_real_data(tmp_path):
    real, sim_study = tmp_path / "real", tmp_path / "study"
    simulated, marked = sim_study / "nsd", tmp_path / "marked"
    for folder in (real, simulated, marked):
        folder.mkdir(parents=True)
    (sim_study / "simulation_truth.h5").touch()
    (marked / SIMULATION_MARKER).write_text("{}")
    assert [is_simulated_tree(p) for p in (real, simulated, marked)] == [False, True, True]
    assert random_weights_marking("bundled", NSDStimuli(real)) == {}
    assert random_weights_marking(SD14, NSDStimuli(simulated)) == random_weights_marking(SD14, NSDStimuli(marked)) == {
        "weights": RANDOM_WEIGHTS_LABEL}
    assert random_weights_marking(SD14, None) == {"weights": RANDOM_WEIGHTS_LABEL}  # no source known: no warning
    marking = random_weights_marking(SD14, NSDStimuli(real))
    assert marking["weights"] == RANDOM_WEIGHTS_LABEL and "real NSD data" in marking["warnings"][0]
    page = render_report(title="t", seen={}, recon_index=pd.DataFrame(columns=["test_id", "method", "sample",
                                                                              "seed", "path"]),
                         recon_root=tmp_path, metrics={}, decoding={}, config={"model": SD14, "nsd_root": str(real)},
                         timings={})
    assert f"<b>{RANDOM_WEIGHTS_LABEL}</b>" in page and "real NSD data" in page
    page = render_report(title="t", seen={}, recon_index=pd.DataFrame(columns=["test_id", "method", "sample",
                                                                              "seed", "path"]),
                         recon_root=tmp_path, metrics={}, decoding={}, config={"model": "bundled"}, timings={})
    assert RANDOM_WEIGHTS_LABEL not in page


def test_evaluation_json_is_marked(tmp_path, caplog):
    nsd_root, recon = tmp_path / "nsd", tmp_path / "recon"
    stim = nsd_root / "nsddata_stimuli" / "stimuli" / "nsd"
    stim.mkdir(parents=True)
    (recon / "z_only").mkdir(parents=True)
    brick = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = brick
    for test_id in (1, 3):
        Image.fromarray(brick[test_id]).save(recon / "z_only" / f"{test_id}_0.png")
    pd.DataFrame([(i, "z_only", 0, 0, f"z_only/{i}_0.png") for i in (1, 3)],
                 columns=["test_id", "method", "sample", "seed", "path"]).to_csv(recon / "index.csv", index=False)
    (recon / "config.json").write_text(json.dumps({"model": SD14, "config": {}}))
    with caplog.at_level(logging.WARNING, logger="brain2image"):
        result = evaluate_recon_dir(recon, NSDStimuli(nsd_root), tmp_path / "evaluation.json")
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written == result and written["weights"] == RANDOM_WEIGHTS_LABEL and written["model"] == SD14
    assert "real NSD data" in written["warnings"][0]
    assert any("real NSD data" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ the full-size model (slow)
@pytest.mark.slow
def test_sd14_architecture_and_parameter_counts(sd14):
    counts = {key: sum(p.numel() for p in getattr(sd14, key).parameters()) for key in ("vae", "unet", "text_encoder")}
    assert counts == {"vae": 83_653_863, "unet": 859_520_964, "text_encoder": 123_060_480}
    assert sd14.name == SD14 and sd14.random_weights and sd14.dtype == torch.float32
    assert (sd14.vae_scale_factor, sd14.latent_channels, sd14.scaling_factor) == (8, 4, 0.18215)
    assert (sd14.native_resolution, sd14.z_resolution, sd14.z_shape(), sd14.c_shape) == (512, 320, (4, 40, 40),
                                                                                           (77, 768))
    assert sd14.unet.config.cross_attention_dim == 768 and list(sd14.unet.config.block_out_channels) == [
        320, 640, 1280, 1280]
    scheduler = sd14.scheduler.config
    assert (type(sd14.scheduler).__name__, scheduler.beta_schedule, scheduler.beta_start, scheduler.beta_end,
            scheduler.num_train_timesteps, scheduler.steps_offset, scheduler.set_alpha_to_one,
            scheduler.clip_sample) == ("DDIMScheduler", "scaled_linear", 0.00085, 0.012, 1000, 1, False, False)
    assert not any(p.requires_grad or p.is_meta for p in sd14.unet.parameters())


@pytest.mark.slow
def test_sd14_features_have_the_real_shapes(sd14):
    images = np.random.default_rng(0).integers(0, 256, (1, 425, 425, 3), dtype=np.uint8)
    z = sd14.encode_images(images, resolution=320)
    c = sd14.encode_text(["a photo of a cat"])
    assert z.shape == (1, 4, 40, 40) and c.shape == (1, 77, 768)
    assert torch.isfinite(z).all() and torch.isfinite(c).all() and float(c.std()) > 0


@pytest.mark.slow
def test_sd14_reconstructions_are_512_px(sd14):
    c = torch.randn((1, 77, 768), generator=torch.Generator().manual_seed(0)).numpy()
    config = ReconstructionConfig(num_inference_steps=1, guidance_scale=1.0, n_samples=1, batch_size=1)
    images = generate_reconstructions(sd14, [7], c=c, methods=["c_only"], config=config, progress=False)
    assert images["c_only"].shape == (1, 1, 512, 512, 3) and images["c_only"].dtype == np.uint8


@pytest.mark.slow
def test_weights_are_seeded_without_touching_the_global_rng(sd14):
    state = torch.random.get_rng_state()
    again = build_random_module(parse_random_model(SD14), "vae", torch.device("cpu"), torch.float32)
    other = build_random_module(parse_random_model("random:sd-v1-4@1"), "vae", torch.device("cpu"), torch.float32)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert dataclasses.replace(sd14, vae=again).fingerprint() == sd14.fingerprint()
    assert dataclasses.replace(sd14, vae=other).fingerprint() != sd14.fingerprint()
    weight = "encoder.conv_in.weight"
    assert torch.equal(again.state_dict()[weight], sd14.vae.state_dict()[weight])
    assert not torch.equal(other.state_dict()[weight], sd14.vae.state_dict()[weight])
