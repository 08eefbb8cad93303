"""The feature-space registry: core and plug-in spaces, new spaces, companions, errors."""

from dataclasses import dataclass

import numpy as np
import pytest

from brain2image import plugins
from brain2image.errors import InvalidArgumentError
from brain2image.evaluation import feature_spaces as fs
from brain2image.evaluation.evaluate import evaluate_reconstructions
from brain2image.evaluation.identification import takagi_identification, two_way_identification
from brain2image.evaluation.metrics import correlation_distance


@dataclass
class Quadrants:
    """A tiny deterministic space: the mean colour of each image quadrant (12 features)."""

    calls: int = 0

    def features(self, images):
        self.calls += 1
        h, w = images.shape[1] // 2, images.shape[2] // 2
        quads = [images[:, :h, :w], images[:, :h, w:], images[:, h:, :w], images[:, h:, w:]]
        return np.concatenate([q.mean(axis=(1, 2)) for q in quads], axis=1)


@pytest.fixture
def quadrants():
    """Register ``quadrants`` (identification, reported ``quad``) and ``quad_dist`` (distance)."""
    seen = []

    def load(options):
        seen.append(options)
        return Quadrants()

    fs.register_feature_space(fs.FeatureSpace("quadrants", "identification", load, reported="quad"))
    fs.register_feature_space(fs.FeatureSpace("quad_dist", "distance", load))
    yield seen
    fs.unregister_feature_space("quadrants")
    fs.unregister_feature_space("quad_dist")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    noise = rng.normal(0, 90, size=(6, 3, 16, 16, 3))
    recon = np.clip(real[:, None] + noise, 0, 255).astype(np.uint8)
    return real, recon


def test_a_registered_space_is_evaluated(quadrants, images):
    real, recon = images
    m = evaluate_reconstructions(real, recon, ("quadrants", "quad_dist"), size=12, device="cpu")
    q = Quadrants().features
    assert m["id_quad"] == pytest.approx(two_way_identification(q(real), q(recon[:, 0])), abs=1e-12)
    samples = np.stack([q(recon[:, j]) for j in range(3)], axis=1)
    assert m["takagi_quad"] == pytest.approx(takagi_identification(q(real), samples), abs=1e-12)
    assert m["dist_quad_dist"] == pytest.approx(correlation_distance(q(real), q(recon[:, 0])), abs=1e-12)
    assert list(m)[4:] == ["id_quad", "takagi_quad", "dist_quad_dist"]
    # Each loader saw the evaluation's options: device and the capped comparison size.
    assert [(o.device, o.image_size) for o in quadrants] == [("cpu", 12)] * 2


def test_perfect_and_shuffled_reconstructions_in_a_new_space(quadrants, images):
    real, _ = images
    perfect = evaluate_reconstructions(real, np.repeat(real[:, None], 2, axis=1), ("quadrants", "quad_dist"))
    assert perfect["id_quad"] == 1.0 and perfect["takagi_quad"] == 1.0
    assert perfect["dist_quad_dist"] == pytest.approx(0.0, abs=1e-12)
    # Every reconstruction is another image's: each is closer to its own (wrong) image.
    shuffled = evaluate_reconstructions(real, np.repeat(np.roll(real, 1, axis=0)[:, None], 2, axis=1),
                                        ("quadrants",))
    assert shuffled["id_quad"] < 0.5 and shuffled["takagi_quad"] < 0.5


def test_preloaded_extractors_are_used(quadrants, images):
    real, recon = images
    extractor = Quadrants()
    evaluate_reconstructions(real, recon, ("quadrants",), extractors={"quadrants": extractor})
    assert extractor.calls == 1 + recon.shape[1] and quadrants == []


def test_unknown_space_names_the_known_ones(images):
    real, recon = images
    with pytest.raises(InvalidArgumentError, match=r"unknown feature space 'nope'; known: .*alexnet2.*pixel"):
        evaluate_reconstructions(real, recon, ("pixel", "nope"))
    with pytest.raises(InvalidArgumentError, match=r"unknown feature spaces 'a', 'b'"):
        fs.resolve_feature_spaces(["a", "pixel", "b"])
    with pytest.raises(InvalidArgumentError, match="known: "):
        fs.get_feature_space("nope")


