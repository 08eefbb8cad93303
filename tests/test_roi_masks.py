"""NAME=MASK / NAME=reliable:N parsing and masks put on a reference grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.sources.roi_masks import RoiSpec, load_mask_on_grid, parse_roi_specs


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_parse_roi_specs_masks_and_reliable() -> None:
    specs = parse_roi_specs({"early": "masks/early.nii.gz", "top": "reliable:500"}, "[source] rois")
    assert specs == [RoiSpec("early", Path("masks/early.nii.gz"), None), RoiSpec("top", None, 500)]
    assert str(specs[1]) == "top=reliable:500"


@pytest.mark.parametrize("rois, needle", [
    ({"top": "reliable:0"}, "'top'"),
    ({"top": "reliable:abc"}, "'top'"),
    ({"top": "reliable:"}, "'top'"),
    ({"a/b": "m.nii.gz"}, "'a/b'"),
    ({"x": ""}, "'x'"),
    ({}, "no ROI"),
])
def test_parse_roi_specs_refuses_bad_entries(rois: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_roi_specs(rois, "--roi")
    message = str(info.value)
    assert "\n" not in message and message.startswith("--roi") and needle in message
    assert "NAME=MASK.nii.gz or NAME=reliable:N" in message


def test_mask_on_same_grid_is_read_as_is(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    data = np.zeros((4, 5, 6), dtype=np.float32)
    data[1, 2, 3] = 1.0
    data[2, 2, 3] = 0.5
    data[3, 0, 0] = -1.0
    path = _save(tmp_path / "m.nii.gz", data, affine)
    reference = nib.Nifti1Image(np.zeros((4, 5, 6, 3), dtype=np.float32), affine)
    mask = load_mask_on_grid(path, reference, "roi")
    assert mask.dtype == bool and mask.shape == (4, 5, 6)
    assert np.array_equal(np.argwhere(mask), [[1, 2, 3], [2, 2, 3]])


def test_mask_on_finer_grid_is_resampled_nearest(tmp_path: Path) -> None:
    fine = np.zeros((8, 8, 8), dtype=np.uint8)
    fine[2:4, 2:4, 2:4] = 1  # one coarse voxel (1, 1, 1) of a grid twice as coarse
    path = _save(tmp_path / "fine.nii.gz", fine, np.diag([1.0, 1.0, 1.0, 1.0]))
    reference = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    mask = load_mask_on_grid(path, reference, "roi")
    assert mask.shape == (4, 4, 4)
    assert np.array_equal(np.argwhere(mask), [[1, 1, 1]])


def test_mask_errors_are_one_line(tmp_path: Path) -> None:
    reference = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4))
    with pytest.raises(MissingFileError, match="does not exist"):
        load_mask_on_grid(tmp_path / "absent.nii.gz", reference, "roi early")
    four_d = _save(tmp_path / "4d.nii.gz", np.ones((4, 4, 4, 2), dtype=np.uint8), np.eye(4))
    with pytest.raises(DataFormatError, match=r"not 3D"):
        load_mask_on_grid(four_d, reference, "roi early")
    text = tmp_path / "mask.nii.gz"
    text.write_text("not an image")
    with pytest.raises(DataFormatError, match="not a NIfTI"):
        load_mask_on_grid(text, reference, "roi early")
    far = np.eye(4)
    far[:3, 3] = 1000.0
    outside = _save(tmp_path / "far.nii.gz", np.ones((4, 4, 4), dtype=np.uint8), far)
    with pytest.raises(DataFormatError, match="no voxel") as info:
        load_mask_on_grid(outside, reference, "roi early")
    assert "\n" not in str(info.value)
