"""The learning curve of cross-subject transfer: own decoder vs transfer over the new subject's sessions.

:func:`transfer_curve` runs one transfer run (the ``transfer`` stage, :mod:`brain2image.stages.transfer`)
per point of the curve into ``<out>/k<k>_<decoder>/``: the new subject's first ``k`` sessions
(``k`` = 1, 2, 4, … and ``all``), decoded by its own decoder fitted on them (``own``: the baseline;
``own`` on ``all`` is the full-data line) or through the reference subjects' decoders (``transfer``).
With ``alignment_sizes``, a second curve over the number of alignment images (``transfer`` at one
``k``) goes into ``<out>/a<n>_k<k>_transfer/``. Every point has the same split seed and test
fraction, so every method is scored on the same held-out test images; :func:`transfer_curve`
checks that from each point's ``transfer/split.json`` and refuses a curve whose test sets differ.

Each point folder reuses the new subject's prepared file and feature stores of the reference run
(``<reference_run>/subjXX/``, hard links, copies across file systems), so features are computed
once. The table (one row per point) is written to ``<out>/curve.csv`` and ``<out>/curve.json``
(with the split), plotted to ``<out>/curve.png`` (and ``<out>/curve_alignment.png``), and both go
into ``<out>/report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import atomic_write_text
from .config import RunConfig
from .errors import DataFormatError, InvalidArgumentError, MissingFileError
from .formats.decoder_file import DecoderFile
from .formats.prepared import PreparedData
from .formats.run_layout import RunLayout, subject_tag

__all__ = ["CURVE_STAGES", "DECODER_CHOICES", "IDENTIFICATION_METRICS", "CurvePoint", "curve_points",
           "default_sessions", "point_config", "link_subject_inputs", "point_row", "check_same_test_ids",
           "plot_curve", "curve_report", "prepare_reference_run", "transfer_curve"]

logger = logging.getLogger(__name__)

#: The stages each point runs (the ``transfer`` stage replaces ``fit``).
CURVE_STAGES = ("prepare", "features", "transfer", "reconstruct", "evaluate")
#: What a point's decoder files can hold (the ``[transfer] decoder`` setting).
DECODER_CHOICES = ("own", "transfer", "transfer+own")
#: The identification columns of ``evaluation.json`` in the curve (two-way, as the report names them).
IDENTIFICATION_METRICS = ("id_pixel", "id_semantic")
#: The retrieval columns (top-1 accuracy, each target's): image→brain and brain→image.
RETRIEVAL_DIRECTIONS = ("image", "brain")
#: The ``[transfer]`` settings of a point the curve sets itself.
_POINT_KEYS = ("reference_subjects", "reference_run", "sessions", "decoder", "alignment_images")


@dataclass(frozen=True)
class CurvePoint:
    """One point of the curve: a transfer run.

    Attributes
    ----------
    sessions : int or "all"
        The new subject's first ``sessions`` sessions.
    decoder : str
        One of :data:`DECODER_CHOICES`.
    alignment_images : int
        At most this many alignment images (0: all available).
    curve : str
        ``"sessions"`` (the curve over ``k``) or ``"alignment"`` (over the alignment-set size).
    """

    sessions: int | str
    decoder: str
    alignment_images: int = 0
    curve: str = "sessions"

    @property
    def folder(self) -> str:
        """The point's run folder name: ``k<k>_<decoder>`` or ``a<n>_k<k>_<decoder>``."""
        name = f"k{self.sessions}_{self.decoder.replace('+', '_')}"
        return name if self.curve == "sessions" else f"a{self.alignment_images}_{name}"


def default_sessions(n_sessions: int) -> list[int | str]:
    """1, 2, 4, … below ``n_sessions``, then ``"all"``."""
    values: list[int | str] = []
    k = 1
    while k < n_sessions:
        values.append(k)
        k *= 2
    return [*values, "all"]


