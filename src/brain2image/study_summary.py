"""The study level of a several-subject run: ``summary.json`` and ``report.html`` across subjects.

A run config with ``subjects = [1, 2, 5, 7]`` runs each subject into ``<out_dir>/subjXX/``
(:func:`brain2image.pipeline.run_study`); this module reads each subject's ``metrics.json`` and writes,
in ``<out_dir>``:

* ``summary.json``: one row per subject (every numeric metric of its ``metrics.json``, grouped as
  there: one group per method, one per decoded target ``decoding: z <- early``), then per group and
  metric the mean and the sample standard deviation across subjects (``ddof=1``; ``null`` with one
  subject) and the number of subjects that have it;
* ``report.html``: one self-contained page, a table per group (a row per subject, then mean and sd)
  and a link to each subject's own report.

Metrics added to ``metrics.json`` later (a new method, a new metric of a method) appear here with no change.
"""

from __future__ import annotations

import html
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._io import atomic_write_text
from .errors import MissingFileError
from .formats.run_layout import subject_tag

__all__ = ["SD_NOTE", "SUMMARY_FILE", "REPORT_FILE", "subject_folder", "numeric_metrics", "summarise_subjects",
           "render_study_report", "write_study_summary"]

#: Files of the study level, in ``out_dir``.
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
#: Top-level keys of ``metrics.json`` that are not metrics.
_NOT_METRICS = ("timings_s",)
#: What the ``sd`` of the summary is.
SD_NOTE = "sample standard deviation across subjects (ddof=1); null with fewer than 2 subjects"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4;text-align:center} td.l{text-align:left} tr.stat td{background:#fafafa;font-weight:600}
.note{color:#666;font-size:.9em}
"""


def subject_folder(subject: int | str) -> str:
    """A subject's run folder under the study's ``out_dir``: ``subjXX`` (a non-numeric label: itself)."""
    return subject_tag(_label(subject))


def _label(subject: int | str) -> int | str:
    """A subject label as ``summary.json`` holds it: an int (NSD's), or a non-numeric string."""
    return subject if isinstance(subject, str) and not subject.isdigit() else int(subject)


def _is_number(value: Any) -> bool:
    """A finite int or float (never a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Every numeric metric of a ``metrics.json``, by group.

    A top-level table of numbers (a method) is a group of its own name; a table of tables of
    numbers (``decoding``) gives a group per inner table, ``"decoding: z <- early"``. Stage times
    and non-numeric entries are left out.

    Parameters
    ----------
    metrics : mapping
        A subject's ``metrics.json`` (:func:`brain2image.stages.report.collect_metrics`).

    Returns
    -------
    dict of str to dict of str to float
        Group -> metric -> value, in the file's order.
    """
    groups: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key in _NOT_METRICS or not isinstance(value, Mapping):
            continue
        own = {name: v for name, v in value.items() if _is_number(v)}
        if own:
            groups[key] = own
        for inner, table in value.items():
            if isinstance(table, Mapping):
                numbers_ = {name: v for name, v in table.items() if _is_number(v)}
                if numbers_:
                    groups[f"{key}: {inner}"] = numbers_
    return groups


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample sd (ddof=1; None for one value)."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _statistics(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per group and metric: mean, sd (ddof=1) and the number of subjects that have it."""
    stats: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        for group, table in row["metrics"].items():
            for name in table:
                stats.setdefault(group, {}).setdefault(name, {})
    for group, names in stats.items():
        for name in names:
            values = [row["metrics"][group][name] for row in rows if name in row["metrics"].get(group, {})]
            mean, sd = _mean_sd(values)
            names[name] = {"mean": mean, "sd": sd, "n_subjects": len(values)}
    return stats


def summarise_subjects(out_dir: str | os.PathLike, subjects: Sequence[int | str]) -> dict[str, Any]:
    """The content of ``summary.json`` from each subject's ``<out_dir>/subjXX/metrics.json``.

    Parameters
    ----------
    out_dir : path-like
        The study folder.
    subjects : sequence of int
        NSD subjects, in the order of the rows.

    Returns
    -------
    dict
        ``subjects``, ``sd`` (what the sd is), ``rows`` (``subject``, ``run_dir``, ``report``
        (relative to ``out_dir``) and ``metrics``: group -> metric -> value) and ``statistics``
        (group -> metric -> ``mean``, ``sd``, ``n_subjects``).

    Raises
    ------
    MissingFileError
        When a subject's ``metrics.json`` is missing.
    """
    out_dir = Path(out_dir)
    rows = []
    for subject in subjects:
        folder = subject_folder(subject)
        path = out_dir / folder / "metrics.json"
        if not path.is_file():
            raise MissingFileError(f"{path} not found: subject {subject}'s run has not finished (brain2image run)")
        rows.append({"subject": _label(subject), "run_dir": folder, "report": f"{folder}/report.html",
                     "metrics": numeric_metrics(json.loads(path.read_text()))})
    return {"subjects": [_label(s) for s in subjects], "sd": SD_NOTE, "rows": rows, "statistics": _statistics(rows)}


def _number(value: float | None) -> str:
    """A table cell's number (``–`` for none)."""
    return "–" if value is None else f"{value:.4g}"


def _group_table(group: str, summary: Mapping[str, Any]) -> str:
    """One group's table: a row per subject (linked to its report), then the mean and the sd."""
    from .report import METRIC_LABELS

    stats = summary["statistics"][group]
    names = list(stats)
    head = "".join(f"<th>{html.escape(METRIC_LABELS.get(n, n))}</th>" for n in names)
    lines = [f'<table><thead><tr><th scope="col">subject</th>{head}</tr></thead><tbody>']
    for row in summary["rows"]:
        values = row["metrics"].get(group, {})
        cells = "".join(f"<td>{_number(values.get(n))}</td>" for n in names)
        link = f'<a href="{html.escape(row["report"])}">{html.escape(row["run_dir"])}</a>'
        lines.append(f'<tr><td class="l">{link}</td>{cells}</tr>')
    for stat, label in (("mean", "mean"), ("sd", "sd (ddof=1)")):
        cells = "".join(f"<td>{_number(stats[n][stat])}</td>" for n in names)
        lines.append(f'<tr class="stat"><td class="l">{label}</td>{cells}</tr>')
    return "\n".join(lines + ["</tbody></table>"])


def render_study_report(summary: Mapping[str, Any], title: str = "brain2image: several subjects") -> str:
    """The study's self-contained HTML page (no images; links to each subject's report).

    Parameters
    ----------
    summary : mapping
        :func:`summarise_subjects`'s result.
    title : str
    """
    from .methods import method_label

    links = ", ".join(f'<a href="{html.escape(r["report"])}">subject {r["subject"]}</a>' for r in summary["rows"])
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>Subjects: {', '.join(str(s) for s in summary['subjects'])}. Each subject's own report: {links}.</p>",
             '<p class="note">mean and sd over the subjects that have the metric (–: none, or sd of one '
             f'subject); sd: {html.escape(summary["sd"])}.</p>']
    for group in summary["statistics"]:
        parts.append(f"<h2>{html.escape(method_label(group))}</h2>")
        parts.append(_group_table(group, summary))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_study_summary(out_dir: str | os.PathLike, subjects: Sequence[int | str]) -> Path:
    """Write ``<out_dir>/summary.json`` and ``<out_dir>/report.html`` (atomically) from the subjects' runs.

    Parameters
    ----------
    out_dir : path-like
        The study folder, holding ``subjXX/metrics.json`` of every subject.
    subjects : sequence of int

    Returns
    -------
    Path of the study's ``report.html``.

    Raises
    ------
    MissingFileError
        When a subject's ``metrics.json`` is missing.
    """
    out_dir = Path(out_dir)
    summary = summarise_subjects(out_dir, subjects)
    atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    report = out_dir / REPORT_FILE
    atomic_write_text(report, render_study_report(summary))
    return report
