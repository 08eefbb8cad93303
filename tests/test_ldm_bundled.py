"""End to end with the real bundled model (slow): its shapes, z and c features, and reconstructions."""

import numpy as np
import pytest
from ldm_dummy import one_torch_thread, write_fake_stimuli  # noqa: F401

from brain2image.config import FeatureConfig, ReconstructionConfig
from brain2image.formats.feature_store import FeatureStore
from brain2image.ldm.features import extract_features
from brain2image.ldm.images import resize_images
from brain2image.ldm.loading import load_ldm
from brain2image.ldm.reconstruct import generate_reconstructions
from brain2image.sources.nsd import NSDStimuli

pytestmark = pytest.mark.slow


def _corr(a, b):
    a = a.reshape(len(a), -1).astype(float)
    b = b.reshape(len(b), -1).astype(float)
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    return a @ b.T / a.shape[1]


def test_bundled_model_end_to_end(tmp_path):
    from brain2image.embedded.simulate.scenes import render_scenes, sample_scenes, scene_captions

    scenes = sample_scenes(3, seed=77)
    images = render_scenes(scenes, 96)  # the brick's size differs from the model's 64 px
    rng = np.random.default_rng(0)
    write_fake_stimuli(tmp_path / "nsd", images=images, captions=[scene_captions(s, rng) for s in scenes])
    model = load_ldm("bundled")
    assert (model.native_resolution, model.z_resolution, model.text_seq_len) == (64, 40, 32)
    ids = np.arange(3)
    stores = {f: FeatureStore.open(extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, f, tmp_path / f"s_{f}.h5",
                                                    FeatureConfig(), progress=False)) for f in ("z", "c")}
    z, c = stores["z"].read(ids), stores["c"].read(ids)
    assert z.shape == (3, 4, 10, 10) and c.shape == (3, 32, model.text_width)
    out = generate_reconstructions(model, ids, z, c, methods=("z_only", "oracle"), z_true=z, c_true=c,
                                   config=ReconstructionConfig(n_samples=1), progress=False)
    # z only reproduces the 40 px image; oracle z + c is closest to its own scene.
    vae_corr = _corr(out["z_only"][:, 0], resize_images(images, 40))
    assert np.all(np.diag(vae_corr) > 0.8)
    oracle_corr = _corr(out["oracle"][:, 0], resize_images(images, 64))
    assert np.diag(oracle_corr).mean() > (oracle_corr.sum() - np.trace(oracle_corr)) / 6
