"""The stage abstraction: :class:`Stage`, what it runs in (:class:`StageContext`), and :func:`run_stage`.

A stage reads its settings from a :class:`~brain2image.config.RunConfig` and finds its files
either in a run folder (:class:`~brain2image.formats.run_layout.RunLayout`: ``brain2image run``,
``demo``, a cluster runner) or at the explicit paths of a stage command (``brain2image fit
--prepared ... --out ...``). Both call the same :meth:`Stage.run`. A cluster runner asks the stage
how it splits (:meth:`Stage.tasks`), runs each task with :func:`run_stage`, then joins them with
:func:`finish_stage` (:meth:`Stage.finish`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._io import atomic_write_text
from ..config import RUN_SECTIONS, RunConfig, config_from_dict, config_to_dict
from ..devices import check_device, is_out_of_memory
from ..errors import DataFormatError, InvalidArgumentError, ResourceError
from ..formats.run_layout import RunLayout
from ..interrupts import interrupted_during, say_skipped
from .options import RUN, Option, flag_of, merge_options, section_options, shard_option
from .tasks import Split, TaskSpec, shard_tasks

if TYPE_CHECKING:
    from ..ldm.loading import LatentDiffusionModel
    from ..sources import DataSource, StimulusSource

__all__ = ["Stage", "StageContext", "Timings", "CommandOutput", "run_stage", "finish_stage", "stage_guard",
           "check_run_model", "out_of_memory_message", "UNRECORDED_SETTINGS"]

logger = logging.getLogger(__name__)

#: Settings that never shape a stage's outputs: paths, the model's name (its weights are checked by
#: fingerprint, :func:`check_run_model`), the machine, threads, the plug-ins to import.
UNRECORDED_SETTINGS = ("nsd_root", "out_dir", "model", "device", "threads", "plugins", "subjects", "source.root")


class Timings:
    """Seconds per stage (or per part of a stage), kept in ``timings.json`` when ``path`` is given.

    Parameters
    ----------
    path : Path, optional
        The run folder's ``timings.json`` (read when present, so resumed runs keep earlier timings).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.values: dict[str, float] = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        self.count = 0

    def record(self, name: str, seconds: float) -> None:
        """Record (and save) the time of ``name``."""
        self.values[name] = round(float(seconds), 2)
        self.count += 1
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.values, indent=2))

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time the block as ``name`` (recorded only when the block finishes)."""
        start = time.perf_counter()
        yield
        self.record(name, time.perf_counter() - start)


def check_run_model(layout: RunLayout, name: str, fingerprint: str) -> None:
    """Record the run's model in ``model.json``; refuse to resume a run folder made with other weights.

    Resuming with other weights would silently reuse features, decoders and images of the first.

    Raises
    ------
    DataFormatError
        When ``model.json`` holds another fingerprint.
    """
    path = layout.file("model")
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise DataFormatError(
                f"{path}: this run folder was made with model {previous.get('model')!r} (fingerprint "
                f"{previous.get('fingerprint')}), now {name!r} has fingerprint {fingerprint}; expected the "
                f"same weights to resume. Use a new output folder or delete {layout.root}")
    else:
        atomic_write_text(path, json.dumps({"model": name, "fingerprint": fingerprint}, indent=2))


class StageContext:
    """What a stage runs with: the config, where its files are, the model and the timings.

    Parameters
    ----------
    config : RunConfig
        Settings (a stage command builds one from its options).
    paths : mapping, optional
        Explicit inputs and outputs of a stage command, by option key (``prepared``, ``out``,
        ...). ``None``: the stage works in the run folder ``config.out_dir``.
    extra : mapping, optional
        Values of the command's own options (``target``, ``ids``, ``check``, ...).
    progress : bool
        Progress bars.
    timings : Timings, optional
        Where stage times go (default: kept in memory only).
    part : any, optional
        The piece of the stage this context runs: the ``part`` of one of its :meth:`Stage.tasks`
        (the stage's own typed value); ``None``: the whole stage.

    Notes
    -----
    A context pickles without its loaded model, so a cluster runner can ship it to a worker that
    calls ``stage.run(ctx, shard)``.
    """

    def __init__(self, config: RunConfig, *, paths: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None, progress: bool = True, timings: Timings | None = None,
                 part: Any = None):
        self.config = config
        self.paths = None if paths is None else dict(paths)
        self.extra = dict(extra or {})
        self.part = part
        self.progress = progress
        self.timings = timings if timings is not None else Timings()
        #: The innermost part (:meth:`timed`) an error left, for the out-of-memory message.
        self.failed_part: str | None = None
        self._model: LatentDiffusionModel | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    @property
    def in_run_folder(self) -> bool:
        """Whether the stage reads and writes the run folder (no explicit paths)."""
        return self.paths is None

    @property
    def layout(self) -> RunLayout:
        """The run folder's layout (``config.out_dir``, subject, model, the source's dataset name)."""
        return RunLayout.of(self.config.out_dir, self.config.subject, self.config.model, self.source().dataset)

    def source(self) -> DataSource:
        """The run's data source (``[source]``, or the ``nsd_root`` shorthand)."""
        from ..sources import source_of

        return source_of(self.config)

    def stimuli(self) -> StimulusSource:
        """The images and captions of the run's data source."""
        return self.source().stimuli()

    def path(self, key: str, in_run_folder: Callable[[], Any]) -> Any:
        """The explicit path ``key`` of a stage command, or, in a run folder, ``in_run_folder()``.

        ``None`` when a command was not given that path.
        """
        if self.paths is None:
            return in_run_folder()
        return self.paths.get(key)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time a part of a stage as ``name`` (``features_z``, ``fit_c``, ...).

        An error leaving the block records ``name`` in :attr:`failed_part` (unless an inner part did).
        """
        try:
            with self.timings.timed(name):
                yield
        except BaseException:
            self.failed_part = self.failed_part or name
            raise

    def model(self) -> LatentDiffusionModel:
        """The latent diffusion model ``config.model``, loaded once.

        In a run folder, its fingerprint must match the one the folder was made with
        (:func:`check_run_model`).
        """
        if self._model is None:
            from ..ldm.loading import load_ldm
            from ..ldm.random_model import warn_if_random_on_real_data

            self._model = load_ldm(self.config.model, device=self.config.device, dtype=self.config.dtype)
            known = self.config.source.root is not None  # a stage command given no source folder warns nothing
            warn_if_random_on_real_data(self._model.name, self.stimuli() if known else None)
            if self.in_run_folder:
                check_run_model(self.layout, self.config.model, self._model.fingerprint())
        return self._model


@dataclass
class CommandOutput:
    """What a stage command prints: ``lines`` on stdout, ``errors`` on stderr, and its exit status."""

    lines: list[str] = field(default_factory=list)
    code: int = 0
    errors: list[str] = field(default_factory=list)


class Stage:
    """One stage of the method (docs/stages.md).

    Subclass it, set the class attributes, implement :meth:`run` (and :meth:`outputs`), and
    register it with :func:`~brain2image.stages.registry.register_stage`: ``brain2image run`` then
    runs it in order, and ``brain2image <name>`` is its command.

    Attributes
    ----------
    name : str
        Stage name: the command (``_`` -> ``-``) and the key of its time in ``timings.json``.
    help, description : str
        One line for ``brain2image --help``; a paragraph for ``brain2image <name> --help``.
    sections : tuple of str
        The run-config sections it reads (:data:`~brain2image.config.RUN_SECTIONS` keys); every
        field of each becomes an option of the command.
    run_keys : tuple of str
        Top-level run-config keys it reads (``nsd_root``, ``model``, ``device``, ...), also options.
    path_options : tuple of Option
        The command's explicit inputs and outputs (``role`` set).
    extra_options : tuple of Option
        Options of the command alone (no config key).
    option_overrides : dict
        Per key, changes to a generated option (``{"subject": {"required": True}}``).
    settings_class : dataclass type, optional
        The stage's own settings, for a stage defined outside :mod:`brain2image.config`: its fields
        are options too, and a run config's ``[<name>]`` table sets them (:meth:`settings`).
    shardable : bool
        Whether :meth:`run` takes a shard ``(i, n)`` of the image ids (adds ``--shard``).
    timed : bool
        Whether ``run`` records the stage's time (parts timed with :meth:`StageContext.timed`
        replace the whole).
    memory_options : tuple of str
        The options that bound the stage's memory, as ``"section.key"`` (``"decoder.target_chunk"``):
        an out-of-memory error in the stage becomes a :class:`~brain2image.errors.ResourceError`
        naming them (:func:`stage_guard`).
    part_memory_options : dict
        The same for a part of the stage (a name given to :meth:`StageContext.timed`), named instead
        of ``memory_options`` when the error left that part (``{"features_zc": ("zc.batch_size",)}``).
    unrecorded_settings : tuple of str
        Settings it reads that do not shape its outputs (paths, the machine, threads), as ``"key"``
        or ``"section.key"``: :meth:`output_settings` leaves them out, so changing them on a resume
        is not refused (default :data:`UNRECORDED_SETTINGS`).
    recomputed : bool
        Whether every run rewrites all its outputs from scratch (it never resumes): a resume with
        other settings of this stage is then not refused.
    replaces : tuple of str
        Stages this one stands in for when it is enabled: they are then disabled in a run (their
        :meth:`enabled` asks :func:`~brain2image.stages.registry.replaced_by`), and this stage
        writes their outputs.
    source_keys : tuple of str, optional
        The ``[source]`` keys among its command's options (``--source``, ``--root``, ...); default:
        ``kind``, ``root`` and ``image_size`` for a stage with ``nsd_root`` among its ``run_keys``.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    description: ClassVar[str] = ""
    sections: ClassVar[tuple[str, ...]] = ()
    run_keys: ClassVar[tuple[str, ...]] = ()
    path_options: ClassVar[tuple[Option, ...]] = ()
    extra_options: ClassVar[tuple[Option, ...]] = ()
    option_overrides: ClassVar[dict[str, dict[str, Any]]] = {}
    settings_class: ClassVar[type | None] = None
    shardable: ClassVar[bool] = False
    timed: ClassVar[bool] = True
    memory_options: ClassVar[tuple[str, ...]] = ()
    part_memory_options: ClassVar[dict[str, tuple[str, ...]]] = {}
    unrecorded_settings: ClassVar[tuple[str, ...]] = UNRECORDED_SETTINGS
    recomputed: ClassVar[bool] = False
    source_keys: ClassVar[tuple[str, ...] | None] = None
    replaces: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _source_keys(cls) -> tuple[str, ...]:
        """The ``[source]`` keys of the stage command: ``source_keys``, else those that name the stimuli.

        A stage that reads the run's source (``nsd_root`` among its ``run_keys``) takes ``--source``,
        ``--root`` and ``--image-size`` by default.
        """
        if cls.source_keys is not None:
            return cls.source_keys
        return ("kind", "root", "image_size") if "nsd_root" in cls.run_keys else ()

    # ------------------------------------------------------------------ options
    @classmethod
    def options(cls) -> tuple[Option, ...]:
        """Every option of the stage command: paths, run-wide keys, section keys, its own."""
        generated = section_options(RunConfig, RUN, cls.run_keys)
        generated += section_options(RUN_SECTIONS["source"], "source", cls._source_keys())
        for section in cls.sections:
            generated += section_options(RUN_SECTIONS[section], section)
        if cls.settings_class is not None:
            generated += section_options(cls.settings_class, cls.name)
        own = list(cls.extra_options) + ([shard_option] if cls.shardable else [])
        return merge_options([*cls.path_options, *generated, *own], cls.option_overrides)

    @classmethod
    def command_name(cls) -> str:
        """``brain2image <command_name>``."""
        return cls.name.replace("_", "-")

    def settings(self, config: RunConfig) -> Any:
        """The stage's own settings (``settings_class``) from the run config's ``[<name>]`` table.

        Raises
        ------
        DataFormatError
            For an unknown key in the table.
        """
        if self.settings_class is None:
            raise InvalidArgumentError(f"stage {self.name!r} has no settings_class; expected its settings in "
                                       "the sections it reads")
        return config_from_dict(self.settings_class, config.stage_settings.get(self.name, {}),
                                where=f"the [{self.name}] table of the run config")

    def output_settings(self, config: RunConfig) -> dict[str, Any]:
        """The settings that shape the stage's outputs, as a run folder records them (``stages/<name>.json``).

        Default: every key of its ``run_keys``, of each of its ``sections`` (``"section.key"``; a
        section left out of the config: ``"section"`` = ``None``) and of its ``settings_class``
        table (``"<name>.key"``), but the ``unrecorded_settings``; values as JSON holds them.
        """
        values: dict[str, Any] = {key: getattr(config, key) for key in self.run_keys}
        tables: list[tuple[str, Any]] = [(section, getattr(config, section)) for section in self.sections]
        if self.settings_class is not None:
            tables.append((self.name, self.settings(config)))
        for section, table in tables:
            if table is None:
                values[section] = None
            else:
                values.update({f"{section}.{key}": value for key, value in config_to_dict(table).items()})
        kept = {key: value for key, value in values.items() if key not in self.unrecorded_settings}
        return dict(json.loads(json.dumps(kept)))

    # ------------------------------------------------------------------ what it does
    def check(self, config: RunConfig) -> None:
        """Refuse a config the stage cannot run with, before any stage runs (default: the device).

        Raises
        ------
        InvalidArgumentError
            When ``config.device`` is not a torch device or this machine lacks it.
        """
        check_device(config.device)

    def enabled(self, config: RunConfig) -> bool:
        """Whether ``run`` runs this stage with ``config`` (default: always)."""
        return True

    def needs_model(self, config: RunConfig) -> bool:
        """Whether the stage uses the latent diffusion model with ``config``.

        ``run`` then checks the run folder's model fingerprint before it, even when it is done.
        """
        return False

    def needs_model_now(self, ctx: StageContext) -> bool:
        """Whether :func:`run_stage` loads the model (and checks its fingerprint) before this run of the stage.

        :meth:`needs_model` of the context's config; a stage whose pieces (``ctx.part``) do not
        all use the model narrows it.
        """
        return self.needs_model(ctx.config)

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """Files the stage reads, by name."""
        return {}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """Files the stage writes, by name."""
        return {}

    def redo_outputs(self, ctx: StageContext) -> dict[str, Any]:
        """What ``--redo`` removes before the stage runs again (default: :meth:`outputs`).

        A stage with intermediate files that a rerun would reuse adds them.
        """
        return self.outputs(ctx)

    def is_done(self, ctx: StageContext) -> bool:
        """Whether every output is on disk (``run`` then skips the stage)."""
        outputs = self.outputs(ctx)
        return bool(outputs) and all(Path(p).exists() for p in outputs.values())

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> Any:
        """Run the stage (resumably).

        Parameters
        ----------
        ctx : StageContext
        shard : (i, n), optional
            Only part ``i`` of ``n`` (1-based) of the image ids, for stages with ``shardable``.
        """
        raise NotImplementedError

    def refuse_shard(self, shard: tuple[int, int] | None) -> None:
        """Raise :class:`InvalidArgumentError` for a shard given to a stage that takes none."""
        if shard is not None and not self.shardable:
            raise InvalidArgumentError(f"stage {self.name!r} does not run on shards (got shard {shard[0]}/{shard[1]});"
                                       " expected no shard: only features and reconstruct take one")

    # ------------------------------------------------------------------ as tasks
    def tasks(self, ctx: StageContext, split: Split) -> list[list[TaskSpec]]:
        """The stage as tasks of a cluster run: steps in order, each a list of tasks that may run at once.

        Parameters
        ----------
        ctx : StageContext
            The run folder's context (no ``part``); nothing is read from disk but the config.
        split : Split
            How finely the run asks the stages to split (shards of the image ids, parts of targets).

        Returns
        -------
        list of list of TaskSpec
            Default: for a ``shardable`` stage one task per shard of the image ids
            (``split.shards``), else one task, the whole stage (as ``brain2image run`` runs it).
            When there is more than one task in all, :meth:`finish` joins them after the last step
            (a stage that splits must override it: the cluster plan refuses one that does not).
        """
        return shard_tasks(split.shards) if self.shardable else [[TaskSpec()]]

    def finish(self, ctx: StageContext, tasks: Sequence[TaskSpec]) -> None:
        """Join the outputs of the stage's tasks (every step's), once all of them are done.

        Called (through :func:`finish_stage`) only for a stage :meth:`tasks` split into more than one
        task, with a context of the run folder (no ``part``). Default: nothing to join.
        """

    # ------------------------------------------------------------------ as a command
    def context_from_args(self, args: argparse.Namespace, *, progress: bool = True) -> StageContext:
        """The context of a stage command: a :class:`RunConfig` from the options, explicit paths."""
        values = vars(args)
        top: dict[str, Any] = {"nsd_root": None, "out_dir": ""}
        sections: dict[str, dict[str, Any]] = {}
        paths: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for option in self.options():
            value = values.get(option.key, option.default)
            if option.role is not None:
                if value is not None:
                    paths[option.key] = value
            elif not option.sections:
                extra[option.key] = value
            for section in option.sections:
                (top if section == RUN else sections.setdefault(section, {}))[option.key] = value
        built: dict[str, Any] = {name: config_from_dict(RUN_SECTIONS[name], given)
                                 for name, given in sections.items() if name in RUN_SECTIONS}
        own = {name: given for name, given in sections.items() if name not in RUN_SECTIONS}
        config = config_from_dict(RunConfig, {**top, **built, "stage_settings": own})
        return StageContext(config, paths=paths, extra=extra, progress=progress)

    def command(self, ctx: StageContext) -> CommandOutput:
        """Run as a stage command: the stage, then the paths it wrote (one per line)."""
        from ..threads import pinned_threads

        with pinned_threads(ctx.config.threads):  # as run and every Ray worker (brain2image.threads)
            self.run(ctx, ctx.extra.get("shard"))
        return CommandOutput([str(path) for path in self.outputs(ctx).values()])


