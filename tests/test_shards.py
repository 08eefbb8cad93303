"""Shards: each writes its own record; `brain2image merge` joins a complete, consistent set only."""

import json

import numpy as np
import pandas as pd
import pytest
from ldm_dummy import one_torch_thread, save_tiny_ldm, tiny_ldm, write_fake_stimuli  # noqa: F401

from brain2image.cli import main
from brain2image.config import FeatureConfig, ReconstructionConfig
from brain2image.errors import DataFormatError
from brain2image.formats.feature_store import FeatureStore, merge_feature_shards, merge_stores
from brain2image.formats.partitions import shard_path
from brain2image.formats.recon_index import ReconFolder
from brain2image.ldm.features import extract_features
from brain2image.ldm.reconstruct import reconstruct
from brain2image.sources.nsd import NSDStimuli
from brain2image.stages.base import Timings

IDS = np.arange(7)


@pytest.fixture(scope="module")
def model():
    return tiny_ldm()


@pytest.fixture()
def nsd(tmp_path):
    write_fake_stimuli(tmp_path / "nsd", n_images=8)
    return tmp_path / "nsd"


def _shard(nsd, model, out, i, n=2, config=None, ids=IDS, feature="z"):
    return extract_features(NSDStimuli(nsd), ids, model, feature, out, config or FeatureConfig(batch_size=4),
                            progress=False, shard=(i, n))


def test_merged_shards_equal_one_pass(nsd, model, tmp_path):
    out = tmp_path / "shards" / "s_z.h5"
    shards = [_shard(nsd, model, out, i) for i in (1, 2)]
    assert shards == [shard_path(out, (1, 2)), shard_path(out, (2, 2))]
    assert FeatureStore.open(shards[1]).attrs["shard"] == "2/2"
    merged = FeatureStore.open(merge_feature_shards(out))
    single = FeatureStore.open(extract_features(NSDStimuli(nsd), IDS, model, "z", tmp_path / "one" / "s_z.h5",
                                                FeatureConfig(batch_size=4), progress=False))
    np.testing.assert_array_equal(merged.ids, single.ids)
    np.testing.assert_allclose(merged.read(), single.read(), atol=1e-6)
    assert merged.attrs == single.attrs and "shard" not in merged.attrs


def test_one_shard_of_two_is_refused(nsd, model, tmp_path):
    out = tmp_path / "s_z.h5"
    first = _shard(nsd, model, out, 1)
    with pytest.raises(DataFormatError, match="shard 2/2 missing: .*s_z.shard-2-of-2.h5"):
        merge_feature_shards(out)
    with pytest.raises(DataFormatError, match="shard 2/2 missing"):
        merge_stores([first], out)
    assert not out.exists()


@pytest.mark.parametrize("field, second", [
    ("seed", {"config": FeatureConfig(batch_size=4, seed=1)}),
    ("shard_total_ids", {"ids": IDS[:5]}),
    ("shard_ids_sha256", {"ids": np.array([0, 1, 2, 3, 4, 5, 7])}),
])
def test_inconsistent_shards_are_refused(nsd, model, tmp_path, field, second):
    out = tmp_path / "s_z.h5"
    _shard(nsd, model, out, 1)
    _shard(nsd, model, out, 2, **second)
    with pytest.raises(DataFormatError, match=f"'{field}'"):
        merge_feature_shards(out)


def test_shards_of_different_counts_are_refused(nsd, model, tmp_path):
    out = tmp_path / "s_z.h5"
    paths = [_shard(nsd, model, out, 1, n=2), _shard(nsd, model, out, 2, n=3)]
    with pytest.raises(DataFormatError, match="'shard'"):
        merge_stores(paths, out)


