"""The encoding analysis one part per task (one per feature space, one per pair), then assembled."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from prepared_writer import write_prepared

from brain2image.config import EncodingConfig, EncodingOptions, RunConfig, ZcConfig
from brain2image.encoding.analysis import run_encoding_analysis
from brain2image.encoding.parts import (
    assemble_encoding_parts,
    encoding_part_names,
    encoding_part_path,
    encoding_parts_folder,
    fit_encoding_part,
)
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.formats.feature_store import FeatureStore
from brain2image.formats.run_layout import RunLayout

CONFIG = EncodingConfig(cv_folds=3, banded_n_iter=3, alphas=[0.1, 1.0, 10.0, 100.0, 1000.0], maps=False)
SHAPES = {"z": (2, 3), "c": (40,), "zc_0.25": (6,), "zc_0.5": (2, 3)}


def _store(path: Path, ids: np.ndarray, values: np.ndarray, feature: str) -> Path:
    store = FeatureStore.create(path, ids, values.shape[1:], {"feature": feature, "model": "fake", "resolution": 0,
                                                              "seed": 0})
    store.write(ids, values)
    return store.finalize()


def _write_inputs(prepared: Path, store_path, n_images: int = 50, n_test: int = 12, n_vox: int = 14,
                  spaces=("z", "c", "zc_0.25", "zc_0.5"), seed: int = 0) -> dict[str, Path]:
    """A prepared file (nsdgeneral + early / ventral, volume positions, ncsnr) and one store per space."""
    rng = np.random.default_rng(seed)
    n_all = n_images + n_test
    ids = np.arange(n_all, dtype=np.int64) * 5 + 2
    feats = {name: rng.standard_normal((n_all, *SHAPES[name])).astype(np.float32) for name in spaces}
    flat = [feats[name].reshape(n_all, -1) for name in spaces[:2]]
    signal = np.concatenate([flat[0] @ rng.standard_normal((flat[0].shape[1], n_vox // 2)) / 2,
                             flat[1] @ rng.standard_normal((flat[1].shape[1], n_vox - n_vox // 2)) / 5], axis=1)
    train_index = np.repeat(np.arange(n_images), 2)
    rng.shuffle(train_index)
    Y_train = signal[train_index] + rng.standard_normal((len(train_index), n_vox))
    Y_test = signal[n_images:] + 0.5 * rng.standard_normal((n_test, n_vox))
    ijk = np.stack(np.unravel_index(rng.permutation(64)[:n_vox], (4, 4, 4)), axis=1).astype(np.int32)
    early = np.arange(n_vox) < n_vox // 2
    rois = {"nsdgeneral": {"train": Y_train, "test": Y_test, "ijk": ijk,
                           "ncsnr": np.linspace(0.2, 1.5, n_vox).astype(np.float32)}}
    for name, mask in (("early", early), ("ventral", ~early)):
        rois[name] = {"train": Y_train[:, mask], "test": Y_test[:, mask], "ijk": ijk[mask]}
    write_prepared(prepared, ids[train_index], ids[n_images:], rois,
                   attrs={"volume_shape": (4, 4, 4), "affine": np.diag([1.8, 1.8, 1.8, 1.0])})
    return {name: _store(store_path(name), ids, feats[name], name) for name in spaces}


@pytest.fixture
def inputs(tmp_path):
    stores = _write_inputs(tmp_path / "prepared.h5", lambda name: tmp_path / "stores" / f"{name}.h5")
    return tmp_path / "prepared.h5", {k: str(v) for k, v in stores.items()}


def _fit_all(prepared, stores, out, config=CONFIG, skip=()):
    for part in encoding_part_names(list(stores), config):
        if part not in skip:
            fit_encoding_part(prepared, stores, out, part, config=config)


def _h5_contents(path: Path) -> dict[str, object]:
    """Every dataset (dtype, shape, bytes) and every attribute of a file, by path."""
    items: dict[str, object] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            value = obj[()]
            items[name] = (value.dtype.str, value.shape, value.tobytes())
        items.update({f"{name}@{k}": np.asarray(v).tolist() for k, v in obj.attrs.items()})

    with h5py.File(path, "r") as f:
        items.update({f"@{k}": np.asarray(v).tolist() for k, v in f.attrs.items()})
        f.visititems(visit)
    return items


def _assert_same_outputs(a: Path, b: Path) -> None:
    """``<a>/encoding`` and ``<b>/encoding``: bit-identical results.h5, equal summary.json, the same files."""
    ea, eb = a / "encoding", b / "encoding"
    assert _h5_contents(ea / "results.h5") == _h5_contents(eb / "results.h5")
    assert json.loads((ea / "summary.json").read_text()) == json.loads((eb / "summary.json").read_text())
    assert sorted(p.relative_to(ea) for p in ea.rglob("*")) == sorted(p.relative_to(eb) for p in eb.rglob("*"))


def test_part_names_and_files():
    names = ["z", "c", "zc_0.5", "zc_0.25", "unet_mid_block_s0.5_t1"]
    assert encoding_part_names(names, CONFIG) == [*names, "z|c", "zc_0.25|zc_0.5"]
    pairs = dataclasses.replace(CONFIG, partition_pairs=[["c", "z"]])
    assert encoding_part_names(["z", "c"], pairs) == ["z", "c", "c|z"]
    assert encoding_part_path("out", "z|c") == Path("out/encoding/parts/z+c.h5")
    assert encoding_part_path("out", "unet_up/1 s+") == Path("out/encoding/parts/unet_up%2F1%20s%2B.h5")
    with pytest.raises(InvalidArgumentError, match="'q'"):
        encoding_part_names(["z"], dataclasses.replace(CONFIG, partition_pairs=[["z", "q"]]))


def test_parts_then_assembly_equal_one_run(inputs, tmp_path):
    prepared, stores = inputs
    whole = run_encoding_analysis(prepared, stores, tmp_path / "whole", config=CONFIG)
    _fit_all(prepared, stores, tmp_path / "parts")
    assert {p.name for p in encoding_parts_folder(tmp_path / "parts").iterdir()} == {
        "z.h5", "c.h5", "zc_0.25.h5", "zc_0.5.h5", "z+c.h5", "zc_0.25+zc_0.5.h5"}
    joined = assemble_encoding_parts(prepared, stores, tmp_path / "parts", config=CONFIG)
    _assert_same_outputs(tmp_path / "whole", tmp_path / "parts")
    assert not encoding_parts_folder(tmp_path / "parts").exists()
    with h5py.File(tmp_path / "parts" / "encoding" / "results.h5", "r") as f:
        assert set(f["models"]) == {"z"} and set(f["partitions"]) == {"z__c", "zc_0.25__zc_0.5"}
    for key, part in whole.partitions.items():
        assert all(np.array_equal(v, joined.partitions[key][q]) for q, v in part.items())
    assert np.array_equal(whole.models["z"].weights, joined.models["z"].weights)


def test_parts_with_maps_equal_one_run(tmp_path):
    config = dataclasses.replace(CONFIG, maps=True)
    stores = _write_inputs(tmp_path / "p.h5", lambda name: tmp_path / f"{name}.h5", spaces=("z", "c"))
    run_encoding_analysis(tmp_path / "p.h5", stores, tmp_path / "whole", config=config)
    _fit_all(tmp_path / "p.h5", stores, tmp_path / "parts", config)
    assemble_encoding_parts(tmp_path / "p.h5", stores, tmp_path / "parts", config=config)
    _assert_same_outputs(tmp_path / "whole", tmp_path / "parts")
    nii = ("maps/r_z.nii.gz", "maps/unique_c_vs_z.nii.gz")
    for name in nii:
        import nibabel as nib

        a, b = (nib.load(tmp_path / run / "encoding" / name).get_fdata() for run in ("whole", "parts"))
        assert np.array_equal(a, b)


def test_assembly_refuses_a_missing_part(inputs, tmp_path):
    prepared, stores = inputs
    _fit_all(prepared, stores, tmp_path / "out", skip=("zc_0.5", "z|c"))
    with pytest.raises(MissingFileError) as error:
        assemble_encoding_parts(prepared, stores, tmp_path / "out", config=CONFIG)
    message = str(error.value)
    assert "['zc_0.5', 'z|c']" in message and str(encoding_parts_folder(tmp_path / "out")) in message
    assert "\n" not in message
    assert not (tmp_path / "out" / "encoding" / "summary.json").exists()


def test_a_part_from_other_inputs_is_refused(inputs, tmp_path):
    prepared, stores = inputs
    out = tmp_path / "out"
    _fit_all(prepared, stores, out)
    other = dataclasses.replace(CONFIG, cv_folds=4)
    with pytest.raises(DataFormatError, match=r"z\.h5: field 'config' entry 'cv_folds' is 3, expected 4") as error:
        assemble_encoding_parts(prepared, stores, out, config=other)
    assert "\n" not in str(error.value)
    with pytest.raises(DataFormatError, match="field 'config' entry 'cv_folds'"):
        fit_encoding_part(prepared, stores, out, "c", config=other)
    moved = {**stores, "c": str(tmp_path / "c_copy.h5")}
    shutil.copy(stores["c"], moved["c"])
    with pytest.raises(DataFormatError, match=r"c\.h5: field 'feature_stores' entry 'c' is "):
        assemble_encoding_parts(prepared, moved, out, config=CONFIG)
    shutil.copy(prepared, tmp_path / "prepared_copy.h5")
    with pytest.raises(DataFormatError, match=r"z\.h5: field 'prepared' is "):
        assemble_encoding_parts(tmp_path / "prepared_copy.h5", stores, out, config=CONFIG)
    fewer = {k: v for k, v in stores.items() if k != "zc_0.25"}
    with pytest.raises(DataFormatError, match=r"z\.h5: field 'parts' is "):
        assemble_encoding_parts(prepared, fewer, out, config=CONFIG)
    assert (out / "encoding" / "parts").is_dir() and not (out / "encoding" / "results.h5").exists()


def test_a_complete_part_is_skipped_and_an_incomplete_one_refitted(inputs, tmp_path, monkeypatch):
    import brain2image.encoding.parts as parts

    prepared, stores = inputs
    path = fit_encoding_part(prepared, stores, tmp_path, "z", config=CONFIG)
    pair = fit_encoding_part(prepared, stores, tmp_path, "z|c", config=CONFIG)
    before = path.stat().st_mtime_ns, pair.stat().st_mtime_ns

    def refit(*args, **kwargs):
        raise AssertionError("a complete part was fitted again")

    with monkeypatch.context() as patch:
        patch.setattr(parts, "_fit_part", refit)
        assert fit_encoding_part(prepared, stores, tmp_path, "z", config=CONFIG) == path
        assert fit_encoding_part(prepared, stores, tmp_path, "z|c", config=CONFIG) == pair
    assert (path.stat().st_mtime_ns, pair.stat().st_mtime_ns) == before
    path.write_bytes(b"not hdf5")
    fit_encoding_part(prepared, stores, tmp_path, "z", config=CONFIG)
    with h5py.File(path, "r") as f:
        assert f.attrs["part"] == "z" and "models/z/weights" in f
    with pytest.raises(InvalidArgumentError, match="'c\\|z' is not a part"):
        fit_encoding_part(prepared, stores, tmp_path, "c|z", config=CONFIG)


# ------------------------------------------------------------------------------ the encode stage
def _run_folder(root: Path, zc: ZcConfig | None = None) -> RunConfig:
    """A run folder with a prepared file and the z, c stores (no model: the z_c stores are written by hand)."""
    layout = RunLayout.of(root)
    _write_inputs(layout.prepared, layout.feature_store, spaces=("z", "c"))
    return RunConfig(nsd_root=str(root), out_dir=str(root), zc=zc,
                     encoding=EncodingOptions(**dataclasses.asdict(CONFIG)))


def _ctx(config: RunConfig, part: str | None = None):
    """The context of the whole stage, of its z_c / U-Net stores task (``"features_zc"``), or of one part."""
    from brain2image.stages import StageContext
    from brain2image.stages.encode import EncodePart, EncodeStores

    piece = None if part is None else EncodeStores() if part == "features_zc" else EncodePart(part)
    return StageContext(config, part=piece, progress=False)


def test_stage_runs_each_part_then_assembles(tmp_path):
    from brain2image.stages import Split, finish_stage, get_stage, run_stage

    stage, config = get_stage("encode"), _run_folder(tmp_path)
    assert run_stage(stage, _ctx(config)) is not None
    shutil.move(tmp_path / "encoding", tmp_path / "whole" / "encoding")
    assert stage.part_names(_ctx(config)) == ["z", "c", "z|c"]
    (tasks,) = stage.tasks(_ctx(config), Split())  # one step: no z_c / U-Net stores in this config
    assert [str(task.part) for task in tasks] == ["z", "c", "z|c"]
    assert run_stage(stage, _ctx(config, "features_zc")) == {}
    for part in stage.part_names(_ctx(config)):
        assert run_stage(stage, _ctx(config, part)) == encoding_part_path(tmp_path, part)
        assert not (tmp_path / "encoding" / "summary.json").exists()
    finish_stage(stage, _ctx(config), tasks)
    assert stage.is_done(_ctx(config)) and not encoding_parts_folder(tmp_path).exists()
    _assert_same_outputs(tmp_path / "whole", tmp_path)
    finish_stage(stage, _ctx(config), tasks)  # done: nothing to assemble again
    assert run_stage(stage, _ctx(config, "z")) is None  # done: skipped as a whole stage is
    with pytest.raises(InvalidArgumentError, match="'q' is not a part of this run"):
        stage.run(_ctx(config, "q"))


def test_stage_parts_with_zc_spaces(tmp_path, monkeypatch):
    from brain2image.stages import Split, get_stage
    from brain2image.stages.encode import EncodeStage

    config = _run_folder(tmp_path, ZcConfig(zc_strengths=[0.5], num_inference_steps=4, unet_layers=[]))
    stage = get_stage("encode")
    assert stage.part_names(_ctx(config)) == ["z", "c", "zc_0.5", "z|c"]
    stores, parts = stage.tasks(_ctx(config), Split(shards=4))
    assert [str(t.part) for t in stores] == ["features_zc"] and [str(t.part) for t in parts] == stage.part_names(
        _ctx(config))
    calls = []
    monkeypatch.setattr(EncodeStage, "_zc_stores", lambda self, ctx, stores: calls.append(sorted(stores)) or {})
    assert stage.run(_ctx(config, "features_zc")) == {}
    assert calls == [["c", "z"]] and not (tmp_path / "encoding").exists()
    with pytest.raises(MissingFileError, match=r"features_zc/zc_0\.5\.h5 not found") as error:
        stage.run(_ctx(config, "zc_0.5"))
    assert "\n" not in str(error.value)
    z = FeatureStore.open(RunLayout.of(tmp_path).feature_store("z"))
    _store(tmp_path / "features_zc" / "zc_0.5.h5", z.ids, z.read() * 2 + 1, "zc_0.5")
    assert stage.run(_ctx(config, "zc_0.5")).is_file()
    with h5py.File(encoding_part_path(tmp_path, "zc_0.5"), "r") as f:
        assert json.loads(f.attrs["parts"]) == ["z", "c", "zc_0.5", "z|c"]
        assert json.loads(f.attrs["feature_stores"]) == {"zc_0.5": str(tmp_path / "features_zc" / "zc_0.5.h5")}
