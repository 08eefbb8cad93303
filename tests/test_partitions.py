"""formats.partitions: the names of the pieces of a split output, which sets exist, and their checks."""

from pathlib import Path

import numpy as np
import pytest

from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.formats.partitions import (
    PART,
    SHARD,
    choose_count,
    complete_counts,
    first_difference,
    named_piece,
    parse_piece_name,
    piece_counts,
    piece_files,
    piece_path,
    require_consistent,
    require_one_set,
    require_pieces,
    require_recorded,
    whole_path,
)


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.mark.parametrize(("whole", "kind", "piece", "name"), [
    ("features/nsd_tiny_z.h5", SHARD, (2, 4), "nsd_tiny_z.shard-2-of-4.h5"),
    ("recon/index.csv", SHARD, (1, 3), "index.shard-1-of-3.csv"),
    ("recon/config.json", SHARD, (3, 3), "config.shard-3-of-3.json"),
    ("decoders/subj01_c_ventral.h5", PART, (10, 12), "subj01_c_ventral.part-10-of-12.h5"),
])
def test_piece_names_round_trip(whole, kind, piece, name):
    path = piece_path(whole, kind, piece)
    assert path == Path(whole).parent / name
    assert parse_piece_name(path.name) == (Path(whole).name, kind, *piece)
    assert whole_path(path) == Path(whole) and whole_path(whole) == Path(whole)


def test_other_names_are_not_pieces():
    for name in ("s_z.h5", "s_z.partial.h5", "s_z.shard-1-of-2.partial.h5", "s.chunk-1-of-2.h5", "s.shard-a-of-2.h5"):
        assert parse_piece_name(name) is None
    assert named_piece("parts", "z|c") == Path("parts/z+c.h5")
    assert named_piece("parts", "unet_up/1 s+", ".json") == Path("parts/unet_up%2F1%20s%2B.json")


def test_discovery_finds_only_complete_sets_of_one_kind(tmp_path):
    whole = tmp_path / "s_z.h5"
    _touch(*(piece_path(whole, SHARD, (i, 2)) for i in (1, 2)), piece_path(whole, SHARD, (1, 3)),
           piece_path(whole, PART, (1, 4)), tmp_path / "s_zz.shard-1-of-5.h5", tmp_path / "s_z.shard-2-of-3.partial.h5")
    assert piece_counts(whole, SHARD) == [2, 3] and piece_counts(whole, PART) == [4]
    assert complete_counts(whole, SHARD) == [2] and complete_counts(whole, PART) == []
    assert [p.name for p in piece_files(whole, SHARD)] == ["s_z.shard-1-of-2.h5", "s_z.shard-1-of-3.h5",
                                                            "s_z.shard-2-of-2.h5"]
    assert choose_count(whole, PART) == 4 and choose_count(whole, SHARD, 3) == 3
    with pytest.raises(InvalidArgumentError, match=r"shards of \[2, 3\] parts lie beside it; expected one count"):
        choose_count(whole, SHARD)
    with pytest.raises(MissingFileError, match=r"no part files t\.part-i-of-n\.h5 beside it"):
        choose_count(tmp_path / "t.h5", PART)


def test_every_missing_piece_is_named(tmp_path):
    whole = tmp_path / "d.h5"
    _touch(piece_path(whole, PART, (1, 4)), piece_path(whole, PART, (3, 4)))
    with pytest.raises(MissingFileError) as error:
        require_pieces(whole, PART, 4, error=MissingFileError, expected="expected all 4 parts")
    assert str(error.value) == (f"part 2/4 missing: {tmp_path / 'd.part-2-of-4.h5'}; part 4/4 missing: "
                                f"{tmp_path / 'd.part-4-of-4.h5'}; expected all 4 parts")
    assert require_pieces(whole, PART, 4, [1, 3]) == [piece_path(whole, PART, (i, 4)) for i in (1, 3)]
    with pytest.raises(DataFormatError, match=r"^shard 1/1 missing: .*d\.shard-1-of-1\.h5$"):
        require_pieces(whole, SHARD, 1)


def test_a_set_must_be_whole_and_of_one_count(tmp_path):
    whole = tmp_path / "s.h5"
    first, second, third = (piece_path(whole, SHARD, (i, 3)) for i in (1, 2, 3))
    require_one_set([(first, (1, 3)), (third, (3, 3)), (second, (2, 3))], SHARD)
    require_one_set([(tmp_path / "a.h5", None), (tmp_path / "b.h5", None)], SHARD)  # not pieces: nothing to check
    with pytest.raises(DataFormatError, match=r"shard 2/3 missing: .*s\.shard-2-of-3\.h5"):
        require_one_set([(first, (1, 3)), (third, (3, 3))], SHARD)
    with pytest.raises(DataFormatError, match="shard 1/3 given twice"):
        require_one_set([(first, (1, 3)), (first, (1, 3)), (third, (3, 3))], SHARD)
    with pytest.raises(DataFormatError, match=r"field 'shard' is 2/2, but .* is shard 1/3"):
        require_one_set([(first, (1, 3)), (second, (2, 2))], SHARD)
    with pytest.raises(DataFormatError, match=r"field 'shard' is none"):
        require_one_set([(first, (1, 3)), (tmp_path / "other.h5", None)], SHARD)
    require_recorded(second, "2/3", SHARD, (2, 3))
    with pytest.raises(DataFormatError, match=r"s\.shard-2-of-3\.h5: field 'shard' is '3/3'; expected '2/3'"):
        require_recorded(second, "3/3", SHARD, (2, 3))


def test_pieces_that_disagree_are_refused():
    records = [("a", {"seed": 0, "alphas": np.array([1.0, 2.0]), "note": "x"}),
               ("b", {"seed": 0, "alphas": np.array([1.0, 2.0])}),
               ("c", {"seed": 1, "alphas": np.array([1.0, 3.0]), "note": "x"})]
    assert first_difference(records[0][1], records[1][1], ("seed", "alphas")) is None
    assert first_difference(records[0][1], records[1][1], ("seed", "note")) == "note"       # one lacks it
    assert first_difference(records[0][1], records[1][1], ("note",), when_both=True) is None
    assert first_difference(records[0][1], records[2][1], ("note", "alphas", "seed")) == "alphas"
    require_consistent(records[:2], ("seed", "alphas"))
    with pytest.raises(DataFormatError, match=r"^c: field 'seed' is 1, but a has 0; expected shards of one run$"):
        require_consistent(records, ("seed", "alphas"), expected="shards of one run")
