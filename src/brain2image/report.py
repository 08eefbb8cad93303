"""One self-contained HTML page that shows a run: pictures first, then the numbers.

The page embeds every image as a base64 PNG, so it can be mailed or archived as one file.
Sections: reconstructions (a fixed-column grid, one row per test image: ground truth, one z only
image as it is deterministic, then every sample of the other methods; scrolled sideways, never
wrapped), the metric table per method (with a caveat when the semantic scores come from the
embedded scene evaluator), the decoders' top-1 retrieval in z and c, the reconstructions'
brain correlation per ROI (when the run has it), decoding accuracy per ROI and target, the encoding analysis (maps
with captions, and ROI summary, when present), the run's configuration and the stage timings.
Every image carries alt text saying what it shows. A run made
with a ``random:`` model (seeded random weights) carries a banner saying so, and a warning when
its NSD root holds real data.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ._io import atomic_write_text
from .ldm.random_model import RANDOM_WEIGHTS_LABEL, random_weights_marking
from .methods import get_method, method_label, method_names
from .sources import stimuli_of_record

__all__ = ["write_report", "render_report", "uses_scene_evaluator", "METRIC_LABELS", "SCENE_EVALUATOR_CAVEAT",
           "BRAIN_CORRELATION_NOTE"]

#: Human-readable column names of the metric table, with the direction of "better".
METRIC_LABELS = {
    "pixcorr": "PixCorr ↑",
    "ssim": "SSIM ↑",
    "id_pixel": "2-way id, pixels ↑",
    "id_semantic": "2-way id, semantic ↑",
    "takagi_pixel": "Takagi id, pixels ↑",
    "takagi_semantic": "Takagi id, semantic ↑",
    "id_alexnet2": "AlexNet(2) ↑",
    "id_alexnet5": "AlexNet(5) ↑",
    "id_inception": "InceptionV3 ↑",
    "id_clip": "CLIP ↑",
    "dist_effnet": "EffNet-B ↓",
    "dist_swav": "SwAV ↓",
    "takagi_alexnet_features5": "Takagi AlexNet features.5 ↑",
    "takagi_alexnet_features12": "Takagi AlexNet features.12 ↑",
    "takagi_alexnet_classifier5": "Takagi AlexNet classifier.5 ↑",
    "takagi_inception": "Takagi InceptionV3 ↑",
    "takagi_clip": "Takagi CLIP ↑",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4;text-align:center} td.l,th.l{text-align:left}
.gridwrap{overflow-x:auto;max-width:100%;padding-bottom:.3em}
table.grid{white-space:nowrap;table-layout:fixed;border-collapse:separate;border-spacing:2px}
.grid td,.grid th{white-space:nowrap;padding:0 1px;border:none;text-align:center;vertical-align:middle}
.grid th{background:none;font-weight:600;font-size:.85em} .grid th.method{border-bottom:2px solid #bbb}
.grid th.sample{font-weight:400;color:#666} .grid img{display:block;image-rendering:pixelated}
.grid td.gt{padding-right:.6em} .best{font-weight:700} .note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
.figs img{max-width:100%;border:1px solid #eee;margin:.3em 0} .figs figcaption{max-width:60em}
.warn{background:#fff3cd;border:1px solid #e0b400;padding:.5em .8em}
"""

#: Said beside the metric table when the semantic scores come from the embedded scene evaluator.
SCENE_EVALUATOR_CAVEAT = (
    "Caveat: the semantic scores (2-way id, semantic; Takagi id, semantic) are judged by the embedded scene "
    "evaluator, a small network trained on scenes from the same procedural scene generator that drew these "
    "stimuli. It reads exactly the content that generator draws, which favours the method: these scores are "
    "not comparable with published semantic metrics on real NSD images (metric set \"full\": AlexNet, "
    "InceptionV3, CLIP, EffNet-B, SwAV).")


def _png_data_uri(image: np.ndarray | Image.Image | Path, size: int | None = None) -> str:
    if isinstance(image, Path):
        image = Image.open(image)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        resample = Image.Resampling.NEAREST if image.size[0] < size else Image.Resampling.LANCZOS
        image = image.resize((size, size), resample)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img_tag(image: np.ndarray | Image.Image | Path, size: int | None, alt: str, title: str = "") -> str:
    """An ``<img>`` with the image embedded; ``alt`` (required, non-empty) says what it shows."""
    if not alt.strip():
        raise ValueError("an image of the report needs a non-empty alt text")
    dims = f' width="{size}" height="{size}"' if size is not None else ""
    tip = f' title="{html.escape(title)}"' if title else ""
    return f'<img src="{_png_data_uri(image, size)}"{dims} alt="{html.escape(alt)}"{tip}>'


