"""FolderStimuli: a folder of image files (any size and format) + captions.tsv as a StimulusSource."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brain2image.errors import DataFormatError, MissingFileError
from brain2image.sources.base import StimulusSource
from brain2image.sources.stimulus_folder import FolderStimuli

SIZE = 8


def _save(path: Path, array: np.ndarray, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def _gradient(height: int, width: int) -> np.ndarray:
    """An RGB image whose red channel is the column and green the row (so the crop is checkable)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols * 255 // max(1, width - 1), rows * 255 // max(1, height - 1),
                     np.full_like(rows, 7)], axis=-1).astype(np.uint8)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "stimuli"
    _save(root / "images" / "b.png", np.full((SIZE, SIZE, 3), 200, dtype=np.uint8))
    _save(root / "images" / "a.jpg", np.full((20, 20, 3), 90, dtype=np.uint8), quality=95)
    _save(root / "wide.bmp", _gradient(8, 24))                        # non-square: centre crop
    _save(root / "c.gif", np.full((5, 5, 3), 30, dtype=np.uint8))
    _save(root / ".hidden.png", np.zeros((4, 4, 3), dtype=np.uint8))  # left out
    _save(root / ".cache" / "x.png", np.zeros((4, 4, 3), dtype=np.uint8))  # left out
    (root / "notes.txt").write_text("not an image")
    (root / "captions.tsv").write_text("stim_file\tcaption\nimages/b.png\ta white square\n"
                                       "images/b.png\ta bright tile\nimages/a.jpg\ta grey square\n"
                                       "c.gif\tn/a\nwide.bmp\ta ramp\nmissing.png\tignored\n")
    return root


def test_ids_are_sorted_relative_paths(folder: Path) -> None:
    stimuli = FolderStimuli(folder, image_size=SIZE)
    assert isinstance(stimuli, StimulusSource)
    assert stimuli.ids().tolist() == [0, 1, 2, 3]
    assert stimuli.names([0, 1, 2, 3]) == ["c.gif", "images/a.jpg", "images/b.png", "wide.bmp"]
    assert stimuli.ids_of(["images/b.png", "stimuli/c.gif", "./wide.bmp", "images\\a.jpg"], "events").tolist() \
        == [2, 0, 3, 1]


def test_ids_of_unknown_file_is_one_line(folder: Path) -> None:
    with pytest.raises(DataFormatError) as info:
        FolderStimuli(folder).ids_of(["images/b.png", "images/zebra.png", "nope.png"], "run-1_events.tsv 'stim_file'")
    message = str(info.value)
    assert "\n" not in message
    assert "run-1_events.tsv 'stim_file'" in message and "'images/zebra.png'" in message
    assert str(folder) in message and "1 more unknown" in message


def test_images_cropped_resized_in_order_with_duplicates(folder: Path) -> None:
    stimuli = FolderStimuli(folder, image_size=SIZE)
    images = stimuli.images([3, 2, 3, 1])
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], images[2])
    assert np.all(images[1] == 200)
    assert np.all(np.abs(images[3].astype(int) - 90) <= 2)  # JPEG, downsampled
    wide = images[0].astype(int)
    # The centre 8x8 of an 8x24 ramp: red spans about columns 8..15 of 0..23, i.e. 89..166.
    assert 80 <= wide[:, 0, 0].mean() <= 100 and 155 <= wide[:, -1, 0].mean() <= 175
    assert np.all(np.diff(wide[4, :, 0]) >= 0)
    np.testing.assert_array_equal(stimuli.images([]).shape, (0, SIZE, SIZE, 3))


def test_batches_sorted_unique(folder: Path) -> None:
    stimuli = FolderStimuli(folder, image_size=SIZE)
    batches = list(stimuli.batches([3, 0, 3, 2], batch_size=2))
    assert [ids.tolist() for ids, _ in batches] == [[0, 2], [3]]
    np.testing.assert_array_equal(batches[1][1], stimuli.images([3]))


def test_captions_several_per_image_na_skipped(folder: Path) -> None:
    stimuli = FolderStimuli(folder)
    assert stimuli.has_captions()
    assert stimuli.captions([2, 1, 2]) == [["a white square", "a bright tile"], ["a grey square"],
                                           ["a white square", "a bright tile"]]
    with pytest.raises(DataFormatError) as info:
        stimuli.captions([0, 2])
    message = str(info.value)
    assert "\n" not in message and "c.gif" in message and "stim_file<TAB>caption" in message
    assert str(folder / "captions.tsv") in message


def test_no_captions_file_says_how_to_add(folder: Path) -> None:
    (folder / "captions.tsv").unlink()
    stimuli = FolderStimuli(folder)
    assert not stimuli.has_captions()
    with pytest.raises(MissingFileError) as info:
        stimuli.captions([1])
    message = str(info.value)
    assert "\n" not in message and "c target" in message and "stim_file<TAB>caption" in message


def test_captions_without_column_is_one_line(folder: Path) -> None:
    (folder / "captions.tsv").write_text("file\ttext\nimages/b.png\tx\n")
    with pytest.raises(DataFormatError, match="no column 'stim_file'"):
        FolderStimuli(folder).captions([2])


def test_check_reads_headers_and_refuses_bad_files(folder: Path) -> None:
    stimuli = FolderStimuli(folder)
    stimuli.check([0, 1, 2, 3])
    (folder / "images" / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DataFormatError) as info:
        stimuli.check([2])
    assert "\n" not in str(info.value) and "b.png" in str(info.value)
    with pytest.raises(DataFormatError):
        stimuli.images([2])
    with pytest.raises(DataFormatError, match="out of range"):
        stimuli.check([4])


def test_identity_stable_and_sensitive(folder: Path) -> None:
    first = FolderStimuli(folder).identity()
    assert first == FolderStimuli(folder).identity()
    assert first["stimuli_identity"] != FolderStimuli(folder, image_size=64).identity()["stimuli_identity"]
    assert first["stimuli"] == str(folder.resolve()) and FolderStimuli(folder).origin() == {"stimuli": first["stimuli"]}
    assert first["stimuli_identity"].startswith("4:")
    with (folder / "captions.tsv").open("a") as handle:
        handle.write("c.gif\ta dark square\n")
    second = FolderStimuli(folder).identity()
    assert second["stimuli_identity"] != first["stimuli_identity"]
    _save(folder / "d.png", np.zeros((4, 4, 3), dtype=np.uint8))
    assert FolderStimuli(folder).identity()["stimuli_identity"] != second["stimuli_identity"]


def test_simulated_flag_and_describe(folder: Path) -> None:
    assert not FolderStimuli(folder).is_simulated()
    assert FolderStimuli(folder, simulated=True, label="BIDS stimuli").is_simulated()
    assert FolderStimuli(folder, label="BIDS stimuli").describe() == f"BIDS stimuli ({folder})"


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="not found"):
        FolderStimuli(tmp_path / "absent").ids()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="no image file"):
        FolderStimuli(tmp_path / "empty").ids()
