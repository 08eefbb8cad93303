"""A decoder fitted in parts of its targets and merged equals the decoder fitted at once."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_decoding import _write_files

from brain2image.config import DecoderConfig
from brain2image.decoding import fit_decoder_from_files
from brain2image.decoding.parts import decoder_part_path, merge_decoder_parts, non_empty_parts, target_part_columns
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.formats.feature_store import FeatureStore

CONFIG = DecoderConfig(alphas=[0.1, 1.0, 10.0, 100.0], cv_folds=3, target_chunk=5)
#: Attributes that differ between a fit at once and merged parts by design.
TIMING_ATTRS = {"fit_seconds", "fitted_in_parts"}


def _datasets(path):
    with h5py.File(path, "r") as f:
        arrays = {}
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
        attrs = {k: v for k, v in f.attrs.items() if k not in TIMING_ATTRS}
    return arrays, attrs


def _fit_parts(prepared, store, out, n, config=CONFIG):
    for i in non_empty_parts(18, n, config.target_chunk):
        fit_decoder_from_files(prepared, store, "early", "z", decoder_part_path(out, (i, n)), config, part=(i, n))


@pytest.mark.parametrize("chunk", [1, 5, 8192])
def test_part_columns_cover_the_targets_once_in_whole_blocks(chunk):
    for n_targets, n in [(18, 1), (18, 4), (59_136, 7), (59_136, 8), (5, 5), (12_288, 2), (18, 30)]:
        columns = [target_part_columns(n_targets, (i, n), chunk) for i in range(1, n + 1)]
        held = [c for c in columns if c is not None]
        assert held == [c for c in columns[:len(held)]]                  # empty parts come last
        assert held[0][0] == 0 and held[-1][1] == n_targets
        assert all(a[1] == b[0] for a, b in zip(held, held[1:]))
        assert all(start % chunk == 0 for start, _ in held)
        blocks = [-(-(stop - start) // chunk) for start, stop in held]
        assert max(blocks) - min(blocks) <= 1
        assert len(held) == min(n, -(-n_targets // chunk))
    assert target_part_columns(59_136, (8, 8), 8192) == (57_344, 59_136)
    with pytest.raises(InvalidArgumentError, match="expected i/n"):
        target_part_columns(5, (3, 2))


@pytest.mark.parametrize("columns", [(0, 18), (0, 1), (4, 13), (9, 18), (17, 18)])
def test_store_reads_a_column_range(tmp_path, columns):
    prepared, store, _, _ = _write_files(tmp_path, np.random.default_rng(3))
    ids = FeatureStore.open(store).ids[[5, 0, 7, 7, 99]]
    full = FeatureStore.open(store).read_flat(ids)
    part = FeatureStore.open(store).read_flat(ids, columns=columns, block_bytes=64)
    np.testing.assert_array_equal(part, full[:, columns[0]:columns[1]])
    with pytest.raises(InvalidArgumentError, match="columns 3:40"):
        FeatureStore.open(store).read_flat(ids, columns=(3, 40))


@pytest.mark.parametrize("n", [2, 3, 6])
def test_merged_parts_equal_the_fit_at_once_bit_for_bit(tmp_path, n):
    """Parts of whole target_chunk blocks (5 of 18 targets: 4 blocks; with 6 parts, two are empty)."""
    prepared, store, _, _ = _write_files(tmp_path, np.random.default_rng(13))
    whole = tmp_path / "whole" / "subj03_z_early.h5"
    fit_decoder_from_files(prepared, store, "early", "z", whole, CONFIG)
    merged = tmp_path / "parts" / "subj03_z_early.h5"
    _fit_parts(prepared, store, merged, n)
    with h5py.File(decoder_part_path(merged, (1, n)), "r") as f:
        assert f.attrs["part"] == f"1/{n}" and f["test/pred"].ndim == 2
    merge_decoder_parts(merged, n)
    assert sorted(p.name for p in merged.parent.iterdir()) == [merged.name]   # parts removed, no temporaries
    (expected, expected_attrs), (got, got_attrs) = _datasets(whole), _datasets(merged)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        assert got[name].dtype == expected[name].dtype, name
    differing = {k for k in expected_attrs.keys() | got_attrs.keys()
                 if not np.array_equal(np.asarray(expected_attrs.get(k)), np.asarray(got_attrs.get(k)))}
    assert differing == set()
    with h5py.File(merged, "r") as f:
        assert f.attrs["fitted_in_parts"] == n


def test_merge_refuses_missing_and_disagreeing_parts(tmp_path):
    prepared, store, _, _ = _write_files(tmp_path, np.random.default_rng(13))
    out = tmp_path / "decoders" / "subj03_z_early.h5"
    fit_decoder_from_files(prepared, store, "early", "z", decoder_part_path(out, (1, 3)), CONFIG, part=(1, 3))
    with pytest.raises(MissingFileError, match=r"part 2/3 missing: \S*subj03_z_early\.part-2-of-3\.h5; "
                                               r"part 3/3 missing: \S*subj03_z_early\.part-3-of-3"):
        merge_decoder_parts(out, 3)
    other = DecoderConfig(alphas=[1.0, 10.0], cv_folds=3, target_chunk=5)
    fit_decoder_from_files(prepared, store, "early", "z", decoder_part_path(out, (2, 3)), other, part=(2, 3))
    fit_decoder_from_files(prepared, store, "early", "z", decoder_part_path(out, (3, 3)), CONFIG, part=(3, 3))
    with pytest.raises(DataFormatError, match=r"part-2-of-3\.h5: field 'decoder_config'"):
        merge_decoder_parts(out, 3)
    # a part file under another part's name is refused by its recorded part
    decoder_part_path(out, (2, 3)).unlink()
    decoder_part_path(out, (3, 3)).rename(decoder_part_path(out, (2, 3)))
    fit_decoder_from_files(prepared, store, "early", "z", decoder_part_path(out, (3, 3)), CONFIG, part=(3, 3))
    with pytest.raises(DataFormatError, match=r"field 'part' is '3/3'; expected '2/3'"):
        merge_decoder_parts(out, 3)
    assert not out.exists()


def test_fit_command_parts_and_merge_command(tmp_path, capsys):
    from brain2image.cli import main

    prepared, store, _, _ = _write_files(tmp_path, np.random.default_rng(13))
    out = tmp_path / "decoders"
    base = ["fit", "--prepared", str(prepared), "--features", str(store), "--out", str(out), "--target", "z",
            "--alphas", "0.1", "1", "10", "100", "--cv-folds", "3", "--target-chunk", "5", "--no-progress"]
    assert main([*base, "--target-part", "1/2"]) == 0
    assert "decoder part written to" in capsys.readouterr().out
    decoder = out / "subj03_z_early.h5"
    assert main(["merge", str(decoder)]) == 2
    assert f"part 2/2 missing: {decoder_part_path(decoder, (2, 2))}" in capsys.readouterr().err
    assert main([*base, "--target-part", "2/2"]) == 0
    assert main(["merge", str(decoder_part_path(decoder, (1, 2)))]) == 0   # a part stands for its decoder
    assert capsys.readouterr().out.strip().endswith(str(decoder))
    whole = tmp_path / "whole"
    assert main([*base[:6], str(whole), *base[7:]]) == 0
    np.testing.assert_array_equal(_datasets(decoder)[0]["alphas"], _datasets(whole / decoder.name)[0]["alphas"])
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--target-part", "3/2"])
    assert exit_info.value.code == 2
    assert "argument --target-part: target part 3/2: expected i/n" in capsys.readouterr().err


def test_an_empty_part_is_refused_by_the_fit(tmp_path):
    prepared, store, _, _ = _write_files(tmp_path, np.random.default_rng(13))
    with pytest.raises(InvalidArgumentError, match=r"target part 5/6: no targets left for it \(18 targets in 4 block"):
        fit_decoder_from_files(prepared, store, "early", "z", tmp_path / "d.part-5-of-6.h5", CONFIG, part=(5, 6))