def test_registry_rejects_duplicates_and_bad_kinds():
    pixel = fs.get_feature_space("pixel")
    with pytest.raises(InvalidArgumentError, match="registered already"):
        fs.register_feature_space(pixel)
    assert fs.register_feature_space(pixel, replace=True) is pixel
    with pytest.raises(InvalidArgumentError, match="kind must be one of"):
        fs.FeatureSpace("odd", "similarity", lambda options: None)
    with pytest.raises(InvalidArgumentError, match="identifier"):
        fs.FeatureSpace("two words", "distance", lambda options: None)


def test_core_spaces_and_the_scene_plug_in():
    names = fs.feature_space_names()
    assert {"pixel", "alexnet2", "alexnet5", "inception", "clip", "effnet", "swav", "scene"} <= set(names)
    scene = fs.get_feature_space("scene")
    assert (scene.name, scene.reported_name, scene.kind) == ("scene", "semantic", "identification")
    assert scene.metric_keys == ("id_semantic", "takagi_semantic")
    assert fs.get_feature_space("effnet").metric_keys == ("dist_effnet",)
    assert fs.get_feature_space("alexnet_features5").metric_keys == ("takagi_alexnet_features5",)


def test_companions_follow_the_last_space_naming_them():
    order = [s.name for s in fs.resolve_feature_spaces(["alexnet2", "alexnet5", "effnet"])]
    assert order == ["alexnet2", "alexnet5", *fs.TAKAGI_COMPANIONS, "effnet"]
    order = [s.name for s in fs.resolve_feature_spaces(["alexnet_features12", "alexnet2"])]
    assert order == ["alexnet_features12", "alexnet2", "alexnet_features5", "alexnet_classifier5"]


def test_network_spaces_share_one_loaded_network(monkeypatch):
    built = []
    monkeypatch.setattr(fs, "load_feature_network", lambda name, **kw: built.append((name, kw)) or name)
    spaces = fs.resolve_feature_spaces(["alexnet2", "alexnet5"], device="meta")
    extractors = fs.load_extractors(spaces, fs.LoadOptions(device="meta", weights_dir=None))
    assert set(extractors) == {"alexnet2", "alexnet5", *fs.TAKAGI_COMPANIONS}
    assert built == [("alexnet", {"weights_dir": None, "device": "meta"})]


def test_a_plug_in_must_return_a_space_of_its_name(monkeypatch):
    monkeypatch.setattr(plugins, "plugin_names", lambda group: ["other"])
    monkeypatch.setattr(plugins, "load_plugin", lambda group, name: lambda device: fs.get_feature_space("pixel"))
    with pytest.raises(InvalidArgumentError, match="expected a FeatureSpace named 'other', got 'pixel'"):
        fs.get_feature_space("other")


class CountingAlexNet:
    """Stands in for the AlexNet FeatureNetwork: counts forward passes, every node a pixel function."""

    spec = type("Spec", (), {"name": "alexnet"})()
    nodes = ("features.4", "features.11", "features.5", "features.12", "classifier.5")

    def __init__(self):
        self.passes = 0

    def extract(self, images, batch_size=32):
        self.passes += 1
        flat = images.reshape(len(images), -1).astype(np.float32)
        return {node: flat[:, i::5] for i, node in enumerate(self.nodes)}


def test_spaces_of_one_network_share_its_passes(images):
    real, recon = images
    net = CountingAlexNet()
    extractors = fs.network_extractors(net)
    m = evaluate_reconstructions(real, recon, ("alexnet2", "alexnet5"), extractors=extractors)
    assert net.passes == 1 + recon.shape[1]  # the real images, then each sample once
    assert list(m)[4:] == ["id_alexnet2", "takagi_alexnet2", "id_alexnet5", "takagi_alexnet5",
                           "takagi_alexnet_features5", "takagi_alexnet_features12", "takagi_alexnet_classifier5"]
    node = net.extract(recon[:, 0])["features.11"]
    assert m["id_alexnet5"] == pytest.approx(two_way_identification(net.extract(real)["features.11"], node))
    # Each node is computed afresh when asked twice of the same array.
    extractor = extractors["alexnet2"]
    before = net.passes
    np.testing.assert_array_equal(extractor.features(real), extractor.features(real))
    assert net.passes == before + 2