def _check_sessions(sessions: Sequence[int | str], n_sessions: int, where: Path) -> list[int | str]:
    """The session counts, checked against the sessions on disk (one-line errors)."""
    checked: list[int | str] = []
    for k in sessions:
        text = str(k)
        if text == "all":
            checked.append("all")
        elif text.isdigit() and 1 <= int(text) <= n_sessions:
            checked.append(int(text))
        else:
            raise InvalidArgumentError(f"{where}: sessions = {k!r}: expected an integer in [1, {n_sessions}] "
                                       "(the new subject's sessions on disk) or 'all'")
    if not checked:
        raise InvalidArgumentError(f"{where}: sessions = []: expected at least one session count")
    return list(dict.fromkeys(checked))


def curve_points(sessions: Sequence[int | str], decoders: Sequence[str], alignment_sizes: Sequence[int] | None,
                 alignment_sessions: int | str) -> list[CurvePoint]:
    """The points of the curve: every (k, decoder), then ``transfer`` at ``alignment_sessions`` per size.

    Raises
    ------
    InvalidArgumentError
        For a decoder not in :data:`DECODER_CHOICES` or an alignment size below 1.
    """
    for decoder in decoders:
        if decoder not in DECODER_CHOICES:
            raise InvalidArgumentError(f"transfer curve: decoder {decoder!r}: expected one of "
                                       f"{', '.join(DECODER_CHOICES)}")
    points = [CurvePoint(k, decoder) for k in sessions for decoder in decoders]
    for size in alignment_sizes or ():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise InvalidArgumentError(f"transfer curve: alignment size {size!r}: expected an integer ≥ 1")
        points.append(CurvePoint(alignment_sessions, "transfer", int(size), "alignment"))
    return points


def point_config(config: RunConfig, point: CurvePoint, *, subject: int | str, transfer: dict[str, Any],
                 out_dir: Path, methods: Sequence[str], n_samples: int) -> RunConfig:
    """The run config of one point: ``config`` for ``subject`` into ``<out_dir>/<point.folder>``.

    ``transfer`` holds the ``[transfer]`` settings shared by every point (references, reference run,
    seed, test fraction, ...); the point sets ``sessions``, ``decoder`` and ``alignment_images``.
    Encoding is off; the reconstruction has ``methods`` and ``n_samples``.
    """
    settings = {**transfer, "sessions": point.sessions, "decoder": point.decoder,
                "alignment_images": point.alignment_images}
    stage_settings = {**config.stage_settings, "transfer": settings}
    return dataclasses.replace(
        config, subject=subject, subjects=None, out_dir=str(out_dir / point.folder), stage_settings=stage_settings,
        encoding=dataclasses.replace(config.encoding, enabled=False),
        reconstruction=dataclasses.replace(config.reconstruction, methods=tuple(methods), n_samples=n_samples))


