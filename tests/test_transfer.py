"""Cross-subject transfer (``[transfer]``): splits that keep it honest, the composed decoders, the run, bad input.

A small simulated cohort (4 subjects who saw the same images, 2 sessions) and a tiny model:
subjects 2-4 are run through prepare, features and fit (the references); subject 1 is the new
subject, decoded through them from its first session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from study_fixtures import one_error_line, tiny_study

from brain2image.cli import main
from brain2image.config import DecoderConfig, load_run_config
from brain2image.formats.decoder_file import DecoderFile
from brain2image.formats.prepared import PreparedData
from brain2image.pipeline import run_pipeline
from brain2image.ridge import ImageRidgeCV
from brain2image.transfer.alignment import combine, compose, fit_alignment, from_standardised

pytestmark = pytest.mark.slow

REFERENCES = (2, 3, 4)
COHORT = {"n_subjects": 4, "n_shared": 40, "n_sessions": 2, "n_images": 600}


def _base(nsd: Path, model: Path) -> str:
    return (f'nsd_root = "{nsd}"\nmodel = "{model}"\n[decoder]\nalphas = [1.0, 100.0, 10000.0]\ncv_folds = 3\n'
            '[reconstruction]\nnum_inference_steps = 3\nn_samples = 1\nmethods = ["z_only", "z_plus_c"]\n'
            "[encoding]\nenabled = false\n[report]\nn_images = 2\n")


def _transfer_config(root: Path, name: str, **settings) -> Path:
    """A transfer run config of subject 1 in ``root/<name>.toml`` (out_dir ``root/<name>``)."""
    table = {"reference_subjects": list(REFERENCES), "reference_run": "refs", "sessions": 1, **settings}
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path = root / f"{name}.toml"
    path.write_text(f'out_dir = "{name}"\nsubject = 1\n' + _base(root / "study" / "nsd", root / "tiny_model")
                    + "[transfer]\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The cohort, the references' run (prepare, features, fit) in ``refs/``, and subject 1's transfer run."""
    root = tmp_path_factory.mktemp("transfer")
    study, model = tiny_study(root, **COHORT)
    refs = f"out_dir = \"refs\"\nsubjects = {list(REFERENCES)}\n"
    (root / "refs.toml").write_text(refs + _base(study.nsd_root, model))
    run_pipeline(load_run_config(root / "refs.toml"), progress=False, stages=["prepare", "features", "fit"])
    assert main(["--no-progress", "run", str(_transfer_config(root, "transfer"))]) == 0
    return root