def _option_text(option: str) -> str:
    """An option as ``[decoder] target_chunk (--target-chunk)`` (a run-wide key: ``device (--device)``)."""
    section, _, key = option.rpartition(".")
    return (f"[{section}] {key}" if section and section != RUN else key) + f" ({flag_of(key)})"


def out_of_memory_message(stage: Stage, ctx: StageContext, error: BaseException) -> str:
    """One line: the stage, which memory ran out (and how), and the options that bound it."""
    detail = " ".join(str(error).split())
    detail = ". ".join(detail.split(". ")[:2])[:160] or type(error).__name__
    gpu = not isinstance(error, MemoryError)
    where = f"GPU memory on device {ctx.config.device!r}" if gpu else "host memory"
    part = ctx.failed_part
    options = stage.part_memory_options.get(part, stage.memory_options) if part else stage.memory_options
    step = f" ({part})" if part and part != stage.name else ""
    if options:
        advice = "lower " + " or ".join(_option_text(o) for o in options)
    elif gpu:
        advice = "no option of this stage bounds it; use device = 'cpu' (--device cpu)"
    else:
        advice = "no option of this stage bounds it; free memory on this machine"
    return f"stage {stage.name}{step} ran out of {where} ({detail}); {advice}"


@contextlib.contextmanager
def stage_guard(stage: Stage, ctx: StageContext) -> Iterator[None]:
    """Check the config for ``stage``, then run the block with out-of-memory errors as one line.

    :meth:`Stage.check` runs first; a ``MemoryError`` or CUDA out-of-memory error raised in the
    block becomes a :class:`~brain2image.errors.ResourceError` naming the stage's
    ``memory_options`` (:func:`out_of_memory_message`). ``run`` (:func:`run_stage`) and every
    stage command run their stage inside it.

    Raises
    ------
    InvalidArgumentError
        From :meth:`Stage.check` (a device this machine lacks, a backend the device cannot run).
    ResourceError
        For ``MemoryError`` or a CUDA out-of-memory error raised in the block.
    Interrupted
        For SIGINT / SIGTERM in the block (:mod:`brain2image.interrupts`), naming the stage.
    """
    stage.check(ctx.config)
    ctx.failed_part = None
    try:
        yield
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        raise ResourceError(out_of_memory_message(stage, ctx, error)) from error
    except KeyboardInterrupt as error:
        raise interrupted_during(stage.name, error) from None


