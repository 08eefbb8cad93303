"""Single-trial betas (LSS / LSA) equal nilearn's FirstLevelModel fits, recover known betas, refuse bad runs."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix

from brain2image.errors import DataFormatError, InvalidArgumentError
from brain2image.glm import GlmSettings, single_trial_betas, trial_design
from brain2image.glm.single_trial import _lsa_solver, _lss_solver

TR = 1.5
N_VOLUMES, N_TRIALS, N_VOXELS = 100, 12, 40


def _run(seed: int = 0, n_volumes: int = N_VOLUMES, n_trials: int = N_TRIALS, n_voxels: int = N_VOXELS):
    """A small run: jittered onsets, 6 confounds that enter the signal, drift, noise; scanner-like units."""
    rng = np.random.default_rng(seed)
    frame_times = np.arange(n_volumes) * TR
    onsets = np.sort(rng.choice(np.arange(4, (n_volumes - 12) * TR, 0.5), n_trials, replace=False))
    durations = rng.choice([0.0, 1.0, 3.0], n_trials)
    confounds = rng.standard_normal((n_volumes, 6)).cumsum(axis=0) * 0.05
    design = trial_design(frame_times, onsets, durations, None, GlmSettings())
    betas = rng.standard_normal((n_trials, n_voxels)) * 20
    drift = np.outer(np.linspace(-1, 1, n_volumes), rng.standard_normal(n_voxels)) * 5
    bold = (1000 + rng.uniform(0, 500, n_voxels) + design.trials @ betas + drift + confounds @ rng.standard_normal(
        (6, n_voxels)) * 3 + rng.standard_normal((n_volumes, n_voxels)) * 10)
    return bold, frame_times, onsets, durations, confounds


def _nilearn_betas(bold, onsets, durations, confounds, hrf, trial_types, contrasts, frame_times=None):
    """Effect sizes of ``contrasts`` from one nilearn FirstLevelModel on ``bold`` (n_volumes, n_voxels)."""
    image = nib.Nifti1Image(bold.T[:, None, None, :].astype(np.float64), np.eye(4))
    mask = nib.Nifti1Image(np.ones((bold.shape[1], 1, 1), dtype=np.uint8), np.eye(4))
    timing = {"t_r": TR, "hrf_model": hrf, "drift_model": "cosine", "high_pass": 0.01} if frame_times is None else {}
    model = FirstLevelModel(**timing, signal_scaling=0, noise_model="ols", minimize_memory=False, mask_img=mask)
    events = pd.DataFrame({"onset": onsets, "duration": durations, "trial_type": trial_types})
    names = [f"c{k}" for k in range(confounds.shape[1])]
    with warnings.catch_warnings():  # notes on the given mask and on impulse events (duration 0): both on purpose
        warnings.filterwarnings("ignore", message=".*a mask was given at masker creation")
        warnings.filterwarnings("ignore", message="The following conditions contain events with null duration")
        if frame_times is None:
            model.fit(image, events=events, confounds=pd.DataFrame(confounds, columns=names))
        else:
            design = make_first_level_design_matrix(frame_times, events, hrf_model=hrf, drift_model="cosine",
                                                    high_pass=0.01, add_regs=confounds, add_reg_names=names)
            model.fit(image, design_matrices=[design])
    return np.stack([model.compute_contrast(c, output_type="effect_size").get_fdata()[:, 0, 0] for c in contrasts])


def _lss_reference(bold, onsets, durations, confounds, hrf, frame_times=None):
    """The beta-series reference (nilearn's example): one model per trial, that trial vs one 'other' condition."""
    rows = []
    for i in range(len(onsets)):
        types = np.where(np.arange(len(onsets)) == i, "trial", "other")
        rows.append(_nilearn_betas(bold, onsets, durations, confounds, hrf, types, ["trial"], frame_times)[0])
    return np.stack(rows)


def _assert_equal_to_reference(mine, reference):
    scale = np.abs(reference).max()
    np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("hrf", ["glover", "spm"])
def test_lss_equals_nilearn_per_trial_models(hrf):
    bold, frame_times, onsets, durations, confounds = _run(seed=1)
    mine = single_trial_betas(bold, frame_times, onsets, durations, confounds, GlmSettings(hrf=hrf))
    assert mine.shape == (N_TRIALS, N_VOXELS) and mine.dtype == np.float32
    _assert_equal_to_reference(mine, _lss_reference(bold, onsets, durations, confounds, hrf))


@pytest.mark.parametrize("hrf", ["glover", "spm"])
def test_lsa_equals_one_nilearn_model(hrf):
    bold, frame_times, onsets, durations, confounds = _run(seed=2)
    mine = single_trial_betas(bold, frame_times, onsets, durations, confounds, GlmSettings(method="lsa", hrf=hrf))
    names = [f"t{i:02d}" for i in range(N_TRIALS)]
    _assert_equal_to_reference(mine, _nilearn_betas(bold, onsets, durations, confounds, hrf, names, names))


def test_uneven_frame_times_after_dropped_volumes_equal_nilearn():
    bold, frame_times, onsets, durations, confounds = _run(seed=3, n_volumes=N_VOLUMES + 5)
    keep = np.r_[3:50, 51:N_VOLUMES + 5]  # three dummy volumes and one volume in the middle dropped
    args = (bold[keep], onsets, durations, confounds[keep], "glover")
    mine = single_trial_betas(bold[keep], frame_times[keep], onsets, durations, confounds[keep])
    _assert_equal_to_reference(mine, _lss_reference(*args, frame_times=frame_times[keep]))
    names = [f"t{i:02d}" for i in range(N_TRIALS)]
    lsa = single_trial_betas(bold[keep], frame_times[keep], onsets, durations, confounds[keep],
                             GlmSettings(method="lsa"))
    _assert_equal_to_reference(lsa, _nilearn_betas(*args[:4], "glover", names, names, frame_times[keep]))


def test_a_run_with_one_trial_equals_nilearn():
    bold, frame_times, onsets, durations, confounds = _run(seed=11, n_trials=1)
    mine = single_trial_betas(bold, frame_times, onsets, durations, confounds)
    _assert_equal_to_reference(mine, _nilearn_betas(bold, onsets, durations, confounds, "glover", ["t"], ["t"]))


def test_voxel_chunks_do_not_change_the_betas(monkeypatch):
    bold, frame_times, onsets, durations, confounds = _run(seed=4)
    whole = single_trial_betas(bold, frame_times, onsets, durations, confounds)
    monkeypatch.setattr("brain2image.glm.single_trial._CHUNK_ELEMENTS", 7 * N_VOLUMES)
    np.testing.assert_array_equal(single_trial_betas(bold, frame_times, onsets, durations, confounds), whole)


def test_noiseless_betas_are_recovered():
    rng = np.random.default_rng(5)
    frame_times = np.arange(200) * 2.0
    onsets, durations = np.arange(10, 370, 12.0), np.full(30, 2.0)
    confounds = rng.standard_normal((200, 3))
    design = trial_design(frame_times, onsets, durations, confounds, GlmSettings())
    nuisance = design.nuisance @ rng.standard_normal((design.nuisance.shape[1], 8))
    truth = rng.standard_normal((30, 8))
    raw = GlmSettings(method="lsa", percent_signal_change=False)
    bold = design.trials @ truth + nuisance
    np.testing.assert_allclose(single_trial_betas(bold, frame_times, onsets, durations, confounds, raw), truth,
                               atol=1e-4)
    # LSS is exact when a voxel's trials share one amplitude; in percent signal change it is 100 * beta / mean.
    amplitude = rng.uniform(1, 5, 8)
    bold = 1000 + design.trials @ np.tile(amplitude, (30, 1))
    lss = single_trial_betas(bold, frame_times, onsets, durations)
    np.testing.assert_allclose(lss, np.tile(100 * amplitude / bold.mean(axis=0), (30, 1)), rtol=1e-5)


def _one_line_error(error, *fragments):
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("method", ["lss", "lsa"])
def test_two_trials_with_one_onset_are_refused(method):
    bold, frame_times, onsets, durations, confounds = _run(seed=6)
    onsets[5] = onsets[4]
    with pytest.raises(DataFormatError) as error:
        single_trial_betas(bold, frame_times, onsets, durations, confounds, GlmSettings(method=method),
                           where="sub-01 run-2")
    _one_line_error(error, "sub-01 run-2", f"{onsets[4]:g} s", "merge them")


@pytest.mark.parametrize("method", ["lss", "lsa"])
def test_trials_closer_than_the_time_grid_are_refused(method):
    bold, frame_times, onsets, durations, confounds = _run(seed=6)
    onsets[4] += 0.01  # mid-way in a 30 ms step of nilearn's oversampled grid (TR / 50), as is onsets[5]:
    onsets[5], durations[4:6] = onsets[4] + 0.002, 0.0
    with pytest.raises(DataFormatError) as error:
        single_trial_betas(bold, frame_times, onsets, durations, confounds, GlmSettings(method=method),
                           where="run-4")
    _one_line_error(error, "run-4", "trials 4 and 5", f"{onsets[4]:g} s", "the same regressor")


def test_rank_deficient_trial_regressors_are_refused():
    # A trial regressor that is a combination of two others: LSA cannot separate them.
    rng = np.random.default_rng(10)
    residual = rng.standard_normal((50, 4))
    residual[:, 3] = residual[:, 0] - 2 * residual[:, 1]
    with pytest.raises(DataFormatError) as error:
        _lsa_solver(residual, np.array([2.0, 9.0, 17.0, 30.0]), "run-5")
    _one_line_error(error, "run-5", "rank-deficient", "glm = \"lss\"")
    # LSS refuses a trial collinear with the sum of the others.
    residual = rng.standard_normal((50, 3))
    residual[:, 2] = residual[:, 0] + residual[:, 1]
    with pytest.raises(DataFormatError) as error:
        _lss_solver(residual, np.array([2.0, 9.0, 17.0]), "run-6")
    _one_line_error(error, "run-6", "trial 2", "17 s", "collinear")


def test_trial_mirrored_by_a_confound_is_refused():
    bold, frame_times, onsets, durations, confounds = _run(seed=7)
    design = trial_design(frame_times, onsets, durations, None, GlmSettings())
    confounds[:, 0] = design.trials[:, 3]
    with pytest.raises(DataFormatError) as error:
        single_trial_betas(bold, frame_times, onsets, durations, confounds, where="run-1")
    _one_line_error(error, "run-1", f"{onsets[3]:g} s", "confound")


def test_nan_in_bold_is_refused_naming_the_run():
    bold, frame_times, onsets, durations, confounds = _run(seed=8)
    bold[10, 33] = np.nan
    with pytest.raises(DataFormatError) as error:
        single_trial_betas(bold, frame_times, onsets, durations, confounds, where="sub-02 ses-1 run-3")
    _one_line_error(error, "sub-02 ses-1 run-3", "voxel 33", "volume 10")


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda a: {**a, "frame_times": a["frame_times"][:-1]}, "frame times for"),
    (lambda a: {**a, "durations": a["durations"][:-2]}, "durations"),
    (lambda a: {**a, "confounds": a["confounds"][:-1]}, "confounds have shape"),
    (lambda a: {**a, "bold": a["bold"][:, 0]}, "bold must be"),
    (lambda a: {**a, "onsets": a["onsets"] + 1000}, "outside the volumes"),
    (lambda a: {**a, "confounds": np.where(np.arange(N_VOLUMES)[:, None] == 0, np.nan, a["confounds"])}, "NaN"),
])
def test_mismatching_inputs_are_refused_in_one_line(change, fragment):
    bold, frame_times, onsets, durations, confounds = _run(seed=9)
    args = change({"bold": bold, "frame_times": frame_times, "onsets": onsets, "durations": durations,
                   "confounds": confounds})
    with pytest.raises(DataFormatError) as error:
        single_trial_betas(**args, where="the test run")
    _one_line_error(error, "the test run", fragment)


@pytest.mark.parametrize("settings", [{"method": "lsq"}, {"hrf": "fir"}, {"high_pass": 0.0}])
def test_unknown_settings_are_refused(settings):
    with pytest.raises(InvalidArgumentError):
        GlmSettings(**settings)