# ---------------------------------------------------------------------------------- the algebra
def test_composed_decoder_equals_the_alignment_then_the_reference_decoder():
    rng = np.random.default_rng(0)
    X_new = rng.normal(3.0, 2.0, (60, 12)).astype(np.float32)
    X_ref = (X_new @ rng.normal(size=(12, 9)) + rng.normal(size=(60, 9)) + 5).astype(np.float32)
    alignment = fit_alignment(X_new, X_ref, DecoderConfig(alphas=[1.0, 10.0], cv_folds=3), backend="numpy")
    decoder = ImageRidgeCV(alphas=[1.0, 10.0], n_folds=3).fit(X_ref, rng.normal(size=(60, 7)))
    composed = compose(alignment, decoder.coef_, decoder.intercept_, decoder.x_mean_, decoder.x_std_)
    mapped = ((X_new - alignment.x_mean) / alignment.x_std) @ alignment.coef + alignment.intercept
    np.testing.assert_allclose(composed.predict(X_new), decoder.predict(mapped), rtol=1e-4, atol=1e-4)
    own = from_standardised(decoder.coef_, decoder.intercept_, decoder.x_mean_, decoder.x_std_)
    np.testing.assert_allclose(own.predict(X_ref), decoder.predict(X_ref), rtol=1e-4, atol=1e-4)
    direct = ImageRidgeCV(alphas=[1.0, 10.0], n_folds=3).fit(X_new, rng.normal(size=(60, 7)))
    own_new = from_standardised(direct.coef_, direct.intercept_, direct.x_mean_, direct.x_std_)
    both = combine([composed, own_new], [1.0, 3.0])
    np.testing.assert_allclose(both.predict(X_new), 0.25 * composed.predict(X_new) + 0.75 * direct.predict(X_new),
                               rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- the run
def test_transfer_run_decodes_held_out_images_and_names_its_method_everywhere(cohort):
    run = cohort / "transfer" / "subj01" if (cohort / "transfer" / "subj01").is_dir() else cohort / "transfer"
    split = json.loads((run / "transfer" / "split.json").read_text())
    test_ids = np.asarray(split["test_ids"])
    assert len(test_ids) == round(0.5 * len(split["candidates"])) == 20 and split["sessions"] == 1
    for target, roi in (("z", "early"), ("c", "ventral")):
        decoder = DecoderFile.read(run / "decoders" / f"subj01_{target}_{roi}.h5", load_weights=True)
        np.testing.assert_array_equal(decoder.test_ids, test_ids)
        assert decoder.attrs["decoder_method"] == "transfer"
        record = json.loads(decoder.attrs["transfer"])
        assert sorted(record["references"]) == ["2", "3", "4"] and record["n_test_images"] == 20
        assert decoder.summary()["mean_r"] > 0.2  # the simulated subjects share their tuning's structure
        # the stored weights act on raw betas and reproduce the stored predictions
        X_test, ids = PreparedData(run / "prepared" / "subj01.h5").test(roi)
        pred = X_test[np.searchsorted(ids, test_ids)] @ decoder.coef + decoder.intercept
        np.testing.assert_allclose(pred, decoder.test_pred.reshape(len(pred), -1), rtol=1e-4, atol=1e-4)
    evaluation = json.loads((run / "evaluation.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert evaluation["decoders"]["z"]["decoder"] == metrics["decoders"]["c"]["decoder"] == "transfer"
    assert "transfer" in (run / "report.html").read_text() and "held-out" in (run / "report.html").read_text()
    assert not (run / "decoders" / "subj01_z_early.part-1-of-2.h5").exists()


def test_no_test_image_reaches_any_fit(cohort):
    """The split says so, and the decoders are unchanged when the test images' betas are scrambled everywhere."""
    run = cohort / "transfer"
    split = json.loads((run / "transfer" / "split.json").read_text())
    test_ids = set(split["test_ids"])
    assert not test_ids & set(split["own_train_ids"])
    assert all(not test_ids & set(ids) for ids in split["alignment_ids"].values())
    for ref in REFERENCES:
        train_ids = PreparedData(cohort / "refs" / f"subj{ref:02d}" / "prepared" / f"subj{ref:02d}.h5").trials("train")
        assert not test_ids & set(np.asarray(train_ids["ids"]).tolist())
    # scramble every beta of a test image: the new subject's and the references' (their decoders are fitted)
    scrambled = cohort / "scrambled"
    shutil.copytree(cohort / "refs", scrambled / "refs")
    (scrambled / "transfer" / "prepared").mkdir(parents=True)
    shutil.copy(run / "prepared" / "subj01.h5", scrambled / "transfer" / "prepared" / "subj01.h5")
    shutil.copytree(run / "features", scrambled / "transfer" / "features")
    files = [scrambled / "transfer" / "prepared" / "subj01.h5",
             *(scrambled / "refs" / f"subj{r:02d}" / "prepared" / f"subj{r:02d}.h5" for r in REFERENCES)]
    rng = np.random.default_rng(1)
    for path in files:
        with h5py.File(path, "r+") as f:
            for split_name in ("train", "test_trials", "test"):
                rows = np.flatnonzero(np.isin(f[f"{split_name}/ids"][()], list(test_ids)))
                for roi in f["rois"]:
                    data = f[f"rois/{roi}/{split_name}"]
                    for row in rows:
                        data[row] = rng.normal(0, 50, data.shape[1])
    from brain2image.transfer import TransferSettings, transfer_decoders
    from brain2image.transfer.split import ReferenceSubject

    def references(prepared_files):
        decoders = [cohort / "refs" / f"subj{r:02d}" / "decoders" / f"subj{r:02d}_z_early.h5" for r in REFERENCES]
        return [ReferenceSubject(r, path, {"z": decoder})
                for r, path, decoder in zip(REFERENCES, prepared_files, decoders)]

    clean_refs = [cohort / "refs" / f"subj{r:02d}" / "prepared" / f"subj{r:02d}.h5" for r in REFERENCES]
    store = next((run / "features").glob("*_z.h5"))
    for decoder in ("own", "transfer"):
        settings = TransferSettings(list(REFERENCES), "refs", sessions=1, decoder=decoder)
        original = cohort / f"leak_{decoder}"
        for new, refs, out in ((run / "prepared" / "subj01.h5", clean_refs, original),
                               (files[0], files[1:], scrambled / decoder)):
            transfer_decoders(new, {"z": ("early", store, out / "z.h5")}, references(refs), settings,
                              out / "split.json", config=DecoderConfig(alphas=[1.0, 100.0, 10000.0], cv_folds=3))
        clean = DecoderFile.read(original / "z.h5", load_weights=True)
        dirty = DecoderFile.read(scrambled / decoder / "z.h5", load_weights=True)
        np.testing.assert_allclose(dirty.coef, clean.coef, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dirty.intercept, clean.intercept, rtol=1e-5, atol=1e-6)


def test_own_decoder_takes_only_the_first_sessions_and_the_split_is_seeded(cohort):
    from brain2image.transfer.split import make_split, session_rows

    prepared = PreparedData(cohort / "transfer" / "prepared" / "subj01.h5")
    rows, n_sessions = session_rows(prepared, 1, np.zeros(0, np.int64))
    assert n_sessions == 2
    for part in rows:
        sessions = prepared.trials(part.split)["session"][part.rows]
        assert set(sessions.tolist()) == {1}
    refs = _references(cohort)
    one, again = (make_split(prepared, refs, sessions=1, test_fraction=0.5, seed=0) for _ in range(2))
    other = make_split(prepared, refs, sessions=None, test_fraction=0.5, seed=3)
    np.testing.assert_array_equal(one.test_ids, again.test_ids)
    assert not np.array_equal(one.test_ids, other.test_ids) and other.sessions == 2
    assert sum(len(p.rows) for p in other.own_rows) > sum(len(p.rows) for p in one.own_rows)


def _references(cohort: Path):
    from brain2image.stages.transfer import reference_subjects
    from brain2image.transfer import TransferSettings

    return reference_subjects(TransferSettings(list(REFERENCES), str(cohort / "refs")), {"z": "early", "c": "ventral"})


def test_relative_reference_run_is_taken_from_the_config_folder(cohort):
    config = load_run_config(_transfer_config(cohort, "relative"))
    assert config.stage_settings["transfer"]["reference_run"] == str(cohort / "refs")


def test_stage_command_writes_the_decoders_and_the_split(cohort, tmp_path):
    run = cohort / "transfer"
    stores = sorted(str(p) for p in (run / "features").glob("*.h5"))
    argv = ["--no-progress", "transfer", "--prepared", str(run / "prepared" / "subj01.h5"), "--features", *stores,
            "--out", str(tmp_path / "out"), "--reference-subjects", "2", "3", "--reference-run", str(cohort / "refs"),
            "--sessions", "all", "--decoder", "transfer+own", "--combine", "weighted", "--alphas", "1", "100",
            "--cv-folds", "3"]
    assert main(argv) == 0
    split = json.loads((tmp_path / "out" / "transfer" / "split.json").read_text())
    assert split["sessions"] == 2 and sorted(split["alignment_ids"]) == ["2", "3"]
    record = json.loads(DecoderFile.read_attrs(tmp_path / "out" / "subj01_c_ventral.h5")["transfer"])
    weights = [record["references"][r]["weight"] for r in ("2", "3")]
    assert record["decoder"] == "transfer+own" and abs(sum(weights) - 1) < 1e-9 and record["own"]["trials"] > 0


# ---------------------------------------------------------------------------------- bad input
def _break_missing_reference(root: Path) -> dict:
    return {"reference_subjects": [2, 3, 7]}


def _break_no_decoder(root: Path) -> dict:
    shutil.copytree(root / "refs", root / "refs_nodec")
    (root / "refs_nodec" / "subj03" / "decoders" / "subj03_c_ventral.h5").unlink()
    return {"reference_run": "refs_nodec"}


def _break_other_roi(root: Path) -> dict:
    shutil.copytree(root / "refs", root / "refs_roi")
    folder = root / "refs_roi" / "subj03" / "decoders"
    (folder / "subj03_c_ventral.h5").rename(folder / "subj03_c_early.h5")
    return {"reference_run": "refs_roi"}


def _break_other_features(root: Path) -> dict:
    shutil.copytree(root / "refs", root / "refs_features")
    path = root / "refs_features" / "subj02" / "decoders" / "subj02_z_early.h5"
    decoder = DecoderFile.read(path, load_weights=True)
    n = decoder.coef.shape[1] // 2
    decoder.coef, decoder.intercept, decoder.alphas = decoder.coef[:, :n], decoder.intercept[:n], decoder.alphas[:n]
    decoder.cv_score, decoder.test_corr = decoder.cv_score[:n], decoder.test_corr[:n]
    decoder.test_pred = decoder.test_pred.reshape(len(decoder.test_pred), -1)[:, :n]
    decoder.write(path)
    return {"reference_run": "refs_features"}


BAD = [
    ("reference absent from the tree", _break_missing_reference, ["reference subject 7", "subj07", "not found"]),
    ("reference without a fitted decoder", _break_no_decoder, ["subj03_c_ventral.h5", "no decoder is fitted"]),
    ("reference fitted from another ROI", _break_other_roi, ["subj03_c_early.h5", "another ROI"]),
    ("reference fitted on other features", _break_other_features, ["subj02_z_early.h5", "other features"]),
    ("more sessions than on disk", lambda root: {"sessions": 3}, ["sessions = 3", "2 session(s)"]),
    ("too few shared images", lambda root: {"test_fraction": 0.05}, ["test_fraction = 0.05", "at least 4"]),
    ("new subject among the references", lambda root: {"reference_subjects": [1, 2]}, ["holds the new subject"]),
    ("sessions neither a count nor all", lambda root: {"sessions": "some"}, ["sessions = 'some'", "'all'"]),
]


@pytest.mark.parametrize("name, breakage, words", BAD, ids=[b[0] for b in BAD])
def test_bad_transfer_input_is_one_line_and_writes_no_decoder(cohort, capsys, name, breakage, words):
    folder = "bad_" + name.replace(" ", "_")
    config = _transfer_config(cohort, folder, **breakage(cohort))
    assert main(["--no-progress", "run", str(config)]) == 2
    line = one_error_line(capsys)
    assert all(word in line for word in words), line
    assert not list((cohort / folder).glob("decoders/*.h5")) and not (cohort / folder / "transfer").exists()


def test_transfer_curve_command_runs_the_references_then_every_point(cohort, tmp_path):
    """``brain2image transfer-curve``: the new subject's prepare/features into the reference run, then the points."""
    config = _transfer_config(cohort, "curve_config")
    refs = tmp_path / "refs"
    shutil.copytree(cohort / "refs", refs)  # the references done; subject 1 is prepared there by the curve
    argv = ["--no-progress", "transfer-curve", str(config), "--out", str(tmp_path / "curve"), "--sessions", "1", "all",
            "--reference-run", str(refs)]
    assert main(argv) == 0
    assert (refs / "subj01" / "prepared" / "subj01.h5").is_file()
    table = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert [(p["sessions"], p["decoder"]) for p in table["points"]] == [("1", "own"), ("1", "transfer"),
                                                                         ("all", "own"), ("all", "transfer")]
    assert table["n_test"] == 20 and "<img" in (tmp_path / "curve" / "report.html").read_text()


def test_a_folder_keeps_the_method_its_decoders_were_made_with(cohort, capsys):
    """Resuming a transfer run without [transfer], or a fitted run with it, is one line, not a silent mix."""
    plain = cohort / "plain.toml"
    plain.write_text('out_dir = "transfer"\nsubject = 1\n' + _base(cohort / "study" / "nsd", cohort / "tiny_model"))
    before = (cohort / "transfer" / "decoders" / "subj01_z_early.h5").read_bytes()
    assert main(["--no-progress", "run", str(plain)]) == 2
    line = one_error_line(capsys)
    assert "written by the transfer stage" in line and "--redo fit" in line, line
    assert (cohort / "transfer" / "decoders" / "subj01_z_early.h5").read_bytes() == before
    fitted = cohort / "fitted_plain.toml"
    fitted.write_text('out_dir = "fitted"\nsubject = 1\n' + _base(cohort / "study" / "nsd", cohort / "tiny_model"))
    run_pipeline(load_run_config(fitted), progress=False, stages=["prepare", "features", "fit"])
    config = _transfer_config(cohort, "fitted")
    assert main(["--no-progress", "run", str(config)]) == 2
    line = one_error_line(capsys)
    assert "fitted by the fit stage" in line and "--redo transfer" in line, line
    assert not (cohort / "fitted" / "transfer").exists()
