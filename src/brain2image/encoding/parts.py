"""One encoding analysis as separate tasks: one per feature space, one per partition pair, then assembly.

:func:`~brain2image.encoding.analysis.run_encoding_analysis` fits every model in one call. A
cluster runner runs instead :func:`fit_encoding_part` once per name of
:func:`encoding_part_names` (in any order, on machines sharing the output folder), then
:func:`assemble_encoding_parts`, which writes the same ``results.h5``, maps and
``summary.json`` (through the same code) and removes the parts.

Each part is written atomically to ``<out_dir>/encoding/parts/<part>.h5``
(:class:`~brain2image.formats.encoding_results.EncodingPart`; ``|`` of a pair is ``+`` in the
file name) with what it was fitted from: the config, the prepared file, the feature stores it
read, and the analysis' parts and pairs. A complete part file is not fitted again; one fitted
from other inputs is refused, by fitting and by assembly alike.

Every part reads the prepared file and only the feature stores it models, and builds the same
:class:`~brain2image.encoding.analysis.EncodingProblem` as the whole analysis, so its arrays equal
the whole analysis' bit for bit: cross-validation folds and the banded random search are seeded
with ``config.seed`` on each fit, and a space that enters a pair is solved in kernel form for its
own fit too (:func:`~brain2image.encoding.analysis.spaces_in_pairs`), as in one call. The pairs'
unique and shared variance need the spaces' r and are computed at assembly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..config import EncodingConfig
from ..errors import DataFormatError, InvalidArgumentError, MissingFileError
from ..formats.encoding_results import EncodingPart, encoding_part_attrs, read_encoding_part, write_encoding_part
from ..formats.partitions import first_difference, incomplete, named_piece
from .analysis import (
    KEPT_MODELS,
    EncodingResults,
    analysis_pairs,
    fit_pair_model,
    fit_space_model,
    pair_partition,
    read_features,
    read_roi_data,
    roi_image_ids,
    roi_problem,
    spaces_in_pairs,
)
from .noise_ceiling import noise_ceiling
from .outputs import write_encoding_outputs

__all__ = ["PARTS_FOLDER", "encoding_part_names", "encoding_parts_folder", "encoding_part_path", "fit_encoding_part",
           "assemble_encoding_parts"]

logger = logging.getLogger(__name__)

#: The folder of the part files, in ``<out_dir>/encoding/``.
PARTS_FOLDER = "parts"

#: Provenance fields a part file must share with the analysis it is assembled into, in the order checked.
_CHECKED = ("part", "kind", "has_model", "config", "prepared", "feature_stores", "parts", "pairs")


@dataclass(frozen=True)
class _Analysis:
    """The parts of one analysis: its spaces, pairs, part names and config."""

    names: list[str]
    pairs: list[tuple[str, str]]
    parts: list[str]
    config: EncodingConfig


def _analysis(space_names: Sequence[str], config: EncodingConfig | None) -> _Analysis:
    """The spaces, the pairs (as :func:`~brain2image.encoding.analysis.encode_arrays` picks them) and the parts."""
    config = config or EncodingConfig()
    names = [str(n) for n in space_names]
    odd = [n for n in names if "|" in n]
    if odd:
        raise InvalidArgumentError(f"feature spaces {odd} have '|' in their names; expected names without it "
                                   "('|' joins the two spaces of a partition pair)")
    try:
        pairs = analysis_pairs(names, config)
    except ValueError as error:
        raise InvalidArgumentError(f"[encoding] partition_pairs: {error}") from error
    parts = list(dict.fromkeys([*names, *(f"{a}|{b}" for a, b in pairs)]))
    return _Analysis(names=names, pairs=pairs, parts=parts, config=config)


def encoding_part_names(space_names: Sequence[str], config: EncodingConfig | None = None) -> list[str]:
    """The parts of an encoding analysis: each feature space, then each partition pair as ``"a|b"``.

    Parameters
    ----------
    space_names : sequence of str
        The feature spaces, in the order of the analysis' feature stores.
    config : EncodingConfig, optional
        Its ``partition_pairs``, or when unset the default pairs of the spaces
        (:func:`~brain2image.encoding.analysis.default_pairs`).

    Returns
    -------
    list of str

    Raises
    ------
    InvalidArgumentError
        A pair naming a space not in ``space_names``, or a space name with ``|``.
    """
    return _analysis(space_names, config).parts


def encoding_parts_folder(out_dir: str | os.PathLike) -> Path:
    """``<out_dir>/encoding/parts``: the folder of the part files (removed by assembly)."""
    return Path(out_dir) / "encoding" / PARTS_FOLDER


def encoding_part_path(out_dir: str | os.PathLike, part: str) -> Path:
    """``<out_dir>/encoding/parts/<part>.h5``: the part's name made file-safe (``z|c`` -> ``z+c.h5``).

    Characters other than letters, digits and ``_.-~`` are percent-encoded, then ``|`` (``%7C``)
    becomes ``+`` (which itself is encoded), so distinct parts never share a file.
    """
    return named_piece(encoding_parts_folder(out_dir), part)


def _provenance(prepared_path: str | os.PathLike, feature_stores: Mapping[str, str | os.PathLike], part: str,
                analysis: _Analysis) -> dict[str, str]:
    """The attributes a part file records (and assembly checks): what it was fitted from."""
    spaces = part.split("|")
    return {"part": part, "kind": "pair" if len(spaces) == 2 else "space",
            "has_model": str(len(spaces) == 1 and part in KEPT_MODELS),
            "config": json.dumps(dataclasses.asdict(analysis.config)), "prepared": str(Path(prepared_path)),
            "feature_stores": json.dumps({name: str(feature_stores[name]) for name in spaces}),
            "parts": json.dumps(analysis.parts), "pairs": json.dumps([list(p) for p in analysis.pairs]),
            "roi": analysis.config.roi}


def _difference(key: str, found: str, expected: str) -> str:
    """How field ``key`` differs, naming the first differing entry of a JSON object."""
    try:
        old, new = json.loads(found), json.loads(expected)
    except ValueError:
        old = new = None
    if isinstance(old, dict) and isinstance(new, dict):
        for entry in [*new, *(k for k in old if k not in new)]:
            if old.get(entry) != new.get(entry):
                return (f"field '{key}' entry '{entry}' is {json.dumps(old.get(entry))}, "
                        f"expected {json.dumps(new.get(entry))}")
    return f"field '{key}' is {found!r}, expected {expected!r}"


def _check_part(path: Path, found: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Refuse a part file fitted from other inputs than ``expected`` (one line naming the field)."""
    key = first_difference(expected, found, _CHECKED)
    if key is not None:
        raise DataFormatError(f"{path}: {_difference(key, found.get(key, ''), expected[key])} (the part was "
                              f"fitted from other inputs); delete {path.parent} to fit the parts again")