def _shown_samples(recon_index: pd.DataFrame, method: str) -> list[int]:
    """Sample numbers shown for a method: all of them, or the first one of a deterministic method."""
    samples = sorted(int(s) for s in recon_index.loc[recon_index.method == method, "sample"].unique())
    return samples[:1] if _is_deterministic(method) else samples


def _is_deterministic(method: str) -> bool:
    """Whether a registered method gives the same image for every sample (no diffusion: ``z_only``, a VAE decoding)."""
    return method in method_names() and not get_method(method).uses_diffusion


def _from_true_features(method: str) -> bool:
    """Whether a registered method draws from the true features (the oracle: a ceiling, never "best")."""
    return method in method_names() and get_method(method).true_features


def _in_registry_order(names: Iterable[str]) -> list[str]:
    """The registered methods among ``names``, in registry order (the built-ins first, in their order)."""
    wanted = set(names)
    return [m for m in method_names() if m in wanted]


def _grid_header(columns: Sequence[tuple[str, list[int]]]) -> str:
    """The grid's two header rows: one cell per method spanning its samples, then the sample numbers."""
    top = ['<th rowspan="2">73k id</th><th rowspan="2">ground truth</th>']
    sub = []
    for method, samples in columns:
        label = html.escape(method_label(method))
        if _is_deterministic(method):
            top.append(f'<th class="method" rowspan="2">{label}<br><span class="note">deterministic: '
                       "one image</span></th>")
            continue
        top.append(f'<th class="method" colspan="{len(samples)}">{label}</th>')
        sub += [f'<th class="sample">sample {s + 1}</th>' for s in samples]
    return f"<thead><tr>{''.join(top)}</tr><tr>{''.join(sub)}</tr></thead>"


def _recon_cell(recon_index: pd.DataFrame, recon_root: Path, test_id: int, method: str, sample: int,
                n_samples: int, thumb: int) -> str:
    """One reconstruction's cell (a dash where the index has none)."""
    sel = recon_index[(recon_index.test_id == test_id) & (recon_index.method == method)
                      & (recon_index["sample"] == sample)]
    if sel.empty:
        return '<td class="note">–</td>'
    label = method_label(method)
    if _is_deterministic(method):
        alt = f"{label} reconstruction (deterministic, one image) of test image 73k id {test_id}"
    else:
        alt = f"{label} reconstruction, sample {sample + 1} of {n_samples} of test image 73k id {test_id}"
    seed = sel.seed.iloc[0]
    return f"<td>{_img_tag(recon_root / str(sel.path.iloc[0]), thumb, alt, f'{alt}, seed {seed}')}</td>"


def _grid_section(seen: Mapping[int, np.ndarray], recon_index: pd.DataFrame, recon_root: Path,
                  methods: Sequence[str], n_images: int, thumb: int) -> str:
    """The reconstruction grid: one row per test image, fixed columns, scrolled sideways when too wide."""
    columns = [(m, _shown_samples(recon_index, m)) for m in methods]
    n_samples = {m: int(recon_index.loc[recon_index.method == m, "sample"].nunique()) for m in methods}
    rows = []
    for test_id in list(seen)[:n_images]:
        cells = [f"<td>{test_id}</td>",
                 f'<td class="gt">{_img_tag(seen[test_id], thumb, f"ground truth, test image 73k id {test_id}")}</td>']
        for method, samples in columns:
            cells += [_recon_cell(recon_index, recon_root, test_id, method, s, n_samples[method], thumb)
                      for s in samples]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="gridwrap"><table class="grid">{_grid_header(columns)}<tbody>{"".join(rows)}</tbody>'
            "</table></div><p class=\"note\">One row per test image: the image the subject saw, then each "
            "method's samples. z only decodes the latent without noise, so its samples are identical and one "
            "is shown. Scroll sideways when the grid is wider than the page; hover for the seed.</p>")


