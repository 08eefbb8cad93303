"""Top-1 image and brain retrieval (MindEye's protocol) and its place in evaluation.json, metrics.json, the report."""

import dataclasses
import html
import json
from html.parser import HTMLParser

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brain2image.config import DecoderConfig, EvaluationConfig, ReportConfig, RunConfig, config_to_dict
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError
from brain2image.evaluation import retrieval_accuracy
from brain2image.evaluation.evaluate import evaluate_recon_dir
from brain2image.evaluation.retrieval import candidate_draws, cosine_similarity
from brain2image.formats.decoder_file import DecoderFile
from brain2image.formats.feature_store import FeatureStore
from brain2image.formats.run_layout import RUN_FILES
from brain2image.report import BRAIN_CORRELATION_NOTE
from brain2image.sources import stimuli_of
from brain2image.stages import StageContext, get_stage
from brain2image.stages.report import collect_metrics


# ---------------------------------------------------------------------------------- the pure functions
def test_identity_is_retrieved_perfectly():
    true = np.random.default_rng(0).normal(size=(50, 2, 3))
    result = retrieval_accuracy(true.copy(), true, n_candidates=20, n_draws=5, seed=3)
    assert result == {"image": 1.0, "brain": 1.0, "chance": 1 / 20, "n_candidates": 20, "n_draws": 5,
                      "n_images": 50, "seed": 3}


def test_unrelated_features_score_near_chance():
    rng = np.random.default_rng(1)
    result = retrieval_accuracy(rng.normal(size=(400, 16)), rng.normal(size=(400, 16)))
    assert (result["n_candidates"], result["n_draws"], result["chance"]) == (300, 30, 1 / 300)
    for direction in ("image", "brain"):
        assert 0.0 <= result[direction] <= 4 * result["chance"], direction


def test_shuffled_rows_are_never_retrieved():
    true = np.random.default_rng(2).normal(size=(12, 5))
    result = retrieval_accuracy(np.roll(true, 1, axis=0), true, n_candidates=300)
    assert result["image"] == 0.0 and result["brain"] == 0.0


def test_hand_computed_three_images():
    true = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    decoded = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.2]])
    similarity = cosine_similarity(decoded, true)
    s = np.sqrt(0.5)
    d2 = np.array([1.0, 0.2]) / np.hypot(1.0, 0.2)
    expected = np.array([[1, 0, s], [0, 1, s], [d2[0], d2[1], (d2[0] + d2[1]) * s]])
    np.testing.assert_allclose(similarity, expected, atol=1e-6)
    # Rows (brain -> image): the third decoded vector is closer to image 0 (0.98) than to its own (0.83).
    # Columns (image -> brain): every true vector's own decoded vector is its closest (1, 1, 0.83 > 0.71).
    result = retrieval_accuracy(decoded, true)
    assert result["image"] == pytest.approx(2 / 3) and result["brain"] == 1.0
    assert (result["n_candidates"], result["n_draws"], result["chance"]) == (3, 1, pytest.approx(1 / 3))


def test_ties_count_as_misses():
    decoded = np.random.default_rng(3).normal(size=(6, 4))
    result = retrieval_accuracy(decoded, np.ones((6, 4)))  # every true vector alike: each row ties
    assert result["image"] == 0.0 and result["brain"] == pytest.approx(1 / 6)


def test_draws_are_seeded_without_replacement():
    first, again, other = (candidate_draws(100, 20, 7, seed) for seed in (5, 5, 6))
    assert first.shape == (7, 20)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert all(len(set(row)) == 20 for row in first.tolist()) and first.min() >= 0 and first.max() < 100
    rng = np.random.default_rng(4)
    true = rng.normal(size=(100, 8))
    decoded = true + rng.normal(scale=1.5, size=true.shape)
    assert retrieval_accuracy(decoded, true, 20, 7, 5) == retrieval_accuracy(decoded, true, 20, 7, 5)
    assert retrieval_accuracy(decoded, true, 20, 7, 5) != retrieval_accuracy(decoded, true, 20, 7, 6)


