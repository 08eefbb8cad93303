"""Provenance: files record the study they were made from; fit and reconstruct refuse mixed studies."""

import logging
import shutil

import h5py
import numpy as np
import pytest
from ldm_dummy import tiny_ldm

from brain2image.cli import main
from brain2image.config import DecoderConfig, FeatureConfig
from brain2image.decoding import fit_decoder_from_files
from brain2image.embedded.simulate.study import simulate_study
from brain2image.errors import DataFormatError
from brain2image.formats.decoder_file import DecoderFile
from brain2image.formats.feature_store import FeatureStore
from brain2image.formats.prepared import PreparedData
from brain2image.ldm.features import extract_features
from brain2image.sources.nsd import NSDStimuli
from brain2image.sources.nsd.prepare import prepare_subject
from brain2image.sources.nsd.stimuli import stimuli_identity, stimuli_path
from brain2image.stages.reconstruct import check_same_study

ROIS = {"early": 120, "ventral": 120, "midventral": 10, "lateral": 10}
DECODER = DecoderConfig(alphas=[1.0, 100.0], cv_folds=3)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two simulated studies ("a", "b") of the same 300 ids: prepared file and z store of each."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("provenance")
    model = tiny_ldm()
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        study = simulate_study(root / name, n_images=300, n_shared=8, n_sessions=1, volume_shape=(12, 14, 10),
                               roi_sizes=ROIS, seed=seed, progress=False)
        prepared = prepare_subject(study.nsd_root, 1, root / name / "subj01.h5", rois=("streams:early",),
                                   progress=False)
        store = extract_features(NSDStimuli(study.nsd_root), PreparedData(prepared).image_ids(), model, "z",
                                 root / name / "f_z.h5", FeatureConfig(batch_size=64), progress=False)
        out[name] = {"nsd_root": study.nsd_root, "prepared": prepared, "store": store}
    yield root, out
    torch.set_num_threads(threads)


def test_stimuli_identity_is_size_and_sampled_hash(tmp_path):
    path = tmp_path / "brick.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 3 * 2**20, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    first = stimuli_identity(path)
    assert first.startswith(f"{len(data)}:") and first == stimuli_identity(path)
    data[0] ^= 1  # the first block is always sampled
    path.write_bytes(bytes(data))
    assert stimuli_identity(path) != first
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    assert stimuli_identity(small).startswith("3:")


def test_prepared_files_and_stores_record_the_study(studies):
    _, out = studies
    for name, study in out.items():
        identity = stimuli_identity(stimuli_path(study["nsd_root"]))
        prepared = PreparedData(study["prepared"]).attrs
        store = FeatureStore.open(study["store"]).attrs
        assert prepared["stimuli_identity"] == identity == store["stimuli_identity"]
        assert prepared["nsd_root"] == store["nsd_root"] == str(study["nsd_root"].resolve())
        assert prepared["subject"] == 1
    assert out["a"]["store"] and (FeatureStore.open(out["a"]["store"]).attrs["stimuli_identity"]
                                  != FeatureStore.open(out["b"]["store"]).attrs["stimuli_identity"])


def test_fit_refuses_a_store_of_another_study(studies, tmp_path):
    _, out = studies
    with pytest.raises(DataFormatError) as error:
        fit_decoder_from_files(out["a"]["prepared"], out["b"]["store"], "early", "z", tmp_path / "d.h5", DECODER)
    message = str(error.value)
    assert "\n" not in message and "'stimuli_identity'" in message
    assert str(out["a"]["prepared"]) in message and str(out["b"]["store"]) in message
    for name in ("a", "b"):
        assert repr(FeatureStore.open(out[name]["store"]).attrs["stimuli_identity"]) in message
    assert not (tmp_path / "d.h5").exists()


def test_fit_command_refuses_another_study_in_one_line(studies, tmp_path, capsys):
    _, out = studies
    status = main(["fit", "--prepared", str(out["a"]["prepared"]), "--features", str(out["b"]["store"]),
                   "--out", str(tmp_path), "--target", "z", "--roi", "early", "--alphas", "1", "100",
                   "--cv-folds", "3", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "stimuli_identity" in err


def test_fit_of_one_study_records_it_in_the_decoder(studies, tmp_path):
    _, out = studies
    path = fit_decoder_from_files(out["a"]["prepared"], out["a"]["store"], "early", "z", tmp_path / "d.h5", DECODER)
    attrs = DecoderFile.read_attrs(path)
    prepared = PreparedData(out["a"]["prepared"]).attrs
    assert attrs["stimuli_identity"] == prepared["stimuli_identity"]
    assert attrs["nsd_root"] == prepared["nsd_root"] and attrs["subject"] == 1


def _without_provenance(source, target):
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        for key in ("stimuli_identity", "nsd_root"):
            del f.attrs[key]
    return target


def test_old_files_without_provenance_are_warned_about_not_refused(studies, tmp_path, caplog):
    _, out = studies
    old_store = _without_provenance(out["b"]["store"], tmp_path / "old_z.h5")
    with caplog.at_level(logging.WARNING):
        path = fit_decoder_from_files(out["a"]["prepared"], old_store, "early", "z", tmp_path / "d.h5", DECODER)
    assert "stimuli_identity" in caplog.text and str(old_store) in caplog.text
    assert DecoderFile.read_attrs(path)["stimuli_identity"] == PreparedData(out["a"]["prepared"]).attrs[
        "stimuli_identity"]


def test_reconstruct_refuses_inputs_of_two_studies(studies, tmp_path, caplog):
    _, out = studies
    decoder = fit_decoder_from_files(out["a"]["prepared"], out["a"]["store"], "early", "z", tmp_path / "d.h5",
                                     DECODER)
    check_same_study({"z": decoder, "z_true": out["a"]["store"]})
    with pytest.raises(DataFormatError, match="'stimuli_identity'") as error:
        check_same_study({"z": decoder, "z_true": out["b"]["store"]})
    assert str(decoder) in str(error.value) and str(out["b"]["store"]) in str(error.value)
    other_subject = tmp_path / "subj02_z.h5"
    shutil.copy(decoder, other_subject)
    with h5py.File(other_subject, "r+") as f:
        f.attrs["subject"] = 2
    with pytest.raises(DataFormatError, match="'subject'"):
        check_same_study({"z": decoder, "c": other_subject})
    with caplog.at_level(logging.WARNING):
        check_same_study({"z": decoder, "z_true": _without_provenance(out["b"]["store"], tmp_path / "old.h5")})
    assert "stimuli_identity" in caplog.text
