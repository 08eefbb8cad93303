"""The HTML report: alt text, the reconstruction grid's layout, the scene-evaluator caveat, map captions."""

import json
import re
from html.parser import HTMLParser

import h5py
import numpy as np
import pandas as pd
import pytest
from method_plugins import HalfStrength, methods_registered
from PIL import Image

from brain2image.encoding.maps import axial_slice_indices, plot_volume_map, save_volume_map, volume_image
from brain2image.evaluation.evaluate import FULL_SPACES
from brain2image.report import SCENE_EVALUATOR_CAVEAT, render_report
from brain2image.stages.report import build_report

IDS = (3, 1, 4)
N_SAMPLES = 3
METHODS = ("z_only", "c_only", "z_plus_c")


class _Page(HTMLParser):
    """The images (attributes), the grid's header cells and its body rows (cells per row) of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.grid_heads, self.grid_rows = [], [], []
        self._in_grid = self._in_body = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self._in_grid = attrs.get("class") == "grid"
        elif tag == "tbody" and self._in_grid:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.grid_rows.append(0)
        elif tag == "td" and self._in_body:
            self.grid_rows[-1] += 1
        elif tag == "th" and self._in_grid:
            self.grid_heads.append(attrs)

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_grid = self._in_body = False


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _recon_folder(root):
    """Reconstructions of IDS by METHODS, N_SAMPLES each, plus the images seen."""
    rng = np.random.default_rng(0)
    rows = []
    for method in METHODS:
        (root / method).mkdir(parents=True)
        for test_id in IDS:
            for sample in range(N_SAMPLES):
                path = f"{method}/{test_id}_{sample}.png"
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / path)
                rows.append((test_id, method, sample, 100 + sample, path))
    index = pd.DataFrame(rows, columns=["test_id", "method", "sample", "seed", "path"])
    seen = {i: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in IDS}
    return index, seen


def _page(tmp_path, **kwargs):
    index, seen = _recon_folder(tmp_path / "recon")
    kwargs = {"metrics": {"z_only": {"pixcorr": 0.1, "id_semantic": 0.6}}, **kwargs}
    return render_report(title="t", seen=seen, recon_index=index, recon_root=tmp_path / "recon", decoding={},
                         config={"model": "bundled"}, timings={}, thumb=32, **kwargs)


def test_every_image_has_alt_text_and_z_only_is_shown_once(tmp_path):
    page = _parse(_page(tmp_path))
    assert page.images and all((img.get("alt") or "").strip() for img in page.images)
    alts = [img["alt"] for img in page.images]
    for test_id in IDS:
        assert alts.count(f"ground truth, test image 73k id {test_id}") == 1
        assert sum(a.startswith("z only") and a.endswith(f"73k id {test_id}") for a in alts) == 1
        assert f"z + c reconstruction, sample 2 of {N_SAMPLES} of test image 73k id {test_id}" in alts
    assert sum(a.startswith("c only") for a in alts) == len(IDS) * N_SAMPLES


def test_grid_has_fixed_columns_that_never_wrap(tmp_path):
    text = _page(tmp_path)
    page = _parse(text)
    columns = 2 + 1 + 2 * N_SAMPLES  # id, ground truth, z only once, the samples of c only and z + c
    assert page.grid_rows == [columns] * len(IDS)
    spans = {h.get("colspan") for h in page.grid_heads if h.get("class") == "method"}
    assert spans == {None, str(N_SAMPLES)}
    assert "deterministic: one image" in text
    css = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    assert re.search(r"\.gridwrap\{[^}]*overflow-x:auto", css)
    assert re.search(r"table\.grid\{[^}]*white-space:nowrap", css)
    assert re.search(r"\.grid th\{[^}]*text-align:center|\.grid td,\.grid th\{[^}]*text-align:center", css)
    assert '<div class="gridwrap"><table class="grid">' in text


class _TrueHalfStrength(HalfStrength):
    name = "oracle_half"
    label = "oracle at strength 0.5"
    true_features = True


def test_a_registered_method_shows_with_its_label_after_the_builtins(tmp_path):
    metrics = {"z_plus_c_half": {"pixcorr": 0.9}, "unregistered": {"pixcorr": 0.2}, "oracle_half": {"pixcorr": 1.0},
               "c_only": {"pixcorr": 0.3}}
    with methods_registered(HalfStrength, _TrueHalfStrength):
        text = _page(tmp_path, metrics=metrics)
    table = text[text.index("<h2>Metrics</h2>"):]
    rows = re.findall(r'<tr><td class="l">([^<]*)</td><td( class="best")?>', table)
    assert rows == [("c only", ""), ("z + c (strength 0.5)", ' class="best"'), ("oracle at strength 0.5", ""),
                    ("unregistered", "")]


def test_scene_evaluator_caveat_only_for_the_embedded_metric_set(tmp_path):
    assert SCENE_EVALUATOR_CAVEAT[:40] in _page(tmp_path / "a", feature_spaces=["pixel", "scene"])
    assert SCENE_EVALUATOR_CAVEAT[:40] not in _page(tmp_path / "b", feature_spaces=list(FULL_SPACES))
    assert SCENE_EVALUATOR_CAVEAT[:40] not in _page(tmp_path / "c")


def _run_folder(root, evaluation):
    """A run folder with what build_report reads: config, metrics, evaluation, reconstructions, stimuli."""
    stim = root / "nsd" / "nsddata_stimuli" / "stimuli" / "nsd"
    stim.mkdir(parents=True)
    index, seen = _recon_folder(root / "run" / "recon")
    brick = np.zeros((max(IDS) + 1, 16, 16, 3), np.uint8)
    for test_id, image in seen.items():
        brick[test_id] = image
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = brick
    run = root / "run"
    index.to_csv(run / "recon" / "index.csv", index=False)
    config = {"model": "bundled", "nsd_root": str(root / "nsd"), "subject": 1, "report": {"n_images": 2}}
    (run / "run_config.json").write_text(json.dumps(config))
    metrics = {m: {"pixcorr": 0.1, "id_semantic": 0.6} for m in METHODS} | {"brain2image_version": "0"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    return run


@pytest.mark.parametrize(("evaluation", "caveat"), [
    ({"metric_set": "embedded"}, True),
    ({"metric_set": "full"}, False),
    ({"feature_spaces": ["pixel", "scene"]}, True),
    ({"feature_spaces": list(FULL_SPACES)}, False),
])
def test_report_of_a_run_folder_says_the_caveat_from_its_evaluation(tmp_path, evaluation, caveat):
    text = build_report(_run_folder(tmp_path, evaluation)).read_text()
    assert (SCENE_EVALUATOR_CAVEAT[:40] in text) is caveat
    page = _parse(text)
    assert page.grid_rows == [2 + 1 + 2 * N_SAMPLES] * 2  # n_images = 2 from the run config
    assert all((img.get("alt") or "").strip() for img in page.images)


def test_encoding_maps_have_captions_slice_labels_and_colour_bar_units(tmp_path):
    import matplotlib.pyplot as plt

    ijk = np.array([[0, 1, 1], [2, 0, 3], [1, 2, 4]])
    values = np.array([0.02, -0.01, 0.05])
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    maps = tmp_path / "maps"
    save_volume_map(values, ijk, (3, 3, 5), affine, maps / "unique_c_vs_z.nii.gz")
    fig = plot_volume_map(volume_image(values, ijk, (3, 3, 5), affine), title="unique_c_vs_z")
    labels = {ax.get_ylabel() for ax in fig.axes} | {ax.get_xlabel() for ax in fig.axes}
    assert "unique variance (signed R², test)" in labels
    assert sorted(ax.get_title() for ax in fig.axes if ax.get_title()) == ["z=1", "z=3", "z=4"]
    fig.savefig(maps / "unique_c_vs_z.png", dpi=40)
    plt.close(fig)
    np.testing.assert_array_equal(axial_slice_indices(volume_image(values, ijk, (3, 3, 5), affine).get_fdata()),
                                  [1, 3, 4])
    text = _page(tmp_path, encoding_summary={"z": {"early": 0.3}}, encoding_figures=[maps / "unique_c_vs_z.png"])
    alts = [img["alt"] for img in _parse(text).images]
    assert "encoding map: unique variance of c vs z, axial slices z=1, 3, 4" in alts
    assert "variance partitioning" in text and "explains beyond z" in text
