"""The ``nsd`` preset: an NSD-size design and anatomy, and a streaming writer that ``prepare`` reads."""

from __future__ import annotations

import argparse
import json
import tracemalloc

import h5py
import numpy as np
import pytest

from brain2image.commands import simulate as simulate_command
from brain2image.embedded.simulate import nsd_writer, study
from brain2image.embedded.simulate.study import NSD_PRESET, make_design, simulate_study
from brain2image.embedded.simulate.subject import SimulatedSubject, make_anatomy
from brain2image.errors import InvalidArgumentError
from brain2image.formats.prepared import load_prepared
from brain2image.sources.nsd import prepare_subject

#: The preset at a reduced size: 4 sessions (the last one late), small volume, images and ROIs.
REDUCED = dict(n_images=1000, n_shared=20, n_sessions=4, late_sessions=1, late_shared=5,
               volume_shape=(20, 24, 16), roi_sizes={"early": 300, "midventral": 40, "ventral": 300, "lateral": 40},
               image_size=64, model_size=16, standardise_images=300)
BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"


def _preset_design(seed: int):
    keys = ("n_images", "n_shared", "n_sessions", "late_sessions", "late_shared")
    return make_design(**{k: NSD_PRESET[k] for k in keys}, seed=seed)


@pytest.mark.parametrize("seed", [0, 7])
def test_nsd_design_at_full_size(seed):
    design = _preset_design(seed)
    ids, session = design.trial_ids, design.session
    assert design.n_trials == 30000 and session.max() == 40
    assert np.array_equal(np.bincount(session)[1:], np.full(40, 750))
    assert np.array_equal(np.sort(design.subjectim), np.arange(1, 10001))
    assert np.array_equal(np.bincount(ids, minlength=10000), np.full(10000, 3))  # every image 3 times
    shared = design.sharedix - 1
    assert len(shared) == 1000 and np.array_equal(design.subjectim[:1000] - 1, shared)
    sessions = np.stack([np.sort(session[ids == image]) for image in shared])
    assert all(len(set(row)) == 3 for row in sessions)  # 3 repeats in 3 sessions
    complete = (sessions <= 37).all(1)
    assert complete.sum() == 982  # fully seen within sessions 1-37, as in NSD
    late = sessions[~complete]
    assert ((late[:, -1] >= 38) & (late[:, 0] <= 37)).all()  # seen before, finished in 38-40


def test_nsd_anatomy_at_full_size():
    sizes = NSD_PRESET["roi_sizes"]
    assert sum(sizes.values()) == 15724
    assert 5900 <= sizes["early"] <= 6000 and 7500 <= sizes["ventral"] <= 8000
    for shape in (NSD_PRESET["volume_shape"], (81, 104, 83)):
        anatomy = make_anatomy(shape, sizes, seed=0)
        assert anatomy.streams.shape == shape
        assert (anatomy.nsdgeneral == 1).sum() == 15724
        counts = np.bincount(anatomy.streams.ravel(), minlength=8)
        assert (counts[1], counts[2], counts[5], counts[6]) == (5960, 986, 7604, 1174)
        assert anatomy.brainmask.sum() > 2 * 15724  # a margin of brain around the ROIs


def test_preset_values_and_overrides():
    settings = study._resolve_settings("nsd", 3, {"n_sessions": 6, "volume_shape": None})
    assert settings.n_sessions == 6 and settings.n_images == 10000 and settings.volume_shape == (45, 55, 40)
    assert (settings.image_size, settings.model_size, settings.preset, settings.seed) == (425, 64, "nsd", 3)
    default = study._resolve_settings(None, 0, {})
    assert (default.n_images, default.n_sessions, default.image_size, default.model_size) == (1250, 4, 64, None)
    assert default.truth_attrs(make_anatomy()).keys() == {
        "seed", "n_images", "n_shared", "n_sessions", "volume_shape", "roi_sizes", "image_size",
        "ncsnr_target", "session_offset", "val_fraction"}
    assert study._resolve_settings("demo", 0, {}).n_sessions == 6
    with pytest.raises(InvalidArgumentError, match="preset"):
        study.preset_settings("huge")
    with pytest.raises(InvalidArgumentError, match="late_sessions=3 needs n_sessions >= 6"):
        make_design(1500, 30, 4, late_sessions=3, late_shared=18)
    with pytest.raises(InvalidArgumentError, match="model_size"):
        study._resolve_settings("nsd", 0, {"image_size": 32})