def _metric_table(metrics: Mapping[str, Mapping[str, float]], feature_spaces: Sequence[str] | None = None) -> str:
    """The metric table per method, with the scene-evaluator caveat when ``feature_spaces`` has ``scene``."""
    methods = _in_registry_order(metrics) + [m for m in metrics if m not in method_names()]
    names = [k for k in METRIC_LABELS if any(k in metrics[m] for m in methods)]
    best = {}
    for name in names:
        values = {m: metrics[m][name] for m in methods if name in metrics[m] and not _from_true_features(m)}
        if values:
            pick = min if METRIC_LABELS[name].endswith("↓") else max
            best[name] = pick(values, key=lambda m: values[m])
    head = '<tr><th class="l">method</th>' + "".join(f"<th>{METRIC_LABELS[n]}</th>" for n in names) + "</tr>"
    body = []
    for method in methods:
        cells = []
        for name in names:
            value = metrics[method].get(name)
            percent = name.startswith(("id_", "takagi"))
            text = "–" if value is None else (f"{100 * value:.1f}%" if percent else f"{value:.3f}")
            cls = ' class="best"' if best.get(name) == method else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f'<tr><td class="l">{html.escape(method_label(method))}</td>{"".join(cells)}</tr>')
    return (f"<table>{head}{''.join(body)}</table>"
            '<p class="note">Bold: best decoded method per column (the oracle, from the true z and c, '
            "is the ceiling). Identification is two-way: chance is 50%.</p>"
            + (f'<p class="warn">{html.escape(SCENE_EVALUATOR_CAVEAT)}</p>' if uses_scene_evaluator(feature_spaces)
               else ""))


def uses_scene_evaluator(feature_spaces: Sequence[str] | None) -> bool:
    """Whether an evaluation's feature spaces include the embedded scene evaluator (``scene``)."""
    return bool(feature_spaces) and "scene" in list(feature_spaces or ())


def _retrieval_protocol(retrieval: Mapping[str, Mapping[str, float]]) -> tuple[str, str]:
    """The table's way count (``300-way``, or ``n-way`` when the spaces differ) and the protocol sentence."""
    sizes = {(int(r["n_candidates"]), int(r["n_draws"]), int(r.get("n_images", 0))) for r in retrieval.values()}
    if len(sizes) != 1:
        return "n-way", ("Top-1 retrieval among test images drawn at random without replacement (set sizes and "
                         "draws per space in the table); cosine similarity of flattened feature vectors.")
    n, draws, n_images = sizes.pop()
    how = (f"among {n} test images drawn at random without replacement, averaged over {draws} seeded draws"
           if n < n_images else f"among all {n} test images (one draw; fewer than MindEye's 300, so not "
           "comparable with the 300-way figure)")
    return f"{n}-way", (
        f"Top-1 retrieval (MindEye's protocol) {how}: image retrieval counts a decoded feature vector (from "
        "fMRI) as correct when the true vector of its own image is the most similar (cosine) of the set; "
        "brain retrieval is the transpose (each true vector finds its own decoded vector). Ties count as "
        "misses. It measures the decoders, so it is the same for every reconstruction method.")


def _retrieval_section(retrieval: Mapping[str, Mapping[str, float]]) -> str:
    """``Retrieval (top-1, n-way)``: image and brain retrieval per decoded space, chance, the protocol."""
    ways, protocol = _retrieval_protocol(retrieval)
    head = ('<tr><th class="l">decoded space</th><th>image retrieval (brain → image) ↑</th>'
            "<th>brain retrieval (image → brain) ↑</th><th>chance</th><th>images per draw</th><th>draws</th></tr>")
    rows = "".join(
        f'<tr><td class="l">{html.escape(space)}</td><td>{100 * r["image"]:.1f}%</td>'
        f'<td>{100 * r["brain"]:.1f}%</td><td>{100 * r["chance"]:.2f}%</td><td>{int(r["n_candidates"])}</td>'
        f'<td>{int(r["n_draws"])}</td></tr>' for space, r in retrieval.items())
    return (f"<h2>Retrieval (top-1, {ways})</h2><table>{head}{rows}</table>"
            f'<p class="note">{html.escape(protocol)}</p>')


#: The sentence under the brain-correlation table.
BRAIN_CORRELATION_NOTE = (
    "Each reconstruction passed through the subject's encoding model of z; Pearson r between the predicted and "
    "the measured test response, per ROI, mean over images.")

#: Row label of the seen images' own z in the brain-correlation table (the ceiling).
_SEEN_LABEL = "seen images (ceiling)"


def _correlation_cell(value: float | None) -> str:
    """A mean r with three decimals, or a dash where there is none."""
    return '<td class="note">–</td>' if value is None else f"<td>{value:.3f}</td>"


