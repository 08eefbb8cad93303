"""z and c extraction from a tiny fake NSD stimulus tree, and the features command."""

import json

import numpy as np
import pytest
import torch
from ldm_dummy import one_torch_thread, save_tiny_ldm, tiny_ldm, write_fake_stimuli  # noqa: F401
from PIL import Image
from prepared_writer import write_prepared

from brain2image.cli import main
from brain2image.config import FeatureConfig
from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.formats import feature_store as fs_module
from brain2image.formats.feature_store import FeatureStore, feature_store_path, merge_stores
from brain2image.formats.partitions import shard_path
from brain2image.ldm.features import extract_features
from brain2image.sources.nsd import NSDStimuli
from brain2image.sources.nsd.stimuli import load_captions


@pytest.fixture(scope="module")
def model():
    return tiny_ldm()


def _expected_z(model, images):
    resized = np.stack([np.asarray(Image.fromarray(im).resize((10, 10), Image.Resampling.LANCZOS)) for im in images])
    with torch.no_grad():
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 127.5 - 1
        return (model.vae.encode(x).latent_dist.mean * model.scaling_factor).numpy()


def test_z_features_match_independent_computation(tmp_path, model):
    fake = write_fake_stimuli(tmp_path / "nsd")
    ids = np.array([4, 0, 5, 2])
    out = feature_store_path(tmp_path / "features", "subj01", model.name, "z")
    path = extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "z", out, FeatureConfig(batch_size=3),
                            progress=False)
    assert path == tmp_path / "features" / "subj01_tiny-bert_z.h5"
    store = FeatureStore.open(path)
    np.testing.assert_array_equal(store.ids, [0, 2, 4, 5])
    np.testing.assert_allclose(store.read([5, 0]), _expected_z(model, fake["images"][[5, 0]]), atol=1e-5)
    assert store.attrs["resolution"] == 10 and store.attrs["model"] == "tiny-bert"
    assert store.attrs["scaling_factor"] == pytest.approx(0.5)


def test_sampled_z_does_not_depend_on_batching(tmp_path, model):
    write_fake_stimuli(tmp_path / "nsd")
    ids = np.arange(5)
    paths = [extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "z", tmp_path / f"b{b}" / "s_z.h5",
                              FeatureConfig(batch_size=b, latent_sample="sample", seed=3), progress=False)
             for b in (1, 4)]
    a, b = (FeatureStore.open(p).read() for p in paths)
    np.testing.assert_allclose(a, b, atol=1e-5)
    mean = extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "z", tmp_path / "mean" / "s_z.h5", progress=False)
    assert not np.allclose(a, FeatureStore.open(mean).read())


def test_c_is_caption_average(tmp_path, model):
    fake = write_fake_stimuli(tmp_path / "nsd")
    ids = np.array([1, 2, 4])
    captions = load_captions(tmp_path / "nsd", ids)
    assert captions == [fake["captions"][i] for i in ids]  # annotation-id order
    path = extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "c", tmp_path / "f" / "s_c.h5",
                            FeatureConfig(batch_size=2), progress=False)
    got = FeatureStore.open(path).read(ids)
    expected = np.stack([model.encode_text(fake["captions"][i]).mean(0).numpy() for i in ids])
    assert got.shape == (3, 8, 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_caption_reduction_first_takes_the_first_caption(tmp_path, model):
    fake = write_fake_stimuli(tmp_path / "nsd")
    ids = np.array([1, 2, 4])
    path = extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "c", tmp_path / "f" / "s_c.h5",
                            FeatureConfig(batch_size=2, caption_reduction="first"), progress=False)
    expected = np.stack([model.encode_text(fake["captions"][i][:1])[0].numpy() for i in ids])
    np.testing.assert_allclose(FeatureStore.open(path).read(ids), expected, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="caption_reduction 'median'.*mean"):
        extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "c", tmp_path / "g" / "s_c.h5",
                         FeatureConfig(caption_reduction="median"), progress=False)