def _fit_part(prepared_path: Path, feature_stores: Mapping[str, str | os.PathLike], part: str, analysis: _Analysis,
              device: str, progress: bool) -> EncodingPart:
    """Read the ROI and the part's feature stores, and fit the part's model."""
    spaces = part.split("|")
    data = read_roi_data(prepared_path, analysis.config.roi)
    features = read_features({name: feature_stores[name] for name in spaces}, roi_image_ids(data),
                             progress=progress)
    problem = roi_problem(data, analysis.config, device)
    attrs = _provenance(prepared_path, feature_stores, part, analysis)
    if len(spaces) == 1:
        fit = fit_space_model(features[part], problem, name=part, keep_model=part in KEPT_MODELS,
                              kernel=True if part in spaces_in_pairs(analysis.pairs) else None)
        return EncodingPart(part, "space", fit.scores, attrs, fit.model)
    a, b = spaces
    joint = fit_pair_model(problem.prepare(features[a], kernel=True), problem.prepare(features[b], kernel=True),
                           problem)
    return EncodingPart(part, "pair", joint, attrs)


def fit_encoding_part(prepared_path: str | os.PathLike, feature_stores: Mapping[str, str | os.PathLike],
                      out_dir: str | os.PathLike, part: str, config: EncodingConfig | None = None,
                      device: str = "cpu", progress: bool = False) -> Path:
    """Fit one part of an encoding analysis and write its part file (skipped when it is complete).

    Parameters
    ----------
    prepared_path : path-like
        ``prepared_subjXX.h5``.
    feature_stores : mapping name -> path-like
        Every feature store of the analysis, in its order (the parts depend on all the names);
        only the stores of ``part`` are read.
    out_dir : path-like
        The part goes to :func:`encoding_part_path` (``<out_dir>/encoding/parts/``).
    part : str
        One of :func:`encoding_part_names`: a feature space or a pair ``"a|b"``.
    config : EncodingConfig, optional
    device : str
        The run's torch device (picks the ``auto`` backend).
    progress : bool
        Show a bar over the feature stores read.

    Returns
    -------
    Path
        The part file.

    Raises
    ------
    InvalidArgumentError
        ``part`` is not a part of the analysis.
    DataFormatError
        A complete part file is there, fitted from other inputs (delete the parts folder).
    MissingFileError
        A feature store of the part, or the prepared file, is missing.
    """
    analysis = _analysis(list(feature_stores), config)
    if part not in analysis.parts:
        raise InvalidArgumentError(f"encoding part {part!r} is not a part of this analysis; expected one of "
                                   f"{analysis.parts}")
    path, prepared_path = encoding_part_path(out_dir, part), Path(prepared_path)
    found = encoding_part_attrs(path)
    if found is not None:
        _check_part(path, found, _provenance(prepared_path, feature_stores, part, analysis))
        logger.info("encoding part %s: %s is complete, skipped", part, path)
        return path
    if path.exists():
        logger.warning("%s: incomplete or unreadable part file; fitting part %s again", path, part)
    write_encoding_part(path, _fit_part(prepared_path, feature_stores, part, analysis, device, progress))
    logger.info("encoding part %s written to %s", part, path)
    return path