def _brain_correlation_section(brain_correlation: Mapping) -> str:
    """``Brain correlation``: mean r per method (rows, the seen images last) and ROI (columns)."""
    per_method: Mapping[str, Mapping[str, float | None]] = brain_correlation.get("methods", {})
    rois = list(brain_correlation.get("rois") or sorted({roi for v in per_method.values() for roi in v}))
    methods = _in_registry_order(per_method) + sorted(
        m for m in per_method if m not in method_names() and m != "seen") + (["seen"] if "seen" in per_method else [])
    head = '<tr><th class="l">method</th>' + "".join(f"<th>{html.escape(str(r))}</th>" for r in rois) + "</tr>"
    rows = "".join(
        f'<tr><td class="l">{html.escape(_SEEN_LABEL if m == "seen" else method_label(m))}</td>'
        + "".join(_correlation_cell(per_method[m].get(r)) for r in rois) + "</tr>" for m in methods)
    space = html.escape(str(brain_correlation.get("space", "z")))
    return (f"<h2>Brain correlation (encoding model of {space})</h2><table>{head}{rows}</table>"
            f'<p class="note">{html.escape(BRAIN_CORRELATION_NOTE)}</p>')


def _decoding_table(decoding: Mapping[str, Mapping[str, float]]) -> str:
    head = ('<tr><th class="l">target ← ROI</th><th>voxels</th><th>targets</th><th>mean r</th><th>median r</th>'
            '<th>share r&gt;0.1</th><th>median α</th></tr>')
    rows = []
    for key, d in decoding.items():
        rows.append(f'<tr><td class="l">{html.escape(key)}</td><td>{d.get("n_voxels", "–")}</td>'
                    f'<td>{d.get("n_targets", "–")}</td><td>{d.get("mean_r", float("nan")):.3f}</td>'
                    f'<td>{d.get("median_r", float("nan")):.3f}</td>'
                    f'<td>{100 * d.get("frac_r_above_0.1", float("nan")):.0f}%</td>'
                    f'<td>{d.get("median_alpha", float("nan")):.3g}</td></tr>')
    return (f"<table>{head}{''.join(rows)}</table>"
            '<p class="note">Pearson r between decoded and true features over the test images, per target.</p>')


def _figure_text(path: Path) -> tuple[str, str, str]:
    """Heading, caption and alt text of an encoding figure, from its file name (and its NIfTI twin)."""
    from .encoding.maps import axial_slice_indices, describe_map

    if path.stem == "roi_summary":
        return ("ROI summary", "Mean test-set Pearson r of each feature space's encoding model, per ROI (one bar "
                "per feature space). Higher bars: that ROI's responses are better predicted by that space.",
                "bar chart: mean encoding accuracy (Pearson r, test) per ROI and feature space")
    description = describe_map(path.stem)
    if description is None:
        name = path.stem.replace("_", " ")
        return name, "", f"encoding figure: {name}"
    volume = path.with_name(f"{path.stem}.nii.gz")
    if volume.is_file():
        import nibabel as nib

        slices = axial_slice_indices(nib.Nifti1Image.from_filename(volume).get_fdata())
        where = "axial slices z=" + ", ".join(str(int(k)) for k in slices)
        how = " Slices are axial, labelled with their voxel index z along the volume's third axis."
    else:
        where, how = "fsaverage5 inflated surface, ventral view, both hemispheres", ""
    return description.title, description.caption + how, f"encoding map: {description.subject}, {where}"


def _figures(paths: Sequence[Path]) -> str:
    """The encoding figures, each with a heading, alt text and a caption saying how to read it."""
    parts = []
    for path in paths:
        heading, caption, alt = _figure_text(path)
        parts.append(f"<figure><b>{html.escape(heading)}</b><br>{_img_tag(path, None, alt)}"
                     f"<figcaption class=\"note\">{html.escape(caption)}</figcaption></figure>")
    return '<div class="figs">' + "".join(parts) + "</div>"


_ENCODING_INTRO = (
    "Maps, per voxel: <i>r_&lt;space&gt;</i> is the test-set Pearson r of the encoding model of one feature "
    "space; <i>unique a vs b</i> (e.g. unique c vs z) is the variance that space a explains beyond space b, "
    "from banded ridge variance partitioning: R² of the joint model of a and b minus R² of b alone "
    "(signed R² = r·|r| on the test images). Red: positive, blue: negative, white: near 0.")


