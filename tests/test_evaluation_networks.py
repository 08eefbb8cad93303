"""Feature networks with random weights: nodes, shapes, errors (no downloads)."""

import numpy as np
import pytest
import torch

from brain2image.errors import MissingWeightsError
from brain2image.evaluation.feature_networks import NETWORKS, load_feature_network


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(2, 40, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, expected", [
    ("alexnet", {"features.4": 192 * 31 * 31, "features.11": 256 * 15 * 15, "features.5": 192 * 15 * 15,
                 "features.12": 256 * 7 * 7, "classifier.5": 4096}),
    ("inception", {"avgpool": 2048}),
    ("effnet", {"avgpool": 1280}),
    ("swav", {"avgpool": 2048}),
])
def test_random_networks_give_named_nodes(name, expected, images):
    net = load_feature_network(name, weights=None)
    features = net.extract(images)
    assert {k: v.shape for k, v in features.items()} == {k: (2, d) for k, d in expected.items()}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in features.values())


def test_random_clip_image_embeds(images):
    from transformers import CLIPVisionConfig

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, patch_size=8, image_size=32, projection_dim=16)
    net = load_feature_network("clip", weights=None, clip_config=config)
    assert net.extract(images)["image_embeds"].shape == (2, 16)


def test_state_dict_path_is_loaded(tmp_path, images):
    torch.manual_seed(0)
    model = __import__("torchvision").models.alexnet(weights=None).eval()
    torch.save(model.state_dict(), tmp_path / NETWORKS["alexnet"].checkpoint)
    via_path = load_feature_network("alexnet", weights=tmp_path / NETWORKS["alexnet"].checkpoint)
    via_dir = load_feature_network("alexnet", weights_dir=tmp_path)
    x = via_path.preprocess(images)
    with torch.no_grad():
        expected = model.features[:5](x).flatten(1).numpy()
    np.testing.assert_allclose(via_path.extract(images)["features.4"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(via_dir.extract(images)["features.4"], expected, rtol=1e-5, atol=1e-6)


def test_swav_checkpoint_keys_are_mapped(tmp_path, images):
    torch.manual_seed(0)
    model = __import__("torchvision").models.resnet50(weights=None)
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    state["module.projection_head.0.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "swav.pth")
    net = load_feature_network("swav", weights=tmp_path / "swav.pth")
    expected = torch.flatten(torch.nn.Sequential(*list(model.eval().children())[:-1])(
        net.preprocess(images)), 1).detach().numpy()
    np.testing.assert_allclose(net.extract(images)["avgpool"], expected, rtol=1e-4, atol=1e-5)


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        load_feature_network("alexnet", weights_dir=tmp_path)
    with pytest.raises(MissingWeightsError, match="swav_800ep_pretrain.pth.tar"):
        load_feature_network("swav")
    with pytest.raises(MissingWeightsError, match="clip-vit-large-patch14"):
        load_feature_network("clip", weights_dir=tmp_path)
