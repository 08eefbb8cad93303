"""FeatureStore: partial file, resume, lazy ordered reads, shards and merging."""

import numpy as np
import pytest

from brain2image.errors import DataFormatError, MissingFileError
from brain2image.formats.feature_store import FeatureStore, merge_stores, partial_path
from brain2image.formats.partitions import parse_shard, shard_ids, shard_path

ATTRS = {"feature": "z", "model": "tiny", "resolution": 10, "seed": 0}


def _values(ids):
    return (np.asarray(ids, dtype=np.float32)[:, None, None] * np.arange(6, dtype=np.float32).reshape(1, 2, 3))


def test_write_finalize_read_in_asked_order(tmp_path):
    ids = np.array([40, 3, 17, 8])
    store = FeatureStore.create(tmp_path / "d_tiny_z.h5", ids, (2, 3), ATTRS)
    assert store.partial_path == tmp_path / "d_tiny_z.partial.h5" and store.partial_path.exists()
    store.write(ids, _values(ids))
    path = store.finalize()
    assert path.exists() and not partial_path(path).exists()
    opened = FeatureStore.open(path)
    np.testing.assert_array_equal(opened.ids, [3, 8, 17, 40])
    ask = np.array([17, 3, 40, 17])
    np.testing.assert_array_equal(opened.read(ask), _values(ask))
    assert opened.attrs["feature"] == "z" and opened.attrs["resolution"] == 10
    assert "brain2image_version" in opened.attrs
    with pytest.raises(DataFormatError, match=r"\[5\]"):
        opened.read([5])


def test_resume_after_interruption_matches_one_pass(tmp_path):
    ids = np.arange(10) * 3
    one = FeatureStore.create(tmp_path / "a" / "s.h5", ids, (2, 3), ATTRS)
    one.write(ids, _values(ids))
    one.finalize()

    path = tmp_path / "b" / "s.h5"
    first = FeatureStore.create(path, ids, (2, 3), ATTRS)
    first.write(ids[:4], _values(ids[:4]))
    del first  # the job dies here
    assert not path.exists()
    with pytest.raises(MissingFileError, match="unfinished"):
        FeatureStore.open(path)
    resumed = FeatureStore.create(path, ids, (2, 3), ATTRS)
    np.testing.assert_array_equal(resumed.missing_ids(), ids[4:])
    with pytest.raises(DataFormatError, match="not written"):
        resumed.finalize()
    resumed.write(ids[4:], _values(ids[4:]))
    resumed.finalize()
    np.testing.assert_array_equal(FeatureStore.open(path).read(), FeatureStore.open(tmp_path / "a" / "s.h5").read())


def test_resume_refuses_other_settings(tmp_path):
    ids = np.arange(4)
    FeatureStore.create(tmp_path / "s.h5", ids, (2, 3), ATTRS)
    with pytest.raises(DataFormatError, match="'resolution'"):
        FeatureStore.create(tmp_path / "s.h5", ids, (2, 3), {**ATTRS, "resolution": 20})
    with pytest.raises(DataFormatError, match="ids"):
        FeatureStore.create(tmp_path / "s.h5", np.arange(5), (2, 3), ATTRS)
    with pytest.raises(DataFormatError, match="shape"):
        FeatureStore.create(tmp_path / "s.h5", ids, (3, 3), ATTRS)


def test_shards_merge_to_the_full_store(tmp_path):
    ids = np.array([9, 1, 7, 3, 5, 11, 13])
    out = tmp_path / "s.h5"
    shards = []
    for i in (1, 2, 3):
        part = shard_ids(ids, (i, 3))
        store = FeatureStore.create(shard_path(out, (i, 3)), part, (2, 3), ATTRS)
        store.write(part, _values(part))
        shards.append(store.finalize())
    assert shards[1].name == "s.shard-2-of-3.h5"
    np.testing.assert_array_equal(np.concatenate([FeatureStore.open(p).ids for p in shards]), np.sort(ids))
    merged = FeatureStore.open(merge_stores(shards[::-1], out))
    np.testing.assert_array_equal(merged.ids, np.sort(ids))
    np.testing.assert_array_equal(merged.read(), _values(np.sort(ids)))
    with pytest.raises(DataFormatError, match="shard 1/3 given twice"):
        merge_stores([shards[0], shards[0]], tmp_path / "bad.h5")
    with pytest.raises(DataFormatError, match=r"shard 3/3 missing: .*s\.shard-3-of-3\.h5"):
        merge_stores(shards[:2], tmp_path / "bad.h5")  # shards without a 'shard' attribute: by file name
    plain = []
    for name, part in (("a", ids[:4]), ("b", ids[3:])):
        store = FeatureStore.create(tmp_path / f"{name}.h5", part, (2, 3), ATTRS)
        store.write(part, _values(part))
        plain.append(store.finalize())
    with pytest.raises(DataFormatError, match="'ids' overlaps"):
        merge_stores(plain, tmp_path / "bad.h5")


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "a/b", "3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