def run_stage(stage: Stage, ctx: StageContext, shard: tuple[int, int] | None = None) -> Any:
    """Run one stage in a run folder unless it is disabled or done; time it (inside :func:`stage_guard`).

    Returns
    -------
    What :meth:`Stage.run` returned, or ``None`` when it was skipped.
    """
    if not stage.enabled(ctx.config):
        logger.info("stage %s: disabled by the config", stage.name)
        return None
    with stage_guard(stage, ctx):
        if stage.needs_model_now(ctx):
            ctx.model()
        if stage.is_done(ctx):
            say_skipped(ctx.progress, f"stage {stage.name}: done, skipped")
            _record_whole(stage, ctx, shard, only_new=True)
            return None
        logger.info("stage %s ...", stage.name)
        count, start = ctx.timings.count, time.perf_counter()
        result = stage.run(ctx, shard)
        if stage.timed and ctx.timings.count == count:
            ctx.timings.record(stage.name, time.perf_counter() - start)
        _record_whole(stage, ctx, shard)
    return result


def _record_whole(stage: Stage, ctx: StageContext, shard: tuple[int, int] | None, only_new: bool = False) -> None:
    """In a run folder, record the settings of a stage that ran whole (no shard, no part).

    ``only_new``: only when none are recorded (a done stage of a folder written before settings were).
    """
    from .recorded_settings import record_settings, settings_path

    if not ctx.in_run_folder or shard is not None or ctx.part is not None:
        return
    if not (only_new and settings_path(ctx.config.out_dir, stage.name).is_file()):
        record_settings(stage, ctx.config)


def finish_stage(stage: Stage, ctx: StageContext, tasks: Sequence[TaskSpec]) -> None:
    """Join the outputs of a stage's tasks (:meth:`Stage.finish`), inside :func:`stage_guard`.

    Raises
    ------
    DataFormatError, MissingFileError
        From the stage's own joins: a missing piece, or pieces that disagree.
    """
    if not stage.enabled(ctx.config):
        return
    with stage_guard(stage, ctx):
        stage.finish(ctx, tasks)
    _record_whole(stage, ctx, None)