def _link(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (a copy across file systems); an existing ``target`` is kept."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def link_subject_inputs(reference_run: Path, config: RunConfig, run_dir: Path) -> None:
    """Link the new subject's prepared file, feature stores and their stage records into ``run_dir``.

    They come from ``<reference_run>/subjXX/`` (the reference run ran the new subject too); the
    records (``stages/prepare.json``, ``stages/features.json``) make a resume with other settings
    fail loudly rather than reuse files computed otherwise.

    Raises
    ------
    MissingFileError
        When ``<reference_run>/subjXX/prepared/subjXX.h5`` is not there.
    """
    tag = subject_tag(config.subject)
    source = RunLayout.of(reference_run / tag, config.subject, config.model)
    target = RunLayout.of(run_dir, config.subject, config.model)
    if not source.prepared.is_file():
        raise MissingFileError(f"{source.prepared}: prepared file of subject {config.subject} not found; expected "
                               f"the reference run to hold the new subject too (subjects = [..., {config.subject}])")
    _link(source.prepared, target.prepared)
    for store in sorted(source.file("features").glob("*.h5")):
        if ".partial" not in store.name and ".shard-" not in store.name:
            _link(store, target.file("features") / store.name)
    for name in ("prepare", "features"):
        record = source.root / "stages" / f"{name}.json"
        if record.is_file():
            _link(record, target.root / "stages" / record.name)


def _split(run_dir: Path) -> dict[str, Any]:
    """The point's ``transfer/split.json``."""
    path = run_dir / "transfer" / "split.json"
    if not path.is_file():
        raise MissingFileError(f"{path}: split of the transfer run not found; expected the transfer stage's "
                               "transfer/split.json")
    try:
        split = json.loads(path.read_text())
        split["test_ids"] = [int(v) for v in split["test_ids"]]
    except (ValueError, KeyError, TypeError) as error:
        raise DataFormatError(f"{path}: field 'test_ids' unreadable ({error}); expected a list of 0-based "
                              "stimulus ids") from error
    return split


def _evaluation(run_dir: Path) -> dict[str, Any]:
    """The point's ``evaluation.json``."""
    path = RunLayout.of(run_dir).file("evaluation")
    if not path.is_file():
        raise MissingFileError(f"{path}: evaluation of the point not found; expected the evaluate stage's output")
    return json.loads(path.read_text())


def point_row(point: CurvePoint, config: RunConfig) -> dict[str, Any]:
    """The curve's row of a finished point: decoding r, identification and retrieval on the test images.

    Columns: ``curve``, ``sessions``, ``decoder``, ``alignment_images`` (the cap asked, 0: all),
    ``n_alignment`` (alignment images per reference, the mean), ``n_own_train`` (the new subject's
    images in the own decoder's fit), ``n_test``; ``r_<target>`` (mean test r of each target's
    decoder file); ``<method>_<metric>`` for :data:`IDENTIFICATION_METRICS`; and
    ``retrieval_<target>_<image|brain>`` (top-1).
    """
    run_dir = Path(config.out_dir)
    layout = RunLayout.of(run_dir, config.subject, config.model)
    split = _split(run_dir)
    alignment = split.get("alignment_ids") or {}
    row: dict[str, Any] = {
        "curve": point.curve, "sessions": str(point.sessions), "decoder": point.decoder,
        "alignment_images": point.alignment_images,
        "n_alignment": float(np.mean([len(v) for v in alignment.values()])) if alignment else 0.0,
        "n_own_train": len(split.get("own_train_ids") or []), "n_test": len(split["test_ids"])}
    for target, roi in config.decoder.targets.items():
        row[f"r_{target}"] = DecoderFile.read(layout.decoder(target, roi)).summary()["mean_r"]
    evaluation = _evaluation(run_dir)
    for method in config.reconstruction.methods:
        scores = evaluation.get("methods", {}).get(method, {})
        for metric in IDENTIFICATION_METRICS:
            row[f"{method}_{metric}"] = float(scores.get(metric, math.nan))
    for target in config.decoder.targets:
        scores = evaluation.get("retrieval", {}).get(target, {})
        for direction in RETRIEVAL_DIRECTIONS:
            row[f"retrieval_{target}_{direction}"] = float(scores.get(direction, math.nan))
    return row


def check_same_test_ids(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """The split every point shares (seed, test fraction, test ids); refuses points whose test sets differ.

    Raises
    ------
    DataFormatError
        When two points' ``transfer/split.json`` hold other test ids or split seeds.
    """
    first = _split(run_dirs[0])
    for run_dir in run_dirs[1:]:
        split = _split(run_dir)
        if sorted(split["test_ids"]) != sorted(first["test_ids"]) or split.get("seed") != first.get("seed"):
            raise DataFormatError(
                f"{run_dir / 'transfer' / 'split.json'}: field 'test_ids' holds {len(split['test_ids'])} ids "
                f"(seed {split.get('seed')}); expected the {len(first['test_ids'])} test ids (seed "
                f"{first.get('seed')}) of {run_dirs[0] / 'transfer' / 'split.json'}: every point must be "
                "scored on the same held-out images")
    return {"seed": first.get("seed"), "test_fraction": first.get("test_fraction"),
            "n_test": len(first["test_ids"]), "test_ids": sorted(first["test_ids"]),
            "n_candidates": len(first.get("candidates") or [])}


def _new_subject_sessions(prepared: Path) -> int:
    """The sessions of a prepared file (its train and single test trials)."""
    data = PreparedData(prepared)
    sessions = [np.asarray(data.trials(split)["session"]) for split in ("train", "test_trials")]
    return int(max(int(s.max()) for s in sessions if s.size))


def _transfer_settings(config: RunConfig, references: Sequence[int | str] | None,
                       reference_run: str | os.PathLike | None) -> dict[str, Any]:
    """The ``[transfer]`` settings every point shares: the config's table, with the references given."""
    base = {key: value for key, value in config.stage_settings.get("transfer", {}).items() if key not in
            ("sessions", "decoder", "alignment_images")}
    if references is not None:
        base["reference_subjects"] = list(references)
    if reference_run is not None:
        base["reference_run"] = reference_run
    for key in ("reference_subjects", "reference_run"):
        if not base.get(key):
            raise InvalidArgumentError(f"transfer curve: [transfer] {key} not given; expected it in the config's "
                                       "[transfer] table or as an argument")
    base["reference_run"] = str(Path(base["reference_run"]).expanduser().resolve())
    return base


#: Titles of the plotted columns (``<method>_`` stripped from the identification ones).
_TITLES = {"id_pixel": "2-way id, pixels", "id_semantic": "2-way id, semantic"}


def _plotted_columns(table: pd.DataFrame, method: str, targets: Sequence[str]) -> list[tuple[str, str]]:
    """(column, title) of each panel: decoding r per target, the method's identification, retrieval."""
    columns = [(f"r_{t}", f"decoded {t}: mean test r") for t in targets]
    columns += [(f"{method}_{m}", f"{method}: {_TITLES[m]}") for m in IDENTIFICATION_METRICS]
    columns += [(f"retrieval_{t}_image", f"retrieval top-1 from {t} (image)") for t in targets]
    return [(column, title) for column, title in columns if column in table]


def _session_x(sessions: pd.Series, n_sessions: int) -> list[int]:
    """The x of each point: its session count (``all``: the sessions on disk)."""
    return [n_sessions if s == "all" else int(s) for s in sessions]


def plot_curve(table: pd.DataFrame, path: str | os.PathLike, *, n_sessions: int, method: str,
               targets: Sequence[str], curve: str = "sessions") -> Path:
    """Plot the curve (one panel per score): each decoder over k, or ``transfer`` over alignment images.

    The dashed line is the full-data own decoder (``own`` on ``all`` sessions) when the table holds it.
    Drawn with matplotlib's Agg canvas (no display), written to ``path`` (PNG).
    """
    from matplotlib.figure import Figure

    rows = table[table["curve"] == curve]
    full = table[(table["curve"] == "sessions") & (table["decoder"] == "own") & (table["sessions"] == "all")]
    columns = _plotted_columns(table, method, targets)
    n_cols = min(3, len(columns))
    n_rows = -(-len(columns) // n_cols)
    figure = Figure(figsize=(4.2 * n_cols, 3.3 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (column, title) in zip(axes, columns):
        for decoder, part in rows.groupby("decoder", sort=False):
            x = _session_x(part["sessions"], n_sessions) if curve == "sessions" else part["n_alignment"]
            ax.plot(x, part[column], marker="o", label=str(decoder))
        if len(full):
            ax.axhline(float(full[column].iloc[0]), linestyle="--", color="grey", label="own, all sessions")
        ax.set_title(title, fontsize=10)
        if curve == "sessions":
            ticks = sorted(set(_session_x(rows["sessions"], n_sessions)))
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [("all" if t == n_sessions else str(t)) for t in ticks])
            ax.set_xlabel("sessions of the new subject")
        else:
            ax.set_xlabel("alignment images")
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def _json_value(value: Any) -> Any:
    """A table value for JSON: NaN → None, numpy scalars → Python."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _write_outputs(out: Path, table: pd.DataFrame, meta: dict[str, Any], *, n_sessions: int, method: str,
                   targets: Sequence[str]) -> None:
    """``curve.csv``, ``curve.json`` (``meta`` and the points) and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "curve.csv", table.to_csv(index=False))
    points = [{key: _json_value(value) for key, value in row.items()} for row in table.to_dict("records")]
    atomic_write_text(out / "curve.json", json.dumps({**meta, "points": points}, indent=2))
    plots = [plot_curve(table, out / "curve.png", n_sessions=n_sessions, method=method, targets=targets)]
    if (table["curve"] == "alignment").any():
        plots.append(plot_curve(table, out / "curve_alignment.png", n_sessions=n_sessions, method=method,
                                targets=targets, curve="alignment"))
    atomic_write_text(out / "report.html", curve_report(table, meta, plots))


def curve_report(table: pd.DataFrame, meta: dict[str, Any], plots: Sequence[Path]) -> str:
    """A self-contained HTML page of the curve: what was compared, the plots (inline PNG) and the table."""
    import base64
    import html

    refs = ", ".join(map(str, meta["reference_subjects"]))
    intro = (f"New subject {html.escape(str(meta['subject']))}, references {html.escape(refs)}. Every point is scored "
             f"on the same {meta['n_test']} held-out test images (split seed {meta['split_seed']}, test fraction "
             f"{meta['test_fraction']} of {meta['n_candidates']} images every subject saw); no fit saw them. "
             "<i>own</i>: the new subject's decoder fitted on its first k sessions; <i>transfer</i>: its activity "
             "mapped by ridge into each reference's voxels, then the reference's full-data decoder; the dashed line "
             "is the own decoder on all sessions. Identification is two-way; retrieval is top-1 among the test images.")
    images = "".join(f"<p><img alt='{path.name}' style='max-width:100%' src='data:image/png;base64,"
                     f"{base64.b64encode(path.read_bytes()).decode()}'></p>" for path in plots)
    body = table.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>brain2image: transfer curve</title>"
            "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;"
            "font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head>"
            f"<body><h1>Cross-subject transfer: learning curve</h1><p>{intro}</p>{images}{body}</body></html>")


def prepare_reference_run(config: RunConfig, subjects: Sequence[int | str], reference_run: Path,
                          progress: bool = True) -> None:
    """Run ``prepare``, ``features`` and ``fit`` of each subject into ``<reference_run>/subjXX/`` (resumed).

    What the curve needs of the references (their full-data decoders) and of the new subject (its
    prepared file and feature stores); a folder already done is skipped stage by stage. The
    config's ``[transfer]`` table is left out, so ``fit`` fits each subject's own decoders.
    """
    from .pipeline import run_pipeline

    settings = {name: table for name, table in config.stage_settings.items() if name != "transfer"}
    for subject in subjects:
        single = dataclasses.replace(config, subject=subject, subjects=None, stage_settings=settings,
                                     out_dir=str(reference_run / subject_tag(subject)))
        logger.info("transfer curve: subject %s's prepare, features and fit in %s", subject, single.out_dir)
        run_pipeline(single, progress=progress, stages=("prepare", "features", "fit"))


def _run_point(config: RunConfig, point: CurvePoint, reference_run: Path, progress: bool) -> dict[str, Any]:
    """Run one point (resuming a finished one) and return its row."""
    from .pipeline import run_pipeline

    run_dir = Path(config.out_dir)
    link_subject_inputs(reference_run, config, run_dir)
    logger.info("transfer curve: %s (sessions %s, decoder %s, alignment images %s)", run_dir.name,
                point.sessions, point.decoder, point.alignment_images or "all")
    run_pipeline(config, progress=progress, stages=CURVE_STAGES)
    return point_row(point, config)


def transfer_curve(config: RunConfig, *, out_dir: str | os.PathLike, subject: int | str | None = None,
                   references: Sequence[int | str] | None = None, reference_run: str | os.PathLike | None = None,
                   sessions: Sequence[int | str] | None = None, decoders: Sequence[str] = ("own", "transfer"),
                   alignment_sizes: Sequence[int] | None = None, alignment_sessions: int | str = "all",
                   n_samples: int = 1, methods: Sequence[str] = ("z_plus_c",), progress: bool = True
                   ) -> pd.DataFrame:
    """Run the learning curve of one new subject: own decoder vs transfer over its first k sessions.

    Parameters
    ----------
    config : RunConfig
        The run settings of every point (model, decoder targets, reconstruction, evaluation); its
        ``[transfer]`` table (``stage_settings["transfer"]``), when there, gives the references,
        the reference run, the split seed, the test fraction, the alignment and the combination.
    out_dir : path-like
        Curve folder: one run folder per point, ``curve.csv``, ``curve.json``, ``curve.png``.
    subject : int or str, optional
        The new subject (default: ``config.subject``).
    references : sequence of int or str, optional
        Reference subjects (default: the config's ``[transfer] reference_subjects``).
    reference_run : path-like, optional
        Study folder of the references and the new subject (default: the config's ``[transfer]
        reference_run``; relative: to the current folder). Their ``prepare``, ``features`` and ``fit``
        run there first when not done (:func:`prepare_reference_run`).
    sessions : sequence of int or "all", optional
        The k of the curve (default: 1, 2, 4, … below the new subject's session count, then all).
    decoders : sequence of str
        Decoders at each k (:data:`DECODER_CHOICES`); ``own`` on ``all`` is the full-data line.
    alignment_sizes : sequence of int, optional
        Alignment-set sizes of a second curve (``transfer`` at ``alignment_sessions``).
    alignment_sessions : int or "all"
        The k of the alignment-size curve.
    n_samples : int
        Reconstruction samples per test image.
    methods : sequence of str
        Reconstruction methods (identification columns for each; the first is plotted).
    progress : bool

    Returns
    -------
    pandas.DataFrame
        One row per point (:func:`point_row`'s columns).

    Raises
    ------
    InvalidArgumentError, MissingFileError
        Before any point runs: a bad session count or decoder, missing references, no prepared
        file of the new subject in the reference run.
    DataFormatError
        When two points were scored on other test images (:func:`check_same_test_ids`).
    """
    out = Path(out_dir).expanduser().resolve()
    new = config.subject if subject is None else subject
    transfer = _transfer_settings(config, references, reference_run)
    runs = Path(transfer["reference_run"])
    prepare_reference_run(config, [new, *transfer["reference_subjects"]], runs, progress)
    prepared = RunLayout.of(runs / subject_tag(new), new, config.model).prepared
    if not prepared.is_file():
        raise MissingFileError(f"{prepared}: prepared file of the new subject {new} not found; expected a reference "
                               f"run whose subjects include {new}")
    n_sessions = _new_subject_sessions(prepared)
    ks = _check_sessions(default_sessions(n_sessions) if sessions is None else sessions, n_sessions, prepared)
    [at] = _check_sessions([alignment_sessions], n_sessions, prepared)
    points = curve_points(ks, decoders, alignment_sizes, at)
    if not points:
        raise InvalidArgumentError("transfer curve: no points (decoders = [] and no alignment sizes); expected "
                                   "at least one decoder")
    rows, dirs = [], []
    for point in points:
        point_cfg = point_config(config, point, subject=new, transfer=transfer, out_dir=out, methods=methods,
                                 n_samples=n_samples)
        rows.append(_run_point(point_cfg, point, runs, progress))
        dirs.append(Path(point_cfg.out_dir))
        split = check_same_test_ids(dirs)
    table = pd.DataFrame(rows)
    meta = {"subject": new, "reference_subjects": transfer["reference_subjects"], "reference_run": str(runs),
            "n_sessions": n_sessions, "methods": list(methods), "n_samples": n_samples,
            "split_seed": split["seed"], "test_fraction": split["test_fraction"], "n_test": split["n_test"],
            "n_candidates": split["n_candidates"], "test_ids": split["test_ids"]}
    _write_outputs(out, table, meta, n_sessions=n_sessions, method=methods[0], targets=list(config.decoder.targets))
    return table
