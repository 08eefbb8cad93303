"""The bundled scene evaluator: loading, features, predictions, content match, recipe."""

import json

import numpy as np
import pytest
import torch
from ldm_dummy import save_tiny_ldm, tiny_ldm

from brain2image.errors import MissingWeightsError
from brain2image.embedded.scene_evaluator import (
    SceneEvaluator,
    SceneEvaluatorConfig,
    bundled_evaluator_dir,
    scene_targets,
    train_scene_evaluator,
)
from brain2image.embedded.simulate.scenes import Scene, SceneObject, render_scenes, sample_scenes


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
    assert 0 <= info["validation"]["background_accuracy"] <= 1
    loaded = SceneEvaluator.load(tmp_path)
    images = render_scenes(sample_scenes(3, 1), 64)
    assert loaded.features(images).shape == (3, 8)


def test_recipe_with_vae_roundtrip_reports_roundtrip_and_false_matches(tmp_path):
    folder = save_tiny_ldm(tiny_ldm(), tmp_path / "tiny")
    config = SceneEvaluatorConfig(n_train_scenes=32, n_val_scenes=12, epochs=1, channels=(4, 8), feature_dim=8,
                                  batch_size=32, roundtrip_model=str(folder), roundtrip_prob=1.0)
    info = train_scene_evaluator(tmp_path / "ev", seed=1, minutes=1.0, config=config)
    assert info["config"]["roundtrip_model"] == str(folder)
    for figures in (info["validation"], info["validation"]["roundtrip"]):
        assert figures["n_scenes"] == 12
        assert 0 <= figures["content_match_rate"] <= 1 and 0 <= figures["false_match_rate_shuffled"] <= 1


def test_bundled_evaluator_is_specific(evaluator):
    validation = evaluator.info["validation"]
    assert validation["false_match_rate_shuffled"] < 0.1
    assert validation["content_match_rate"] > 0.9 and validation["roundtrip"]["content_match_rate"] > 0.9


def test_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        SceneEvaluator.load(tmp_path)