@pytest.mark.parametrize("n_images", [30, 300])
def test_at_most_n_candidates_images_use_all_in_one_draw(n_images):
    true = np.random.default_rng(5).normal(size=(n_images, 3))
    result = retrieval_accuracy(true, true, n_candidates=300, n_draws=30)
    assert (result["n_candidates"], result["n_draws"], result["n_images"]) == (n_images, 1, n_images)
    assert result["chance"] == 1 / n_images
    np.testing.assert_array_equal(candidate_draws(n_images, 300, 30, 0), np.arange(n_images)[None])


@pytest.mark.parametrize(("decoded", "true", "error", "match"), [
    (np.ones((4, 3)), np.ones((4, 2)), InvalidArgumentError, "field 'decoded' has shape \\(4, 3\\); expected"),
    (np.ones((1, 3)), np.ones((1, 3)), InvalidArgumentError, "field 'n_images' is 1; expected at least 2"),
    (np.ones(3), np.ones(3), InvalidArgumentError, "field 'decoded' has shape \\(3,\\); expected \\(n_images"),
    (np.array([[1.0, np.nan], [1.0, 2.0]]), np.ones((2, 2)), DataFormatError, "field 'decoded' has NaN"),
    (np.ones((2, 2)), np.array([[0.0, 0.0], [1.0, 2.0]]), DataFormatError, "field 'true' has all-zero vectors"),
])
def test_bad_inputs_name_the_field(decoded, true, error, match):
    with pytest.raises(error, match=match):
        retrieval_accuracy(decoded, true)


def test_bad_protocol_names_the_field():
    true = np.eye(4)
    with pytest.raises(InvalidArgumentError, match="field 'n_candidates' is 1; expected an integer ≥ 2"):
        retrieval_accuracy(true, true, n_candidates=1)
    with pytest.raises(InvalidArgumentError, match="field 'n_draws' is 0; expected an integer ≥ 1"):
        retrieval_accuracy(true, true, n_draws=0)


def test_default_settings_are_mindeyes_protocol():
    config = EvaluationConfig()
    assert (config.retrieval_candidates, config.retrieval_draws, config.retrieval_seed) == (300, 30, 0)


# ---------------------------------------------------------------------------------- in a run folder
TEST_IDS = np.array([17, 2, 9, 4, 11, 0])
STORE_IDS = np.arange(20)
METHODS = ("z_only", "z_plus_c")


def _features(seed, shape):
    return np.random.default_rng(seed).normal(size=(len(STORE_IDS), *shape)).astype(np.float32)


def _write_store(path, feature, values):
    store = FeatureStore.create(path, STORE_IDS, values.shape[1:],
                                {"feature": feature, "model": "bundled", "resolution": 8, "seed": 0})
    store.write(STORE_IDS, values)
    store.finalize()


def _write_decoder(path, target, roi, pred):
    n_targets = int(np.prod(pred.shape[1:]))
    DecoderFile(test_ids=TEST_IDS, test_pred=pred, test_corr=np.zeros(n_targets), alphas=np.ones(n_targets),
                cv_score=np.zeros(n_targets), config=DecoderConfig(alphas=[1.0]), coef=np.zeros((3, n_targets)),
                intercept=np.zeros(n_targets), x_mean=np.zeros(3), x_std=np.ones(3),
                attrs={"roi": roi, "target": target, "subject": 1}).write(path)


