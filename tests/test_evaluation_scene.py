"""The bundled scene evaluator: loading, features, predictions, content match, recipe."""

import json

import numpy as np
import pytest
import torch
from ldm_dummy import save_tiny_ldm, tiny_ldm

from brain2image.embedded.scene_evaluator import (
    SceneEvaluator,
    SceneEvaluatorConfig,
    _vae_roundtrip,
    bundled_evaluator_dir,
    scene_targets,
    train_scene_evaluator,
    validate_scene_evaluator,
)
from brain2image.embedded.simulate.scenes import Scene, SceneObject, render_scenes, sample_scenes
from brain2image.errors import MissingWeightsError


@pytest.fixture(scope="module")
def evaluator():
    torch.set_num_threads(1)
    return SceneEvaluator.load()


@pytest.fixture(scope="module")
def held_out():
    info = json.loads((bundled_evaluator_dir() / "evaluator.json").read_text())
    scenes = sample_scenes(60, info["config"]["val_seed"])
    return scenes, render_scenes(scenes, 64)


def test_bundle_is_small_and_documented():
    folder = bundled_evaluator_dir()
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    info = json.loads((folder / "evaluator.json").read_text())
    assert info["config"]["scene_seed"] != info["config"]["val_seed"]
    assert set(info["validation"]) >= {"category_f1_micro", "colour_f1_micro", "background_accuracy",
                                       "content_match_rate"}


def test_features_have_fixed_dim(evaluator, held_out):
    _, images = held_out
    assert evaluator.features(images[:5]).shape == (5, evaluator.feature_dim)
    big = np.repeat(np.repeat(images[:3], 2, axis=1), 2, axis=2)  # 128 px input is resized
    assert evaluator.features(big).shape == (3, evaluator.feature_dim)
    # The 2× nearest-upsampled image, resized back with antialiasing, reads almost the same.
    a, b = evaluator.features(big), evaluator.features(images[:3])
    assert all(np.corrcoef(a[i], b[i])[0, 1] > 0.95 for i in range(3))


def test_predictions_on_held_out_scenes(evaluator, held_out):
    scenes, images = held_out
    pred = evaluator.predict(images)
    true = scene_targets(scenes)
    assert pred["categories"].shape == (60, 6) and pred["colours"].shape == (60, 8)
    assert np.mean(pred["background"] == true["background"]) > 0.9
    assert np.mean(pred["colours"] == (true["colours"] > 0)) > 0.9
    assert np.mean(pred["categories"] == (true["categories"] > 0)) > 0.85


def test_content_match_separates_right_from_wrong_scenes(evaluator, held_out):
    scenes, images = held_out
    right = evaluator.content_match(images, scenes)
    wrong = evaluator.content_match(images, scenes[1:] + scenes[:1])
    assert right.dtype == bool and right.shape == (60,)
    assert right.mean() > 0.7
    assert wrong.mean() < 0.3
    assert np.all(evaluator.content_match(images, scenes, background=True) <= right)


