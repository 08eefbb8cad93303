"""One self-contained HTML page that shows a run: pictures first, then the numbers.

The page embeds every image as a base64 PNG, so it can be mailed or archived as one file.
Sections: reconstructions (seen image | z only | c only | z + c, with the samples), the
metric table per method, decoding accuracy per ROI and target, the encoding analysis
(maps and ROI summary, when present), the run's configuration and the stage timings. A run made
with a ``random:`` model (seeded random weights) carries a banner saying so, and a warning when
its NSD root holds real data.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ._io import atomic_write_text
from .ldm.random_model import RANDOM_WEIGHTS_LABEL, random_weights_marking
from .methods import Method

__all__ = ["write_report", "render_report", "METRIC_LABELS", "METHOD_LABELS"]

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

METHOD_LABELS = {
    Method.Z_ONLY.value: "z only",
    Method.C_ONLY.value: "c only",
    Method.Z_PLUS_C.value: "z + c",
    Method.ORACLE.value: "oracle (true z + c)",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.grid td{padding:2px;border:none;text-align:center;vertical-align:top} .grid img{image-rendering:pixelated}
.grid th{background:none;border:none;font-weight:600;font-size:.85em}
.samples img{margin-right:1px} .best{font-weight:700} .note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
.figs img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.warn{background:#fff3cd;border:1px solid #e0b400;padding:.5em .8em}
"""


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


def _img_tag(image, size: int, title: str = "") -> str:
    return f'<img src="{_png_data_uri(image, size)}" width="{size}" height="{size}" title="{html.escape(title)}">'


def _grid_section(seen: Mapping[int, np.ndarray], recon_index: pd.DataFrame, recon_root: Path,
                  methods: Sequence[str], n_images: int, thumb: int) -> str:
    test_ids = list(seen)[:n_images]
    header = "<tr><th>73k id</th><th>seen</th>" + "".join(
        f"<th>{html.escape(METHOD_LABELS.get(m, m))}</th>" for m in methods) + "</tr>"
    rows = []
    for test_id in test_ids:
        cells = [f"<td>{test_id}</td>", f"<td>{_img_tag(seen[test_id], thumb, 'seen')}</td>"]
        for method in methods:
            sel = recon_index[(recon_index.test_id == test_id) & (recon_index.method == method)]
            sel = sel.sort_values("sample")
            imgs = "".join(_img_tag(recon_root / p, thumb if i == 0 else thumb // 2,
                                    f"{method} sample {s} seed {seed}")
                           for i, (p, s, seed) in enumerate(zip(sel.path, sel["sample"], sel.seed)))
            cells.append(f'<td class="samples">{imgs}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="grid">{header}{"".join(rows)}</table>'
            '<p class="note">First sample large, the others small. Hover for method, sample and seed.</p>')


def _metric_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    methods = [m.value for m in Method if m.value in metrics] + [
        m for m in metrics if m not in METHOD_LABELS]
    names = [k for k in METRIC_LABELS if any(k in metrics[m] for m in methods)]
    best = {}
    for name in names:
        values = {m: metrics[m][name] for m in methods if name in metrics[m] and m != Method.ORACLE.value}
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
        body.append(f'<tr><td class="l">{html.escape(METHOD_LABELS.get(method, method))}</td>{"".join(cells)}</tr>')
    return (f"<table>{head}{''.join(body)}</table>"
            '<p class="note">Bold: best decoded method per column (the oracle, from the true z and c, '
            "is the ceiling). Identification is two-way: chance is 50%.</p>")


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


def _figures(paths: Sequence[Path]) -> str:
    return '<div class="figs">' + "".join(
        f'<p><b>{html.escape(p.stem.replace("_", " "))}</b><br><img src="{_png_data_uri(p)}"></p>' for p in paths
    ) + "</div>"


def _weights_banner(config: Mapping) -> str:
    """Banner of a run made with a ``random:`` model (plus its warnings on real NSD data); "" otherwise."""
    marking = random_weights_marking(config.get("model"), config.get("nsd_root"))
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
                  n_images: int = 8, thumb: int = 128) -> str:
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
        adds a "random weights" banner (and a warning when ``nsd_root`` is real NSD data).
    encoding_summary : mapping, optional
        ``{feature_space: {roi: mean r}}`` of the encoding analysis.
    encoding_figures : sequence of Path
        PNG maps and plots of the encoding analysis.
    notes : sequence of str
        Free-text lines shown under the title.
    n_images, thumb : int
        How many test images the grid shows, and the thumbnail size in pixels.
    """
    methods = [m.value for m in Method if m.value in set(recon_index.method)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>" + _weights_banner(config)]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Reconstructions</h2>")
    parts.append(_grid_section(seen, recon_index, recon_root, methods, n_images, thumb))
    parts.append("<h2>Metrics</h2>" + _metric_table(metrics))
    parts.append("<h2>Decoding accuracy</h2>" + _decoding_table(decoding))
    if encoding_summary:
        rois = sorted({roi for v in encoding_summary.values() for roi in v})
        head = '<tr><th class="l">feature space</th>' + "".join(f"<th>{html.escape(r)}</th>" for r in rois) + "</tr>"
        body = "".join(
            f'<tr><td class="l">{html.escape(space)}</td>'
            + "".join(f"<td>{values.get(roi, float('nan')):.3f}</td>" for roi in rois) + "</tr>"
            for space, values in encoding_summary.items())
        parts.append("<h2>Encoding analysis</h2><p>Mean test-set prediction accuracy (Pearson r) of voxelwise "
                     f"encoding models, per ROI and LDM feature space.</p><table>{head}{body}</table>")
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
