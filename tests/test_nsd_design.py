"""NSD layout, trial table (1-based -> 0-based, cross-check with responses.tsv) and ROI specs."""

import numpy as np
import pytest
from nsd_tree_writer import write_nsd_tree

from brain2image.errors import DataFormatError, MissingFileError
from brain2image.sources.nsd.design import trial_table
from brain2image.sources.nsd.layout import NSDLayout, resolve_nsd_root
from brain2image.sources.nsd.rois import label_table, load_roi_masks, parse_roi_spec

TPS = 24


@pytest.fixture()
def tree(tmp_path):
    return write_nsd_tree(tmp_path / "nsd", n_sessions=2, trials_per_session=TPS, seed=1)


def test_layout_paths_and_env_root(tree, monkeypatch):
    monkeypatch.setenv("NSD_ROOT", str(tree.root))
    layout = NSDLayout(None, 1)
    assert layout.root == tree.root.resolve()
    assert layout.betas_session(2) == tree.betas_file(2).resolve()
    assert layout.betas_session(1, "nifti").name == "betas_session01.nii.gz"
    assert layout.roi_volume("streams").is_file() and layout.expdesign().is_file()
    assert layout.sessions_on_disk("hdf5") == [1, 2] == layout.sessions_on_disk("nifti")
    surface = NSDLayout(tree.root, 1, space="fsaverage")
    assert [p.name for p in surface.session_files(3)] == ["lh.betas_session03.mgh",
                                                          "rh.betas_session03.mgh"]
    assert surface.sessions_on_disk() == [1, 2]
    monkeypatch.delenv("NSD_ROOT")
    with pytest.raises(MissingFileError, match="NSD_ROOT"):
        resolve_nsd_root(None)


def test_trial_table_ids_are_zero_based_and_shared_flagged(tree):
    table = trial_table(NSDLayout(tree.root, 1), [1, 2], TPS)
    assert len(table) == 2 * TPS
    np.testing.assert_array_equal(table["id73k"], np.concatenate([tree.ids[1], tree.ids[2]]))
    np.testing.assert_array_equal(table["trial"], np.tile(np.arange(1, TPS + 1), 2))
    np.testing.assert_array_equal(table["is_shared"], np.isin(table["id73k"], tree.shared_ids))
    # only session 2, rows come from the second block of masterordering
    np.testing.assert_array_equal(trial_table(NSDLayout(tree.root, 1), [2], TPS)["id73k"],
                                  tree.ids[2])


def test_responses_mismatch_is_an_error(tree):
    path = tree.root / "nsddata/ppdata/subj01/behav/responses.tsv"
    lines = path.read_text().splitlines()
    fields = lines[5].split("\t")
    fields[4] = str(int(fields[4]) + 1)
    lines[5] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"responses\.tsv.*session 1 trial 5"):
        trial_table(NSDLayout(tree.root, 1), [1], TPS)


def test_responses_trial_count_must_match(tree):
    path = tree.root / "nsddata/ppdata/subj01/behav/responses.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # drop the last trial of session 2
    with pytest.raises(DataFormatError, match=rf"responses\.tsv: session 2 has {TPS - 1} trials"):
        trial_table(NSDLayout(tree.root, 1), [1, 2], TPS)


def test_expdesign_too_short_names_file(tree):
    with pytest.raises(DataFormatError, match=r"nsd_expdesign\.mat.*masterordering"):
        trial_table(NSDLayout(tree.root, 1), [3], TPS)


def test_roi_specs_and_labels(tree):
    assert parse_roi_spec("streams:early").key == "early"
    assert parse_roi_spec("nsdgeneral").label is None
    with pytest.raises(ValueError):
        parse_roi_spec("streams:")
    layout = NSDLayout(tree.root, 1)
    specs = [parse_roi_spec(s) for s in ("streams:early", "nsdgeneral", "prf-visualrois:V1d")]
    masks, affine, shape = load_roi_masks(layout, specs)
    assert shape == tree.volume_shape
    np.testing.assert_allclose(affine, tree.affine, rtol=1e-6)
    np.testing.assert_array_equal(masks[0].mask, tree.streams == 1)
    np.testing.assert_array_equal(masks[1].mask, tree.nsdgeneral > 0)
    np.testing.assert_array_equal(masks[2].mask, tree.prf == 2)  # built-in prf table, no ctab


def test_ctab_overrides_builtin_and_unknown_label_lists_names(tree):
    layout = NSDLayout(tree.root, 1)
    layout.label_ctab("streams").write_text("0 Unknown\n1 EVC\n5 VTC\n")
    table, source = label_table(layout, "streams")
    assert table == {0: "Unknown", 1: "EVC", 5: "VTC"} and source.endswith("streams.mgz.ctab")
    masks, _, _ = load_roi_masks(layout, [parse_roi_spec("streams:VTC")])
    np.testing.assert_array_equal(masks[0].mask, tree.streams == 5)
    with pytest.raises(DataFormatError, match=r"'early'.*streams\.nii\.gz.*available: EVC, VTC"):
        load_roi_masks(layout, [parse_roi_spec("streams:early")])


def test_missing_atlas_and_shape_mismatch(tree):
    import nibabel as nib

    layout = NSDLayout(tree.root, 1)
    with pytest.raises(MissingFileError, match=r"Kastner2015\.nii\.gz"):
        load_roi_masks(layout, [parse_roi_spec("Kastner2015")])
    nib.save(nib.Nifti1Image(np.ones((7, 9, 6), np.int16), tree.affine),
             layout.roi_volume("nsdgeneral"))
    with pytest.raises(DataFormatError, match=r"nsdgeneral\.nii\.gz: shape \(7, 9, 6\)"):
        load_roi_masks(layout, [parse_roi_spec("streams:early"), parse_roi_spec("nsdgeneral")])