def test_cli_preset_passes_only_given_options(monkeypatch, tmp_path):
    seen = {}

    def fake(out_dir, **kwargs):
        seen.update(kwargs)
        return study.SimulatedStudy(out_dir=tmp_path, nsd_root=tmp_path / "nsd", truth_path=tmp_path / "t.h5")

    monkeypatch.setattr(study, "simulate_study", fake)
    parser = argparse.ArgumentParser()
    simulate_command.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--out", str(tmp_path), "--preset", "nsd", "--sessions", "6",
                              "--volume-shape", "81x104x83", "--no-progress"])
    assert args.func(args) == 0
    assert seen["preset"] == "nsd" and seen["n_sessions"] == 6 and seen["volume_shape"] == (81, 104, 83)
    assert seen["n_images"] is None and seen["image_size"] is None and seen["seed"] == 0


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """The reduced preset, written with spies on the writers and the memory of the betas writer."""
    mp = pytest.MonkeyPatch()
    calls: dict[str, list] = {"betas": [], "render": [], "peak": []}
    write_session, render, write_betas = (nsd_writer.write_betas_session, study.render_scenes,
                                          study._write_betas)

    def spy_session(betas_dir, session, betas, affine, nifti=False):
        calls["betas"].append((session, betas.shape))
        write_session(betas_dir, session, betas, affine, nifti)

    def spy_render(scenes, size=64):
        calls["render"].append(len(scenes))
        return render(scenes, size)

    def measured_betas(*args, **kwargs):
        tracemalloc.start()
        try:
            return write_betas(*args, **kwargs)
        finally:
            calls["peak"].append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    mp.setattr(nsd_writer, "write_betas_session", spy_session)
    mp.setattr(study, "render_scenes", spy_render)
    mp.setattr(study, "_write_betas", measured_betas)
    mp.setattr(study, "IMAGE_CHUNK", 128)
    mp.setattr(study, "BETA_BLOCK_VALUES", 1 << 16)
    try:
        result = simulate_study(tmp_path_factory.mktemp("nsd_preset"), preset="nsd", seed=5, progress=False,
                                **REDUCED)
    finally:
        mp.undo()
    return result, calls


def test_streaming_writer_bounds_memory(streamed):
    result, calls = streamed
    assert calls["betas"] == [(s, (20, 24, 16, 750)) for s in (1, 2, 3, 4)]  # one session per write
    assert max(calls["render"]) <= 128 and sum(calls["render"]) == 1000  # stimuli in chunks
    session_bytes = 750 * 20 * 24 * 16 * 2
    assert calls["peak"][0] < 2 * session_bytes < 4 * session_bytes  # never all 4 sessions at once
    assert not (result.out_dir / ".simulation_signal.scratch.h5").exists()


def test_streamed_tree_is_nsd_that_prepare_reads(streamed, tmp_path):
    result, _ = streamed
    root = result.nsd_root
    with h5py.File(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as f:
        assert f["imgBrick"].shape == (1000, 64, 64, 3) and f["imgBrick"].chunks == (1, 64, 64, 3)
        images = f["imgBrick"][:6]
    with h5py.File(root / BETAS / "betas_session04.hdf5", "r") as f:
        assert f["betas"].shape == (750, 16, 24, 20) and f["betas"].dtype == np.int16
    marker = json.loads((root / nsd_writer.SIMULATION_MARKER).read_text())
    assert marker["simulated_by"] == "brain2image" and marker["preset"] == "nsd" and marker["seed"] == 5
    assert marker["settings"]["n_sessions"] == 4 and marker["settings"]["image_size"] == 64

    data = load_prepared(prepare_subject(root, 1, tmp_path / "prep.h5", progress=False))
    assert data.n_voxels("nsdgeneral") == 680 and data.n_voxels("early") == 300
    x_train, train_ids = data.train("nsdgeneral")
    x_test, test_ids = data.test("nsdgeneral")
    assert x_train.shape == (3000 - 60, 680) and x_test.shape == (20, 680)
    assert np.array_equal(np.sort(data.n_repeats()), np.full(20, 3))

    with h5py.File(result.truth_path, "r") as f:
        subject = SimulatedSubject.from_hdf5(f["voxels"])
        signal, labels = f["signal"][()], f["labels"][:6]
        assert f.attrs["model_size"] == 16 and f.attrs["late_shared"] == 5 and "preset" not in f.attrs
    assert subject.model_size == 16 and signal.shape == (1000, 680)
    # The truth's subject maps the stored 64 px stimuli through its 16 px view to the same signal.
    np.testing.assert_allclose(subject.responses(images, labels), signal[:6], atol=1e-4)
    # Standardised on the first 300 images only, the signal still has about unit-amplitude sd.
    ratio = signal.std(0) / subject.amplitude
    assert 0.85 < np.median(ratio) < 1.15
