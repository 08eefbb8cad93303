"""Opt-in checks against published weights in the local caches (``pytest -m real_weights``).

Deselected by ``make test``; run them on a machine that has Stable Diffusion v1.4 in its Hugging
Face cache and the torchvision ImageNet weights in its torch hub cache.
"""

import numpy as np
import pytest

from brain2image.errors import MissingWeightsError

pytestmark = pytest.mark.real_weights

SD14 = "CompVis/stable-diffusion-v1-4"


@pytest.fixture(scope="module")
def sd14():
    from brain2image.ldm.loading import load_ldm

    try:
        return load_ldm(SD14)
    except MissingWeightsError as error:
        pytest.skip(str(error))


def test_sd14_feature_sizes_match_the_paper(sd14):
    assert sd14.native_resolution == 512
    assert sd14.z_resolution == 320
    assert sd14.z_shape() == (4, 40, 40)
    assert sd14.c_shape == (77, 768)
    assert sd14.scaling_factor == pytest.approx(0.18215)


def test_sd14_vae_round_trip_and_text_embedding(sd14):
    from brain2image.embedded.simulate.scenes import render_scenes, sample_scenes

    images = render_scenes(sample_scenes(2, seed=0), 320)
    z = sd14.encode_images(images, resolution=320)
    assert tuple(z.shape) == (2, 4, 40, 40)
    decoded = sd14.decode_latents(z).astype(float)
    err = np.abs(decoded - images.astype(float)).mean()
    assert err < 20  # SD's VAE reconstructs simple scenes closely (mean abs error in 0..255)
    c = sd14.encode_text(["a red ball in a field", "a blue car at night"])
    assert tuple(c.shape) == (2, 77, 768)


def test_pretrained_alexnet_nodes():
    from brain2image.evaluation.feature_networks import load_feature_network

    try:
        net = load_feature_network("alexnet")
    except MissingWeightsError as error:
        pytest.skip(str(error))
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    features = net.extract(images)
    assert features["features.4"].shape[0] == 2 and features["features.11"].shape[0] == 2