def _read_parts(prepared_path: Path, feature_stores: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                analysis: _Analysis, progress: bool) -> dict[str, EncodingPart]:
    """Every part file of the analysis, checked to be complete and fitted from these inputs."""
    paths = {part: encoding_part_path(out_dir, part) for part in analysis.parts}
    found = {part: encoding_part_attrs(path) for part, path in paths.items()}
    missing = incomplete(found, lambda attrs: attrs is not None)
    if missing:
        raise MissingFileError(f"{encoding_parts_folder(out_dir)}: encoding part(s) {missing} missing or incomplete "
                               f"({len(analysis.parts) - len(missing)} of {len(analysis.parts)} parts there); "
                               "fit them before assembling")
    for part, path in paths.items():
        _check_part(path, found[part] or {}, _provenance(prepared_path, feature_stores, part, analysis))
    return {part: read_encoding_part(path) for part, path in
            tqdm(paths.items(), desc="read encoding parts", unit="part", disable=not progress)}


def _results(parts: Mapping[str, EncodingPart], analysis: _Analysis, data: Mapping) -> EncodingResults:
    """The :class:`EncodingResults` of the parts (the pairs' partitions computed here)."""
    spaces = {name: dict(parts[name].values) for name in analysis.names}
    partitions = {}
    for a, b in analysis.pairs:
        key = f"{a}|{b}"
        partitions[key] = pair_partition(key, spaces[a]["r"], spaces[b]["r"], parts[key].values)
    models = {name: model for name in analysis.names if (model := parts[name].model) is not None}
    nc = None if data["ncsnr"] is None else noise_ceiling(data["ncsnr"], data["n_repeats"])
    return EncodingResults(spaces=spaces, partitions=partitions, noise_ceiling=nc, models=models)


def assemble_encoding_parts(prepared_path: str | os.PathLike, feature_stores: Mapping[str, str | os.PathLike],
                            out_dir: str | os.PathLike, config: EncodingConfig | None = None, device: str = "cpu",
                            progress: bool = False) -> EncodingResults:
    """Join every part into ``results.h5``, the maps and ``summary.json``, then remove the parts.

    The files are those :func:`~brain2image.encoding.analysis.run_encoding_analysis` writes with
    the same arguments (:func:`~brain2image.encoding.analysis.write_encoding_outputs`).

    Parameters
    ----------
    prepared_path : path-like
        The prepared file the parts were fitted to (the voxels, the noise ceiling, the summary ROIs).
    feature_stores : mapping name -> path-like
        Every feature store of the analysis, in its order (recorded in the results; not read).
    out_dir : path-like
        Parts in ``<out_dir>/encoding/parts/``; results go to ``<out_dir>/encoding/``.
    config : EncodingConfig, optional
    device : str
        The run's torch device (accepted as :func:`fit_encoding_part` takes it; assembly fits nothing).
    progress : bool
        Show a bar over the part files read.

    Returns
    -------
    EncodingResults

    Raises
    ------
    MissingFileError
        A part file is missing or incomplete (the message names the parts and the folder).
    DataFormatError
        A part was fitted from another config, prepared file, feature store or set of parts (the
        message names the part file and the field).
    """
    analysis = _analysis(list(feature_stores), config)
    prepared_path = Path(prepared_path)
    parts = _read_parts(prepared_path, feature_stores, out_dir, analysis, progress)
    data = read_roi_data(prepared_path, analysis.config.roi)
    results = _results(parts, analysis, data)
    write_encoding_outputs(results, prepared_path, feature_stores, out_dir, analysis.config, data)
    shutil.rmtree(encoding_parts_folder(out_dir), ignore_errors=True)
    logger.info("encoding: %d parts assembled into %s", len(parts), Path(out_dir) / "encoding")
    return results