def _write_recon_and_stimuli(root, run):
    rng = np.random.default_rng(7)
    brick = rng.integers(0, 256, (len(STORE_IDS), 32, 32, 3), np.uint8)
    stim = root / "nsd" / "nsddata_stimuli" / "stimuli" / "nsd"
    stim.mkdir(parents=True)
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = brick
    rows = []
    for method in METHODS:
        (run / "recon" / method).mkdir(parents=True)
        for test_id in TEST_IDS:
            for sample in range(2):
                path = f"{method}/{test_id}_{sample}.png"
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(run / "recon" / path)
                rows.append((int(test_id), method, sample, sample, path))
    pd.DataFrame(rows, columns=["test_id", "method", "sample", "seed", "path"]).to_csv(
        run / "recon" / "index.csv", index=False)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with what evaluate and report read: z decoded perfectly, c decoded for the wrong image."""
    root = tmp_path_factory.mktemp("retrieval")
    config = RunConfig(nsd_root=str(root / "nsd"), out_dir=str(root / "run"), report=ReportConfig(n_images=2))
    layout = StageContext(config).layout
    z, c = _features(0, (2, 3, 3)), _features(1, (4, 5))
    _write_store(layout.feature_store("z"), "z", z)
    _write_store(layout.feature_store("c"), "c", c)
    rois = config.decoder.targets
    _write_decoder(layout.decoder("z", rois["z"]), "z", rois["z"], z[TEST_IDS])
    _write_decoder(layout.decoder("c", rois["c"]), "c", rois["c"], c[np.roll(TEST_IDS, 1)])
    _write_recon_and_stimuli(root, layout.root)
    (layout.root / "run_config.json").write_text(json.dumps(config_to_dict(config)))
    get_stage("evaluate").run(StageContext(config, progress=False))
    return root, config


def test_evaluate_stage_writes_retrieval_of_z_and_c(run_folder):
    root, config = run_folder
    evaluation = json.loads((root / "run" / "evaluation.json").read_text())
    expected = {"chance": 1 / 6, "n_candidates": 6, "n_draws": 1, "n_images": 6, "seed": 0}
    assert evaluation["retrieval"] == {"z": {"image": 1.0, "brain": 1.0, **expected},
                                       "c": {"image": 0.0, "brain": 0.0, **expected}}


def test_evaluate_stage_output_is_otherwise_unchanged(run_folder):
    root, config = run_folder
    text = (root / "run" / "evaluation.json").read_text()
    alone = evaluate_recon_dir(root / "run" / "recon", stimuli_of(config), root / "alone.json")
    assert "retrieval" not in alone
    written = json.loads(text)
    del written["retrieval"]
    assert json.dumps(written, indent=2) == (root / "alone.json").read_text()


def test_evaluate_stage_needs_the_decoders_in_a_run(run_folder, tmp_path):
    root, config = run_folder
    bare = dataclasses.replace(config, out_dir=str(tmp_path / "bare"))
    with pytest.raises(MissingFileError, match="subj01_z_early.h5 not found"):
        get_stage("evaluate").run(StageContext(bare, progress=False))
    assert not (tmp_path / "bare" / "evaluation.json").exists()


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.alts = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.alts.append(dict(attrs).get("alt") or "")


def _report(root, config):
    get_stage("report").run(StageContext(config, progress=False))
    page = (root / "run" / "report.html").read_text()
    images = _Images()
    images.feed(page)
    assert images.alts and all(alt.strip() for alt in images.alts)
    return json.loads((root / "run" / "metrics.json").read_text()), page


def test_report_shows_retrieval_and_brain_correlation_only_when_present(run_folder):
    root, config = run_folder
    path = root / "run" / RUN_FILES["brain_correlation"]
    path.unlink(missing_ok=True)
    metrics, page = _report(root, config)
    assert metrics["retrieval"]["z"]["image"] == 1.0 and "brain_correlation" not in metrics
    assert "Retrieval (top-1, 6-way)" in page and "among all 6 test images (one draw" in page
    assert "100.0%" in page and "16.67%" in page
    assert "Brain correlation" not in page
    correlation = {"space": "z", "rois": ["early", "ventral"], "n_images": 6, "n_samples": 2,
                   "methods": {"seen": {"early": 0.75, "ventral": 0.625}, "z_plus_c": {"early": 0.25, "ventral": 0.125},
                               "z_only": {"early": 0.5, "ventral": None}}}
    path.write_text(json.dumps(correlation))
    try:
        metrics, page = _report(root, config)
        assert collect_metrics(StageContext(config))["brain_correlation"] == correlation
    finally:
        path.unlink()
    assert metrics["brain_correlation"] == correlation
    assert "Brain correlation (encoding model of z)" in page and html.escape(BRAIN_CORRELATION_NOTE) in page
    table = page.split("Brain correlation (encoding model of z)")[1]
    assert table.index("z only") < table.index("z + c") < table.index("seen images (ceiling)")
    assert "<td>0.750</td><td>0.625</td>" in table
    assert "<td>0.500</td><td class=\"note\">–</td>" in table and "<td>0.250</td><td>0.125</td>" in table


def test_a_broken_brain_correlation_file_is_named(run_folder):
    root, config = run_folder
    path = root / "run" / RUN_FILES["brain_correlation"]
    for text, match in (("{", "not valid JSON"), ('{"space": "z"}', "field 'methods' is missing")):
        path.write_text(text)
        try:
            with pytest.raises(DataFormatError, match=match):
                collect_metrics(StageContext(config))
        finally:
            path.unlink()