def test_missing_captions_name_file_and_id(tmp_path, model):
    write_fake_stimuli(tmp_path / "nsd", skip_captions_of=3)
    with pytest.raises(DataFormatError, match=r"captions_val2017\.json.*cocoId 1003 \(73k id 3\)"):
        load_captions(tmp_path / "nsd", np.array([1, 3]))
    with pytest.raises(DataFormatError, match="73k ids \\[99\\]"):
        load_captions(tmp_path / "nsd", np.array([99]))


def test_bad_captions_or_stimuli_leave_no_partial_store(tmp_path, model):
    write_fake_stimuli(tmp_path / "nsd", skip_captions_of=3)
    out = tmp_path / "features" / "c.h5"
    with pytest.raises(DataFormatError, match=r"cocoId 1003"):
        extract_features(NSDStimuli(tmp_path / "nsd"), np.array([1, 3]), model, "c", out, progress=False)
    with pytest.raises(DataFormatError, match=r"imgBrick|ids"):
        extract_features(NSDStimuli(tmp_path / "nsd"), np.array([1, 10**6]), model, "z", tmp_path / "features" / "z.h5",
                         progress=False)
    assert not (tmp_path / "features").exists() or not any((tmp_path / "features").iterdir())


def test_interrupted_extraction_resumes(tmp_path, model, monkeypatch):
    write_fake_stimuli(tmp_path / "nsd")
    ids = np.arange(6)
    config = FeatureConfig(batch_size=2)
    reference = FeatureStore.open(extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "z",
                                                   tmp_path / "ref" / "s_z.h5", config, progress=False)).read()
    original = fs_module.FeatureStore.write
    calls = []

    def dying_write(self, batch_ids, values):
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed after the first batch
        calls.append(batch_ids)
        original(self, batch_ids, values)

    out = tmp_path / "run" / "s_z.h5"
    monkeypatch.setattr(fs_module.FeatureStore, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "z", out, config, progress=False)
    monkeypatch.setattr(fs_module.FeatureStore, "write", original)
    assert not out.exists() and fs_module.partial_path(out).exists()

    encoded = []
    encode = model.encode_images
    def counting_encode(images, **kwargs):
        encoded.append(len(images))
        return encode(images, **kwargs)

    monkeypatch.setattr(model, "encode_images", counting_encode)
    extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "z", out, config, progress=False)
    assert sum(encoded) == 4  # only the images the first run had not written
    np.testing.assert_allclose(FeatureStore.open(out).read(), reference, atol=1e-6)


def test_shards_then_merge_equal_one_pass(tmp_path, model):
    write_fake_stimuli(tmp_path / "nsd")
    ids = np.arange(6)
    out = tmp_path / "f" / "s_c.h5"
    shards = [extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "c", out, progress=False, shard=(i, 2))
              for i in (1, 2)]
    assert shards == [shard_path(out, (1, 2)), shard_path(out, (2, 2))]
    merged = FeatureStore.open(merge_stores(shards, out)).read()
    single = extract_features(NSDStimuli(tmp_path / "nsd"), ids, model, "c", tmp_path / "g" / "s_c.h5", progress=False)
    np.testing.assert_allclose(merged, FeatureStore.open(single).read(), atol=1e-6)


def test_features_command(tmp_path):
    write_fake_stimuli(tmp_path / "nsd")
    folder = save_tiny_ldm(tiny_ldm(), tmp_path / "tiny")
    prepared = tmp_path / "prepared_subj01.h5"
    write_prepared(prepared, [3, 5, 3, 4], [0, 1], {"early": {"train": np.zeros((4, 2)), "test": np.zeros((2, 2))}})
    assert main(["features", "--nsd-root", str(tmp_path / "nsd"), "--prepared", str(prepared),
                 "--model", str(folder), "--out", str(tmp_path / "features"), "--batch-size", "2",
                 "--no-progress"]) == 0
    for feature, shape in (("z", (4, 5, 5)), ("c", (8, 16))):
        store = FeatureStore.open(tmp_path / "features" / f"subj01_tiny_{feature}.h5")
        np.testing.assert_array_equal(store.ids, [0, 1, 3, 4, 5])
        assert store.feature_shape == shape
    record = json.loads((tmp_path / "features" / "config.json").read_text())
    assert record["z_resolution"] == 10 and record["config"]["batch_size"] == 2