def _weights_banner(config: Mapping) -> str:
    """Banner of a run made with a ``random:`` model (plus its warnings on real NSD data); "" otherwise."""
    marking = random_weights_marking(config.get("model"), stimuli_of_record(config))
    if not marking:
        return ""
    model = html.escape(str(config.get("model")))
    parts = [f"<p class='warn'><b>{RANDOM_WEIGHTS_LABEL}</b>: model {model} has seeded random weights; the images "
             "and metrics below measure shapes, memory and time only, not reconstruction quality.</p>"]
    parts += [f"<p class='warn'><b>warning</b>: {html.escape(w)}</p>" for w in marking.get("warnings", [])]
    return "".join(parts)


def render_report(*, title: str, seen: Mapping[int, np.ndarray], recon_index: pd.DataFrame,
                  recon_root: Path, metrics: Mapping[str, Mapping[str, float]],
                  decoding: Mapping[str, Mapping[str, float]], config: Mapping,
                  timings: Mapping[str, float], encoding_summary: Mapping | None = None,
                  encoding_figures: Sequence[Path] = (), notes: Sequence[str] = (),
                  feature_spaces: Sequence[str] | None = None, n_images: int = 8, thumb: int = 128,
                  retrieval: Mapping[str, Mapping[str, float]] | None = None,
                  brain_correlation: Mapping | None = None) -> str:
    """Render the report page as an HTML string.

    Parameters
    ----------
    title : str
    seen : mapping of int to ndarray of shape (H, W, 3)
        The images the subject saw, by 73k id, in display order.
    recon_index : DataFrame
        Reconstruction index (columns ``test_id, method, sample, seed, path``).
    recon_root : Path
        Folder the index's paths are relative to.
    metrics : mapping
        ``{method: {metric: value}}``.
    decoding : mapping
        ``{"z ← early": {"mean_r": ..., ...}}``.
    config, timings : mapping
        The run's configuration and each stage's wall time in seconds. A ``random:`` ``model``
        adds a "random weights" banner (and a warning when the run's source (``nsd_root``) is real data).
    encoding_summary : mapping, optional
        ``{feature_space: {roi: mean r}}`` of the encoding analysis.
    encoding_figures : sequence of Path
        PNG maps and plots of the encoding analysis.
    notes : sequence of str
        Free-text lines shown under the title.
    feature_spaces : sequence of str, optional
        Feature spaces of the evaluation; with ``scene`` (the embedded metric set) the metric table
        carries the scene-evaluator caveat.
    n_images, thumb : int
        How many test images the grid shows, and the thumbnail size in pixels.
    retrieval : mapping, optional
        ``{space: retrieval}`` of the decoders (``evaluation.json``'s ``retrieval``): a
        "Retrieval (top-1, n-way)" table.
    brain_correlation : mapping, optional
        ``brain_correlation.json`` (``space``, ``rois``, ``methods``: ``{method: {roi: mean r}}``):
        a methods × ROIs table.
    """
    methods = _in_registry_order(recon_index.method)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>" + _weights_banner(config)]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Reconstructions</h2>")
    parts.append(_grid_section(seen, recon_index, recon_root, methods, n_images, thumb))
    parts.append("<h2>Metrics</h2>" + _metric_table(metrics, feature_spaces))
    if retrieval:
        parts.append(_retrieval_section(retrieval))
    if brain_correlation:
        parts.append(_brain_correlation_section(brain_correlation))
    parts.append("<h2>Decoding accuracy</h2>" + _decoding_table(decoding))
    if encoding_summary:
        rois = sorted({roi for v in encoding_summary.values() for roi in v})
        head = '<tr><th class="l">feature space</th>' + "".join(f"<th>{html.escape(r)}</th>" for r in rois) + "</tr>"
        body = "".join(
            f'<tr><td class="l">{html.escape(space)}</td>'
            + "".join(f"<td>{values.get(roi, float('nan')):.3f}</td>" for roi in rois) + "</tr>"
            for space, values in encoding_summary.items())
        parts.append("<h2>Encoding analysis</h2><p>Mean test-set prediction accuracy (Pearson r) of voxelwise "
                     f"encoding models, per ROI and LDM feature space.</p><table>{head}{body}</table>"
                     f"<p>{_ENCODING_INTRO}</p>")
        parts.append(_figures(encoding_figures))
    parts.append("<h2>Timings</h2><table><tr><th class='l'>stage</th><th>seconds</th></tr>" + "".join(
        f"<tr><td class='l'>{html.escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in timings.items())
        + f"<tr><th class='l'>total</th><th>{sum(timings.values()):.1f}</th></tr></table>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(config, indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, **kwargs) -> Path:
    """Render the report (see :func:`render_report`) and write it atomically to ``path``."""
    path = Path(path)
    atomic_write_text(path, render_report(**kwargs))
    return path