def test_feature_shards_write_own_records_and_merge_command(nsd, model, tmp_path, capsys):
    model_dir = save_tiny_ldm(model, tmp_path / "tiny")
    out = tmp_path / "features"
    common = ["features", "--nsd-root", str(nsd), "--model", str(model_dir), "--ids", *map(str, IDS),
              "--feature", "z", "--out", str(out), "--no-progress"]
    assert main([*common, "--shard", "1/2"]) == 0
    store = out / "ids_tiny_z.h5"
    assert main(["merge", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"shard 2/2 missing: {shard_path(store, (2, 2))}" in err
    assert main([*common, "--shard", "2/2"]) == 0
    records = [json.loads((out / f"config.shard-{i}-of-2.json").read_text()) for i in (1, 2)]
    assert [r["shard"] for r in records] == [[1, 2], [2, 2]] and not (out / "config.json").exists()
    capsys.readouterr()
    assert main(["merge", str(shard_path(store, (1, 2)))]) == 0
    assert capsys.readouterr().out.strip() == str(store)
    assert len(FeatureStore.open(store)) == len(IDS)


def _recon_inputs(model, n):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, *model.z_shape(16))).astype(np.float32)


def test_reconstruct_shards_merge_into_the_one_pass_index(model, tmp_path, capsys):
    ids = np.array([3, 9, 12, 20])
    z = _recon_inputs(model, len(ids))
    config = ReconstructionConfig(methods=("z_only",), n_samples=2)
    reconstruct(model, ids, z, config=config, out_dir=tmp_path / "one", progress=False)
    folder = tmp_path / "shards"
    reconstruct(model, ids[:2], z[:2], config=config, out_dir=folder, progress=False, shard=(1, 2))
    assert main(["merge", str(folder)]) == 2
    assert "shard 2/2 missing" in capsys.readouterr().err
    reconstruct(model, ids[2:], z[2:], config=config, out_dir=folder, progress=False, shard=(2, 2))
    assert json.loads((folder / "config.shard-2-of-2.json").read_text())["shard"] == [2, 2]
    assert not (folder / "index.csv").exists() and not (folder / "config.json").exists()
    assert main(["merge", str(folder)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(folder / "index.csv"), pd.read_csv(tmp_path / "one" / "index.csv"))
    assert json.loads((folder / "config.json").read_text()) == json.loads((tmp_path / "one" / "config.json")
                                                                          .read_text())


def _fake_shard(root, shard, ids, steps=50):
    folder = ReconFolder(root)
    record = {"model": "m", "methods": ["z_only"],
              "config": {**dict(num_inference_steps=steps, strength=0.8, guidance_scale=5.0, eta=0.0, seed=0),
                         "n_samples": 1}}
    folder.write_config(record, shard)
    for i in ids:
        folder.image_path("z_only", i, 0).parent.mkdir(parents=True, exist_ok=True)
        folder.image_path("z_only", i, 0).write_bytes(b"png")
    folder.write_index(["z_only"], ids, 1, {(i, 0): i for i in ids}, shard)


def test_inconsistent_recon_shards_are_refused(tmp_path):
    _fake_shard(tmp_path / "a", (1, 2), [1, 2])
    _fake_shard(tmp_path / "a", (2, 2), [3], steps=10)
    with pytest.raises(DataFormatError, match="'num_inference_steps'"):
        ReconFolder(tmp_path / "a").merge_shards()
    _fake_shard(tmp_path / "b", (1, 2), [1, 2])
    _fake_shard(tmp_path / "b", (2, 2), [2, 3])
    with pytest.raises(DataFormatError, match="'test_id' overlaps"):
        ReconFolder(tmp_path / "b").merge_shards()
    _fake_shard(tmp_path / "c", (1, 2), [1])
    _fake_shard(tmp_path / "c", (2, 2), [2])
    (tmp_path / "c" / "z_only" / "2_0.png").unlink()
    with pytest.raises(DataFormatError, match="2_0.png"):
        ReconFolder(tmp_path / "c").merge_shards()


def test_resumed_timings_keep_earlier_ones(tmp_path):
    path = tmp_path / "timings.json"
    Timings(path).record("prepare", 1.0)
    Timings(path).record("features_z", 2.0)
    assert json.loads(path.read_text()) == {"prepare": 1.0, "features_z": 2.0}