def test_scene_targets_by_hand():
    scene = Scene("beach", (SceneObject("ball", "red", 0.2, 0.5, 0.3),
                            SceneObject("ball", "blue", 0.8, 0.5, 0.3)))
    t = scene_targets([scene])
    np.testing.assert_array_equal(t["categories"][0], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(t["colours"][0], [1, 0, 1, 0, 0, 0, 0, 0])
    assert t["background"][0] == 1


def test_recipe_trains_saves_and_reloads(tmp_path):
    config = SceneEvaluatorConfig(n_train_scenes=64, n_val_scenes=16, epochs=1, channels=(4, 8),
                                  feature_dim=8, batch_size=32)
    info = train_scene_evaluator(tmp_path, seed=3, minutes=1.0, config=config)
    assert info["training"]["steps"] == 2 and info["config"]["seed"] == 3
    loaded = SceneEvaluator.load(tmp_path)
    images = render_scenes(sample_scenes(3, 1), 64)
    assert loaded.features(images).shape == (3, 8)
    # The recorded figures are those of the saved weights on the held-out (val_seed) scenes.
    assert validate_scene_evaluator(loaded, sample_scenes(16, config.val_seed)) == pytest.approx(info["validation"])


def test_recipe_with_vae_roundtrip_reports_roundtrip_and_false_matches(tmp_path):
    folder = save_tiny_ldm(tiny_ldm(), tmp_path / "tiny")
    config = SceneEvaluatorConfig(n_train_scenes=32, n_val_scenes=12, epochs=1, channels=(4, 8), feature_dim=8,
                                  batch_size=32, roundtrip_model=str(folder), roundtrip_prob=1.0)
    info = train_scene_evaluator(tmp_path / "ev", seed=1, minutes=1.0, config=config)
    assert info["config"]["roundtrip_model"] == str(folder)
    # The round-trip figures are computed on the VAE's reconstructions of the held-out scenes.
    loaded = SceneEvaluator.load(tmp_path / "ev")
    scenes = sample_scenes(12, config.val_seed)
    images = render_scenes(scenes, 64)
    roundtrip = _vae_roundtrip(images, str(folder))
    assert not np.array_equal(roundtrip, images)
    figures = info["validation"]
    assert {k: v for k, v in figures.items() if k != "roundtrip"} == pytest.approx(
        validate_scene_evaluator(loaded, scenes, images))
    assert figures["roundtrip"] == pytest.approx(validate_scene_evaluator(loaded, scenes, roundtrip))


def test_bundled_evaluator_is_specific(evaluator):
    # Fresh scenes from a seed used neither in training (7001), validation (7002) nor by the LDM (1234).
    scenes = sample_scenes(150, seed=2024)
    images = render_scenes(scenes, 64)
    assert evaluator.content_match(images, scenes).mean() > 0.9
    shuffled = [scenes[i] for i in np.random.default_rng(0).permutation(len(scenes))]
    changed = np.array([a is not b for a, b in zip(scenes, shuffled)])
    assert evaluator.content_match(images, shuffled)[changed].mean() < 0.1


class Oracle:
    """Stands in for an evaluator: predicts the true content of known scenes."""

    def __init__(self, scenes):
        self.truth = scene_targets(scenes)

    def predict(self, images):
        return {"categories": self.truth["categories"] > 0, "colours": self.truth["colours"] > 0,
                "background": self.truth["background"]}


def test_validation_figures_of_a_perfect_and_a_blind_reader():
    scenes = sample_scenes(40, seed=11)
    images = np.zeros((40, 8, 8, 3), np.uint8)
    perfect = validate_scene_evaluator(Oracle(scenes), scenes, images)
    for key in ("category_f1_micro", "category_set_accuracy", "colour_f1_micro", "colour_label_accuracy",
                "background_accuracy", "content_match_rate", "content_match_rate_with_background"):
        assert perfect[key] == 1.0, key
    # A perfect reader still "matches" another scene whose content is a subset of its own.
    from brain2image.embedded.scene_evaluator import _shuffled_pairs

    t = scene_targets(scenes)
    other = _shuffled_pairs(40, seed=0)
    subset = [np.all(t["categories"][i] >= t["categories"][j]) and np.all(t["colours"][i] >= t["colours"][j])
              for i, j in enumerate(other)]
    assert perfect["false_match_rate_shuffled"] == pytest.approx(np.mean(subset))
    # A reader that sees nothing names no category or colour: no scene (each has an object) matches.
    blind = Oracle(scenes)
    blind.truth = {k: np.zeros_like(v) for k, v in blind.truth.items()}
    figures = validate_scene_evaluator(blind, scenes, images)
    assert figures["content_match_rate"] == 0.0 and figures["category_f1_micro"] == 0.0
    assert figures["background_accuracy"] == pytest.approx(np.mean(t["background"] == 0))


def test_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        SceneEvaluator.load(tmp_path)
