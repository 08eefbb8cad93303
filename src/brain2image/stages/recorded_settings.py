"""What each stage of a run folder was computed with: ``stages/<name>.json``, checked before a resume.

Every stage records the settings that shape its outputs (:meth:`Stage.output_settings
<brain2image.stages.Stage.output_settings>`) when it finishes in a run folder. A resume with
other settings is refused before any stage runs (:func:`check_recorded_settings`), unless
``--redo STAGE`` recomputes that stage and every later one: their old outputs are removed first
(:func:`remove_redone_outputs`). A folder written before settings were recorded is recorded on its
first resume, without a refusal.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_write_text
from ..errors import DataFormatError, InvalidArgumentError
from ..formats.partitions import PART, SHARD, piece_files

if TYPE_CHECKING:
    from ..config import RunConfig
    from .base import Stage, StageContext

__all__ = ["SETTINGS_FOLDER", "settings_path", "record_settings", "recorded_settings", "changed_settings",
           "check_recorded_settings", "redone_stages", "remove_redone_outputs"]

#: The folder of a run folder holding one ``<stage>.json`` per finished stage.
SETTINGS_FOLDER = "stages"


def settings_path(out_dir: str | Path, name: str) -> Path:
    """``<out_dir>/stages/<name>.json``."""
    return Path(out_dir) / SETTINGS_FOLDER / f"{name}.json"


def record_settings(stage: Stage, config: RunConfig) -> Path:
    """Write the settings ``stage`` computed its outputs with into its ``stages/<name>.json`` (atomically)."""
    path = settings_path(config.out_dir, stage.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage.name, "settings": stage.output_settings(config)}
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))
    return path


def recorded_settings(out_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The settings recorded for stage ``name`` in the run folder ``out_dir``; ``None`` when none are.

    Raises
    ------
    DataFormatError
        For a record that is not JSON with a ``settings`` table.
    """
    path = settings_path(out_dir, name)
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())["settings"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataFormatError(f"{path}: not a stage settings record ({error}); expected JSON with a "
                              "'settings' table, as brain2image run writes it") from error
    if not isinstance(settings, dict):
        raise DataFormatError(f"{path}: 'settings' is {settings!r}; expected a table of settings")
    return settings


def changed_settings(stage: Stage, config: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(setting, recorded value, value now)`` for each setting of ``stage`` that differs from its record.

    Empty when nothing is recorded (a folder written before settings were recorded, or the stage
    not finished yet). A setting recorded but no longer read, or read but not recorded, counts with
    ``None`` on the missing side.
    """
    old = recorded_settings(config.out_dir, stage.name)
    if old is None:
        return []
    new = stage.output_settings(config)
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _setting_text(key: str) -> str:
    """``[reconstruction] n_samples`` for ``reconstruction.n_samples``, ``[zc]`` for a whole section, else the key."""
    from ..config import RUN_SECTIONS

    section, _, name = key.rpartition(".")
    if not section:
        return f"[{key}]" if key in RUN_SECTIONS else key
    return f"[{section}] {name}"


def _refusal(stage: Stage, config: RunConfig, changes: Sequence[tuple[str, Any, Any]]) -> str:
    """One line: the stage, each changed setting with its old and new value, the two ways out."""
    what = "; ".join(f"{_setting_text(key)} = {json.dumps(old)}, now {json.dumps(new)}" for key, old, new in changes)
    return (f"{settings_path(config.out_dir, stage.name)}: stage {stage.name} in this run folder was computed with "
            f"{what}; expected the same settings to resume. Write to another run folder (demo: --out; run: "
            f"another out_dir in the config), or pass --redo {stage.name} to recompute {stage.name} and the "
            "stages after it (their old outputs are removed first)")


def redone_stages(stages: Sequence[Stage], redo: Iterable[str]) -> list[Stage]:
    """The stages ``--redo`` recomputes: each named one and every stage after it in ``stages``.

    Raises
    ------
    InvalidArgumentError
        For a name that is not one of ``stages``.
    """
    names = [stage.name for stage in stages]
    first = len(stages)
    for name in redo:
        wanted = name.replace("-", "_")
        if wanted not in names:
            raise InvalidArgumentError(f"--redo {name}: not a stage of this run; expected one of {', '.join(names)}")
        first = min(first, names.index(wanted))
    return list(stages[first:])


def check_recorded_settings(config: RunConfig, stages: Sequence[Stage], redo: Iterable[str] = ()) -> None:
    """Refuse to resume a run folder whose finished stages were computed with other settings.

    Stages recomputed by ``redo`` (:func:`redone_stages`), disabled stages and stages that rewrite
    every output on each run (``recomputed``) are not checked. Writes nothing.

    Raises
    ------
    DataFormatError
        Naming the first stage whose recorded settings differ, each changed setting with its
        recorded and its new value, and the two ways out (another run folder, or ``--redo STAGE``).
    InvalidArgumentError
        For a ``redo`` name that is not a stage of the run.
    """
    redone = {stage.name for stage in redone_stages(stages, redo)}
    for stage in stages:
        if stage.name in redone or stage.recomputed or not stage.enabled(config):
            continue
        changes = changed_settings(stage, config)
        if changes:
            raise DataFormatError(_refusal(stage, config, changes))


def _remove(path: Path) -> None:
    """Remove a file or a folder (nothing when absent), and a file's shard and part pieces."""
    if path.is_dir():
        shutil.rmtree(path)
        return
    for piece in (*piece_files(path, SHARD), *piece_files(path, PART)):
        piece.unlink()
    path.unlink(missing_ok=True)


def remove_redone_outputs(ctx: StageContext, stages: Sequence[Stage], redo: Iterable[str]) -> list[Stage]:
    """Remove the outputs and settings records of the stages ``redo`` recomputes (:func:`redone_stages`).

    The outputs are each stage's :meth:`~brain2image.stages.Stage.redo_outputs`.

    Returns
    -------
    The stages whose outputs were removed, in order.
    """
    redone = redone_stages(stages, redo) if redo else []
    for stage in redone:
        for path in stage.redo_outputs(ctx).values():
            if path is not None:
                _remove(Path(path))
        settings_path(ctx.config.out_dir, stage.name).unlink(missing_ok=True)
    return redone
