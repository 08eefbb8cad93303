"""Serialisable configuration objects: one dataclass per section of a run config.

Every field carries its help text in ``metadata["help"]``; the CLI option of a field is ``--``
followed by the field name with ``_`` replaced by ``-`` (``cv_folds`` ↔ ``--cv-folds``), and the
stage commands build their parsers from these fields (:mod:`brain2image.stages`), so a setting,
its default and its help are written once, here. Every stage saves the config it ran with next to
its output (as JSON attributes or a ``config.json``), so that a result can always be traced back
to its settings.

A run config (``brain2image run CONFIG.toml``, :class:`RunConfig`) holds the run-wide keys at the
top level and one table per section: ``[prepare]``, ``[features]``, ``[decoder]``,
``[reconstruction]``, ``[evaluation]``, ``[encoding]``, ``[zc]`` (optional), ``[report]`` and
``[brain_correlation]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .methods import METHOD_CHOICES, builtin_methods

__all__ = [
    "FeatureConfig",
    "DecoderConfig",
    "ReconstructionConfig",
    "EncodingConfig",
    "ZcConfig",
    "PrepareConfig",
    "SourceConfig",
    "DEFAULT_SOURCE",
    "EvaluationConfig",
    "EncodingOptions",
    "ReportConfig",
    "BrainCorrelationConfig",
    "RunConfig",
    "RUN_SECTIONS",
    "RENAMED_KEYS",
    "BundledTrainingConfig",
    "ENCODING_ALPHAS",
    "BACKEND_CHOICES",
    "DEFAULT_ROIS",
    "parse_sessions",
    "check_config",
    "run_config_from_dict",
    "load_run_config",
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
]

T = TypeVar("T")

#: ROIs a run prepares by default (``atlas:label`` or an atlas alone).
DEFAULT_ROIS: tuple[str, ...] = ("streams:early", "streams:ventral", "nsdgeneral")


#: Values of ``[decoder] backend`` and ``[encoding] backend`` (:mod:`brain2image.ridge.backend`).
BACKEND_CHOICES: tuple[str, ...] = ("auto", "numpy", "torch", "torch_cuda")
_BACKEND_HELP = "himalaya compute backend; auto: torch_cuda when device is CUDA, numpy otherwise"


def _field(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None, kw_only: bool = False,
           **cli: Any) -> Any:
    """A dataclass field with its help text, CLI hints and checks in ``metadata``.

    ``cli`` may hold ``choices``, ``nargs`` (``"*"`` to allow an empty list), ``parse`` (a
    converter of one command-line token, also applied to a string in a config file), ``metavar``
    and ``cli=False`` (a config-only key); and the checks :func:`check_config` makes on top of the
    type: ``min`` / ``max`` (inclusive) and ``gt`` (exclusive) bounds of a number or of each
    number of a list, ``min_len`` (of a list: default 1, 0 with ``nargs="*"``), ``item_len`` (of
    each list of a list of lists) and ``expected`` (the error's wording of what is expected);
    ``label=True`` marks subject labels, checked by the run's data source (:func:`_check_run_values`).
    ``kw_only`` makes the field a keyword-only argument of the class.
    """
    metadata = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, kw_only=kw_only)
    return field(default=default, metadata=metadata, kw_only=kw_only)


#: A model name that is not a path: ``bundled`` (or another registered name), ``random:<arch>``, a
#: hub id ``owner/name``.
_MODEL_NAME = re.compile(r"random:.*|[\w.-]+(/[\w.-]+)?")


def is_missing_model_folder(model: str) -> bool:
    """Whether ``model`` can only be a local folder, and that folder does not exist.

    Only a folder: it starts with ``/``, ``.`` or ``~``, or is not a name, ``owner/name`` or
    ``random:`` name.
    """
    path_like = model.startswith((".", "~", "/")) or not _MODEL_NAME.fullmatch(model)
    return path_like and not Path(model).expanduser().is_dir()


def parse_sessions(text: str | None) -> int | list[int] | None:
    """Sessions to prepare: ``37`` -> a count; ``1,2,5`` or ``1-3,7`` -> a list; None -> all on disk.

    Raises
    ------
    ValueError
        When ``text`` is neither a count nor a list of sessions and ranges.
    """
    if text is None:
        return None
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    sessions: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            sessions.extend(range(int(first), int(last) + 1) if sep else [int(first)])
        except ValueError:
            raise ValueError(f"sessions {text!r}: expected a count (37) or a list (1,2,5 or 1-3,7)") from None
    return sessions


def _subject_token(text: str) -> int | str:
    """A ``--subject`` token as a config file would hold it: ``3`` -> 3, another label as given."""
    from .sources.base import numeric_label

    return numeric_label(text.strip())


def _parse_pair(text: str) -> list[str]:
    """``A:B`` -> ``["A", "B"]`` (a pair of feature spaces to partition)."""
    first, sep, second = str(text).partition(":")
    if not sep or not first or not second:
        raise ValueError(f"partition pair {text!r}: expected A:B, e.g. z:c")
    return [first, second]


#: ``[source] kind`` of a run config without one, or with the top-level ``nsd_root`` shorthand.
DEFAULT_SOURCE = "nsd"


@dataclass
class SourceConfig:
    """Where the study comes from: a data source of the registry (:mod:`brain2image.sources`) and its files."""

    kind: str = _field(DEFAULT_SOURCE, cli=False, help="data source: a registered kind (entry-point group "
                                                        "brain2image.sources)")
    root: str | None = _field(None, cli=False, help="the source's folder (relative: to the config file's folder)")


@dataclass
class PrepareConfig:
    """Which NSD betas ``prepare`` reads and how (the NSD root and subject are run-wide keys)."""

    rois: list[str] = _field(factory=lambda: list(DEFAULT_ROIS), metavar="SPEC",
                             help="ROIs to prepare, atlas:label or an atlas alone (every value > 0); "
                                  "must include the decoder and encoding ROIs")
    sessions: int | list[int] | None = _field(None, parse=parse_sessions, min=1,
                                              expected='a count (37), a list of sessions ([1, 2, 5]) or '
                                                       'a string of sessions and ranges ("1-3,7")',
                                              help="a count (37) or a list (1,2,5 / 1-3); default: all on disk")
    beta_format: str = _field("hdf5", choices=("hdf5", "nifti"),
                              help="file format of the betas to read (volume spaces)")
    space: str = _field("func1pt8mm", choices=("func1pt8mm", "func1mm", "MNI", "fsaverage"), help="NSD space")
    beta_version: str = _field("betas_fithrf_GLMdenoise_RR", help="NSD beta version folder")
    zscore_sessions: bool = _field(False, help="z-score each voxel over each session's trials")
    scale: str = _field("percent", choices=("percent", "raw"),
                        help="percent: %% signal change (int16 / 300); raw: the stored int16 values")


@dataclass
class FeatureConfig:
    """How the z and c features of an image are computed."""

    z_resolution: int | None = _field(None, min=8, help="side (pixels) the image is resized to before VAE encoding; "
                                                 "default: the model's (320 for Stable Diffusion, 5/8 of the "
                                                 "native size for the bundled model)")
    caption_reduction: str = _field("mean", choices=("mean", "first"),
                                    help="how the text embeddings of an image's captions are combined into c")
    latent_sample: str = _field("mean", choices=("mean", "sample"),
                                help="z is the VAE posterior mean, or a seeded draw")
    batch_size: int = _field(32, min=1, help="images per model call")
    seed: int = _field(0, min=0, help="seed of the latent draws (latent_sample = sample)")


@dataclass
class DecoderConfig:
    """Ridge decoders from ROI voxels to features.

    The grid spans the reference code's 1e-6..1 range scaled by the number of training rows, up
    to strong shrinkage.
    """

    z_roi: str = _field("early", help="ROI key of the prepared file decoded into z")
    c_roi: str = _field("ventral", help="ROI key of the prepared file decoded into c")
    alphas: list[float] = _field(factory=lambda: [float(10.0**k) for k in range(0, 7)], gt=0,
                                 help="ridge grid, after voxel standardisation")
    cv_folds: int = _field(5, min=2, help="folds (grouped by image) of the cross-validation that picks each alpha")
    target_chunk: int = _field(8192, min=1, help="targets solved at a time (bounds peak memory); with backend "
                                          "torch_cuda, fewer when the free GPU memory holds fewer")
    backend: str = _field("auto", choices=BACKEND_CHOICES, help=_BACKEND_HELP)
    ridge_dtype: str = _field("float32", choices=("float32", "float64"), help="float type of the ridge solve")


@dataclass
class ReconstructionConfig:
    """img2img generation from decoded z and c; defaults are the paper's."""

    num_inference_steps: int = _field(50, min=1, help="DDIM schedule length")
    strength: float = _field(0.8, gt=0, max=1, help="img2img noise strength (strength × steps denoising steps)")
    guidance_scale: float = _field(5.0, min=0, help="classifier-free guidance scale")
    eta: float = _field(0.0, min=0, max=1, help="DDIM eta")
    n_samples: int = _field(5, min=1, help="samples per test image")
    seed: int = _field(0, min=0, help="seed of the samples (each one seeded from seed, 73k id and sample)")
    batch_size: int = _field(10, min=1, help="images per pipeline call")
    # Choices: the registered methods (brain2image.methods), plug-ins included; default: the built-ins that
    # draw from decoded features.
    methods: tuple[str, ...] = _field(factory=lambda: builtin_methods(decoded_only=True), choices=METHOD_CHOICES,
                                      help="reconstruction methods (oracle uses the true z and c)")


#: Ridge grid of the encoding models (features standardised and scaled by 1/sqrt(n_features)).
ENCODING_ALPHAS: tuple[float, ...] = tuple(float(10.0**k) for k in range(-2, 7))


@dataclass
class EncodingConfig:
    """Hyperparameters of the encoding analysis (saved with every result)."""

    roi: str = _field("nsdgeneral", help="ROI key of the prepared file whose voxels are modelled")
    summary_rois: list[str] = _field(factory=lambda: ["early", "ventral"], nargs="*",
                                     help="ROI keys summarised (mean r per ROI) in summary.json and the plots")
    alphas: list[float] = _field(factory=lambda: list(ENCODING_ALPHAS), gt=0,
                                 help="ridge grid (features standardised and scaled by 1/sqrt(n_features))")
    cv_folds: int = _field(5, min=2, help="cross-validation folds over unique training images")
    banded_n_iter: int = _field(20, min=1, help="random-search draws of the banded ridge kernel weights")
    partition_pairs: list[list[str]] | None = _field(
        None, parse=_parse_pair, nargs="+", metavar="A:B", min_len=0, item_len=2,
        expected='a list of pairs of feature spaces, e.g. [["z", "c"]] or ["z:c"] ([]: none)',
        help="pairs of feature spaces to partition; default: z:c plus consecutive zc_<strength> levels")
    target_chunk: int | None = _field(None, min=1,
                                      help="voxels solved at a time (bounds memory); default: all, or with "
                                           "backend torch_cuda what the free GPU memory holds (a value caps that)")
    backend: str = _field("auto", choices=BACKEND_CHOICES, help=_BACKEND_HELP)
    seed: int = _field(0, min=0, help="seed of the CV splits and the random search")
    maps: bool = _field(True, help="write NIfTI / PNG maps")


@dataclass
class ZcConfig:
    """How z_c and U-Net feature stores (encoding feature spaces) are computed."""

    zc_strengths: list[float] = _field(factory=lambda: [0.25, 0.5, 0.75], min=0, max=1,
                                       help="noise strengths in [0, 1] of the z_c runs (s runs "
                                            "int(num_inference_steps * s) steps)")
    num_inference_steps: int = _field(50, min=1, help="DDIM schedule length")
    guidance_scale: float = _field(5.0, min=0, help="classifier-free guidance scale")
    unet_layers: list[str] = _field(factory=lambda: ["down_blocks.2", "mid_block", "up_blocks.1"], nargs="*",
                                    help="U-Net submodules (unet.get_submodule names) whose outputs are captured")
    unet_steps: list[float] = _field(factory=lambda: [0.0, 0.5, 1.0], nargs="*", min=0, max=1,
                                     help="where in each run activations are taken, as fractions of its steps "
                                          "(0 first, 1 last)")
    pool_size: int = _field(1, min=1, help="side of the spatial average-pooling grid (1: per-channel means)")
    max_dim: int | None = _field(None, min=1, help="random-project U-Net features longer than this (seeded)")
    batch_size: int = _field(8, min=1, help="images per denoising run")
    seed: int = _field(0, min=0, help="seed of the noise (torch.Generator(seed + 73k id))")


@dataclass
class EvaluationConfig:
    """Which metric set the evaluation computes."""

    metrics: str = _field("embedded", choices=("embedded", "full"),
                          help="embedded: pixels + the scene evaluator (simulated study); "
                               "full: AlexNet, Inception-v3, CLIP, EfficientNet-B1, SwAV (real images)")
    weights_dir: str | None = _field(None, help="folder with the feature networks' checkpoints "
                                                "(default: the local caches)")
    size: int = _field(425, min=11, expected="an integer ≥ 11 (the SSIM window is 11 pixels)",
                       help="PixCorr/SSIM comparison size (capped at the real images' size)")
    retrieval_candidates: int = _field(300, min=2, help="test images drawn per retrieval draw (MindEye: 300; "
                                                        "all of them when the test set is smaller)")
    retrieval_draws: int = _field(30, min=1, help="random draws of the retrieval's candidate set (MindEye: 30)")
    retrieval_seed: int = _field(0, min=0, help="seed of the retrieval's draws")


@dataclass
class EncodingOptions(EncodingConfig):
    """The run's encoding section: every :class:`EncodingConfig` field, plus ``enabled``."""

    enabled: bool = _field(True, cli=False, help="run the encoding analysis")

    def analysis_config(self) -> EncodingConfig:
        """The :class:`EncodingConfig` part."""
        return EncodingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EncodingConfig)})


@dataclass
class ReportConfig:
    """What the report shows."""

    n_images: int = _field(8, min=1, help="test images shown in the report's grid")


@dataclass
class BrainCorrelationConfig:
    """How the ``brain_correlation`` stage computes z of the reconstructions."""

    batch_size: int = _field(16, min=1, help="reconstructions per VAE call (bounds memory)")


@dataclass
class RunConfig:
    """Everything a run needs; saved as ``run_config.json`` in the run folder.

    The top-level fields are run-wide (several stages read them); each section is the config
    dataclass of its stage. ``zc`` is ``None`` unless the config names z_c / U-Net feature spaces
    (a ``[zc]`` table): the encoding then models them too. Any other table goes to
    ``stage_settings`` for the stage of that name (docs/stages.md).

    ``source`` is the data source (:mod:`brain2image.sources`); ``nsd_root`` is its shorthand for
    NSD and mirrors an NSD source's root (None for another kind), so a ``dataclasses.replace`` that
    changes ``source`` to another root or kind passes ``nsd_root=None`` too (else: a one-line error).
    """

    nsd_root: str | None = _field(None, kw_only=True, help="NSD root (holds nsddata/, nsddata_betas/, "
                                  "nsddata_stimuli/): shorthand for [source] kind = \"nsd\", root = ...")
    out_dir: str = _field(help="run folder")
    subject: int | str = _field(1, label=True, parse=_subject_token, metavar="LABEL",
                                help="subject label of the data source (NSD: 1..8)")
    subjects: list[int | str] | None = _field(
        None, cli=False, label=True,
        help="several subjects, each run into <out_dir>/subjXX/, then a study summary (instead of subject)")
    model: str = _field("bundled", help="'bundled', a diffusers hub id in the local cache, a local diffusers "
                                        "folder, or 'random:sd-v1-4' (SD v1.4's architecture with random "
                                        "weights, to measure a run's sizes; docs/random_model.md)")
    device: str = _field("cpu", help="torch device of the run ('cpu', 'cuda', 'cuda:1'): the model, the ridge "
                                     "decoders and encoding models (backend auto) and the evaluation's networks")
    dtype: str | None = _field(None, choices=("float32", "float16", "bfloat16"),
                               help="torch dtype of the model (default: float32 on CPU, float16 on CUDA)")
    threads: int | None = _field(None, min=1, help="torch CPU threads (default: all)")
    source: SourceConfig = field(default_factory=SourceConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    reconstruction: ReconstructionConfig = field(
        default_factory=lambda: ReconstructionConfig(methods=builtin_methods()))
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    encoding: EncodingOptions = field(default_factory=EncodingOptions)
    zc: ZcConfig | None = None
    report: ReportConfig = field(default_factory=ReportConfig)
    brain_correlation: BrainCorrelationConfig = field(default_factory=BrainCorrelationConfig)
    stage_settings: dict[str, dict[str, Any]] = _field(
        factory=dict, cli=False, help="tables of stages registered from outside this module (a stage's own "
                                      "settings_class), by stage name; checked when the run starts")

    def __post_init__(self) -> None:
        self.source, self.nsd_root = _reconciled_source(self.source, self.nsd_root, None)

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-serialisable), as a run folder saves it.

        ``subjects`` only when set, and an NSD source as ``nsd_root`` (its shorthand) rather than a
        ``source`` table, so a one-subject NSD run's ``run_config.json`` stays as it was.
        """
        values = config_to_dict(self)
        if values.get("subjects") is None:
            values.pop("subjects", None)
        values.pop("source" if self.nsd_root is not None else "nsd_root")
        return values


#: Sections of a run config: table name -> dataclass.
RUN_SECTIONS: dict[str, type] = {"source": SourceConfig, "prepare": PrepareConfig, "features": FeatureConfig,
                                 "decoder": DecoderConfig,
                                 "reconstruction": ReconstructionConfig, "evaluation": EvaluationConfig,
                                 "encoding": EncodingOptions, "zc": ZcConfig, "report": ReportConfig,
                                 "brain_correlation": BrainCorrelationConfig}

#: Keys renamed or moved, so that an unknown-key error can name the new one.
RENAMED_KEYS: dict[str, str] = {
    "n_folds": "cv_folds", "folds": "cv_folds", "n_targets_batch": "target_chunk", "chunk_size": "target_chunk",
    "strengths": "zc_strengths", "steps": "num_inference_steps", "guidance": "guidance_scale",
    "banded_iter": "banded_n_iter", "pair": "partition_pairs", "resolution": "z_resolution",
    "rois": "[prepare] rois", "sessions": "[prepare] sessions",
    "beta_format": "[prepare] beta_format", "report_images": "[report] n_images",
}


@dataclass
class BundledTrainingConfig:
    """Hyperparameters of the bundled-model recipe (saved next to the checkpoints)."""

    image_size: int = 64
    n_train_scenes: int = _field(8000, help="procedural training scenes")
    scene_seed: int = 1234
    seed: int = _field(0, help="seed of the training")
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_minutes: float = _field(14.0, help="VAE training budget in minutes")
    vae_kl_weight: float = 1e-6
    unet_channels: tuple[int, ...] = (48, 96, 192)
    #: Which U-Net levels (finest first) cross-attend to the text; the bottleneck always does.
    #: Attending at every level, with channels (48, 96, 160) to keep the size, measured no better.
    unet_cross_attention_levels: tuple[bool, ...] = (True, True, False)
    unet_attention_heads: int = 4
    unet_pooled_text: bool = True
    unet_batch: int = 64
    unet_lr: float = 4e-4
    unet_minutes: float = _field(90.0, help="U-Net training budget in minutes (a larger value continues "
                                            "a finished U-Net)")
    unet_empty_caption_p: float = 0.1
    unet_mean_caption_p: float = 0.4
    offset_noise: float = 0.05
    ema_decay: float = 0.999
    checkpoint_minutes: float = 5.0
    threads: int = _field(2, help="torch CPU threads")


def config_to_dict(config: Any) -> dict:
    """A dataclass config as a plain dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_to_json(config: Any) -> str:
    """A dataclass config as indented JSON."""
    return json.dumps(config_to_dict(config), indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------- checks
class _Invalid(Exception):
    """A value that does not fit its field; ``expected`` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class _Checking:
    """Where the values being checked come from (a file, or None) and whether ``None`` means unset."""

    where: str | None
    allow_none: bool


_NOUNS: dict[Any, tuple[str, str]] = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
                                      float: ("a number", "numbers"), str: ("a string", "strings")}


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a dataclass (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


def _alternatives(hint: Any) -> tuple[Any, ...] | None:
    """The members of a union type (``X | None`` included), or None for another type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _bounds_text(meta: Mapping[str, Any]) -> str:
    """`` ≥ 1``, `` > 0``, `` in [0, 1]``, `` in (0, 1]`` (empty without bounds)."""
    low, high, above = meta.get("min"), meta.get("max"), meta.get("gt")
    if high is not None and (low is not None or above is not None):
        return f" in [{low}, {high}]" if above is None else f" in ({above}, {high}]"
    if low is not None:
        return f" ≥ {low}"
    if above is not None:
        return f" > {above}"
    return f" ≤ {high}" if high is not None else ""


def _describe(hint: Any, meta: Mapping[str, Any], plural: bool = False) -> str:
    """What a value of type ``hint`` with the checks of ``meta`` is, in words."""
    alternatives = _alternatives(hint)
    if alternatives is not None:
        return " or ".join(_describe(a, meta, plural) for a in alternatives if a is not type(None))
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        items = _describe(typing.get_args(hint)[0], meta, plural=True)
        if plural:
            size = meta.get("item_len")
            return f"lists of {size} {items}" if size is not None else f"lists of {items}"
        at_least = meta.get("min_len", 0 if meta.get("nargs") == "*" else 1)
        kind = {0: "a list", 1: "a non-empty list"}.get(at_least, f"a list of at least {at_least}")
        return f"{kind} of {items}"
    if dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        return "tables" if plural else "a table of keys"
    if meta.get("choices"):
        names = ", ".join(json.dumps(c) for c in meta["choices"])
        return f"items from {names}" if plural else f"one of {names}"
    single, many = _NOUNS.get(hint, (f"a {getattr(hint, '__name__', hint)}", f"{getattr(hint, '__name__', hint)}s"))
    return (many if plural else single) + (_bounds_text(meta) if hint in (int, float) else "")


def _fits_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the scalar type ``hint`` (an int for a float; never a bool for a number)."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _fits_bounds(value: Any, meta: Mapping[str, Any]) -> bool:
    """Whether the number ``value`` is within the ``min`` / ``max`` / ``gt`` bounds of ``meta``."""
    low, high, above = meta.get("min"), meta.get("max"), meta.get("gt")
    return ((low is None or value >= low) and (high is None or value <= high)
            and (above is None or value > above))


def _parse_text(value: str, hint: Any, meta: Mapping[str, Any]) -> Any:
    """``meta["parse"](value)`` (the command-line form of a value), an error as :class:`_Invalid`."""
    try:
        return meta["parse"](value)
    except (ValueError, TypeError):
        raise _Invalid(_describe(hint, meta)) from None


def _check_list(value: Any, hint: Any, meta: Mapping[str, Any], checking: _Checking, item: bool) -> Any:
    """A list (or tuple) value: each item checked; a tuple for a ``tuple[...]`` field."""
    inner = typing.get_args(hint)[0]
    if not isinstance(value, (list, tuple)):
        example = f", e.g. [{json.dumps(value)}]" if isinstance(value, str) and inner is str else ""
        raise _Invalid(_describe(hint, meta) + example)
    if item:
        bad_length = meta.get("item_len") is not None and len(value) != meta["item_len"]
    else:
        bad_length = len(value) < meta.get("min_len", 0 if meta.get("nargs") == "*" else 1)
    if bad_length:
        raise _Invalid(_describe(hint, meta))
    items = []
    for entry in value:
        try:
            if isinstance(entry, str) and inner is not str and "parse" in meta and "nargs" in meta:
                entry = _parse_text(entry, inner, meta)
            items.append(_check_value(entry, inner, meta, checking, item=True))
        except _Invalid:
            raise _Invalid(_describe(hint, meta)) from None
    if typing.get_origin(hint) is tuple:
        return tuple(items)
    return items if any(a is not b for a, b in zip(items, value, strict=True)) else value


def _check_union(value: Any, hint: Any, meta: Mapping[str, Any], checking: _Checking, item: bool) -> Any:
    """``value`` checked against the first member of the union ``hint`` it fits (None when one is None)."""
    alternatives = typing.get_args(hint)
    if value is None and type(None) in alternatives:
        return None
    for alternative in alternatives:
        try:
            return _check_value(value, alternative, meta, checking, item)
        except _Invalid:
            continue
    raise _Invalid(_describe(hint, meta))


def _check_table(value: Any, hint: Any, checking: _Checking) -> Any:
    """A section (a dataclass instance, checked in turn) or a table of tables (``stage_settings``)."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):  # type: ignore[arg-type]
            raise _Invalid(f"a {hint.__name__}")  # type: ignore[union-attr]
        check_config(value, checking.where, allow_none=checking.allow_none)
    elif not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise _Invalid("a table of tables")
    return value


def _check_value(value: Any, hint: Any, meta: Mapping[str, Any], checking: _Checking, item: bool = False) -> Any:
    """``value`` checked against ``hint`` and the checks of ``meta``; raises :class:`_Invalid`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, hint, meta, checking, item)
    if origin in (list, tuple):
        return _check_list(value, hint, meta, checking, item)
    if dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        return _check_table(value, hint, checking)
    if hint is Any:
        return value
    fits = _fits_type(value, hint)
    if fits and meta.get("choices"):
        fits = value in meta["choices"]
    if fits and hint in (int, float):
        fits = _fits_bounds(value, meta)
    if not fits:
        raise _Invalid(_describe(hint, meta))
    return value


def _section_of(cls: type) -> str | None:
    """The run-config table of a config class (``""``: the top level; None: none)."""
    if cls is RunConfig:
        return ""
    if cls is EncodingConfig:
        return "encoding"
    return next((name for name, section in RUN_SECTIONS.items() if section is cls), None)


def _shown(value: Any) -> str:
    """A value as a config file writes it (``"5"``, ``true``, ``[1, 2]``), shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_message(cls: type, f: dataclasses.Field, value: Any, expected: str, where: str | None) -> str:
    """``<where>: [section] key = value (--flag): expected ...`` (the flag when not from a file)."""
    section = _section_of(cls)
    label = f"[{section}] {f.name}" if section else f.name
    flag = ""
    if where is None and "help" in f.metadata and f.metadata.get("cli", True):
        flag = f" (--{f.name.replace('_', '-')})"
    return f"{where + ': ' if where else ''}{label} = {_shown(value)}{flag}: expected {expected}"


def _checked_values(cls: type, values: Mapping[str, Any], checking: _Checking) -> dict[str, Any]:
    """The values of known fields of ``cls``, each checked (tuple fields as tuples)."""
    from .errors import InvalidArgumentError

    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(values)
    for key, value in values.items():
        f = fields[key]
        if (value is None and checking.allow_none) or f.metadata.get("label"):
            continue
        hint = hints.get(key, Any)
        try:
            if isinstance(value, str) and "parse" in f.metadata and "nargs" not in f.metadata:
                value = _parse_text(value, hint, f.metadata)
            out[key] = _check_value(value, hint, f.metadata, checking)
        except _Invalid as invalid:
            expected = f.metadata.get("expected", invalid.expected)
            raise InvalidArgumentError(_value_message(cls, f, values[key], expected, checking.where)) from None
    if cls is RunConfig:
        _check_run_values(out, checking)
    elif cls is SourceConfig:
        _check_source_kind(out, checking.where)
    return out


def _check_source_kind(values: Mapping[str, Any], where: str | None) -> None:
    """``[source] kind`` (already a string) names a registered data source."""
    from .errors import InvalidArgumentError
    from .sources.registry import source_kinds

    kind, kinds = values.get("kind"), source_kinds()
    if kind is not None and kind not in kinds:
        f = next(f for f in dataclasses.fields(SourceConfig) if f.name == "kind")
        expected = "one of " + ", ".join(json.dumps(k) for k in kinds) + " (the registered data sources)"
        raise InvalidArgumentError(_value_message(SourceConfig, f, kind, expected, where))


def _reconciled_source(source: Any, nsd_root: Any, where: str | None) -> tuple[Any, Any]:
    """``(source, nsd_root)`` with the shorthand ``nsd_root`` folded into ``source`` and mirrored from it.

    Raises
    ------
    InvalidArgumentError
        When ``nsd_root`` and a ``[source]`` table name different sources.
    """
    from .errors import InvalidArgumentError

    if not isinstance(source, SourceConfig):
        return source, nsd_root  # not a section: check_config names it
    if nsd_root is None:
        return source, (source.root if source.kind == DEFAULT_SOURCE else None)
    if source in (SourceConfig(), SourceConfig(root=nsd_root)):
        return SourceConfig(root=nsd_root), nsd_root
    prefix = f"{where}: " if where else ""
    raise InvalidArgumentError(f"{prefix}nsd_root = {_shown(nsd_root)} and [source] kind = {_shown(source.kind)}, "
                               f"root = {_shown(source.root)}: expected one of the two (nsd_root is shorthand "
                               f"for [source] kind = \"{DEFAULT_SOURCE}\", root = ...)")


def _check_run_values(values: dict[str, Any], checking: _Checking) -> None:
    """The run's source (``nsd_root`` or ``[source]``) and the subject labels, which that source checks.

    Labels are normalised in ``values`` (:func:`brain2image.sources.numeric_label`: NSD's stay integers).
    """
    from .errors import InvalidArgumentError
    from .sources.registry import get_source

    source, nsd_root = _reconciled_source(values.get("source", SourceConfig()), values.get("nsd_root"),
                                          checking.where)
    if nsd_root is None and source.kind == DEFAULT_SOURCE and not checking.allow_none:
        cls = SourceConfig if "source" in values else RunConfig
        f = next(f for f in dataclasses.fields(cls) if f.name in ("nsd_root", "root"))
        raise InvalidArgumentError(_value_message(cls, f, None, "a string", checking.where))
    _check_subjects(values, checking, get_source(source))


def _subject_error(key: str, value: Any, expected: str, where: str | None) -> Exception:
    """The one-line error of a bad ``subject`` / ``subjects`` value."""
    from .errors import InvalidArgumentError

    f = next(f for f in dataclasses.fields(RunConfig) if f.name == key)
    return InvalidArgumentError(_value_message(RunConfig, f, value, expected, where))


def _check_subjects(values: dict[str, Any], checking: _Checking, source: Any) -> None:
    """``subject`` and ``subjects`` are labels of ``source``; ``subjects`` is distinct and comes alone.

    ``subjects`` comes without a non-default ``subject``; each label is stored as
    :func:`~brain2image.sources.numeric_label` makes it (NSD's as integers).
    """
    from .errors import InvalidArgumentError
    from .sources.base import numeric_label

    words, where = source.subject_words, checking.where
    subject, subjects = values.get("subject"), values.get("subjects")
    if "subject" in values and subject is not None and not (subjects is not None and subject == 1):
        label = source.subject_label(subject)
        if label is None:
            raise _subject_error("subject", subject, words.one, where)
        values["subject"] = subject = numeric_label(label)
    if subjects is None:
        return
    labels = [source.subject_label(s) for s in subjects] if isinstance(subjects, list) else []
    if not labels or None in labels:
        raise _subject_error("subjects", subjects, f"a non-empty list of distinct {words.many}, e.g. {words.example}",
                             where)
    prefix = f"{where}: " if where else ""
    if len(set(labels)) != len(labels):
        raise InvalidArgumentError(f"{prefix}subjects = {_shown(subjects)}: expected distinct {words.many}, each once")
    values["subjects"] = [numeric_label(label) for label in labels]
    subject = 1 if subject is None else subject
    if subject != 1:
        raise InvalidArgumentError(f"{prefix}subject = {_shown(subject)} and subjects = {_shown(subjects)}: "
                                   "expected one of the two keys (subjects runs each subject; leave subject out)")


def check_config(config: Any, where: str | None = None, *, allow_none: bool = False) -> None:
    """Check every field of a config dataclass (sections included) against its type and checks.

    The type comes from the annotation (``int``, ``float`` (an int is one), ``bool``, ``str``,
    ``X | None``, lists, tuples, sections), the rest from the field's metadata (:func:`_field`:
    ``choices``, ``min`` / ``max`` / ``gt``, ``min_len``, ``item_len``).

    Parameters
    ----------
    config : dataclass instance
        A :class:`RunConfig`, a section, or a stage's settings.
    where : str, optional
        What the values come from (a file), for the message; None: the message names the flag.
    allow_none : bool
        Accept ``None`` in any field (an option a stage command leaves unset, e.g. ``nsd_root``).

    Raises
    ------
    InvalidArgumentError
        For the first value that does not fit, naming ``[section] key``, the value and what is expected.
    """
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    _checked_values(type(config), values, _Checking(where, allow_none))


def _unknown_key_message(key: str, names: list[str], where: str) -> str:
    """``unknown key 'n_folds' in <where>; did you mean 'cv_folds'?`` (or the list of known keys)."""
    hint = RENAMED_KEYS.get(key)
    if hint is None or (not hint.startswith("[") and hint not in names):
        close = difflib.get_close_matches(key, names, n=1)
        hint = close[0] if close else None
    known = f"; expected one of {names}"
    return f"unknown key {key!r} in {where}" + (f"; did you mean {hint!r}?" if hint else "") + known


def _location(cls: type, where: str | None) -> str:
    """Where an unknown key is: ``<where> [decoder]``, ``<where> (top level)``, or the class name."""
    if where is None:
        return cls.__name__
    section = _section_of(cls)
    if section is None:
        return where
    return f"{where} [{section}]" if section else f"{where} (top level)"


def config_from_dict(cls: type[T], values: dict, where: str | None = None, *, allow_none: bool = True) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys and values that do not fit (:func:`check_config`).

    Parameters
    ----------
    cls : dataclass type
    values : dict
    where : str, optional
        What ``values`` come from (a file) for the error message (the table is added for a
        section of a run config); None: a stage command's options or the Python API (the message
        names the flag).
    allow_none : bool
        Accept ``None`` for any key, meaning the option was left unset (a stage command's
        ``--nsd-root``); a run config read from a file is checked with ``False``.

    Raises
    ------
    DataFormatError
        For an unknown key (the message names the key, the new name of a renamed key, and the
        known keys).
    InvalidArgumentError
        For a value of the wrong type, out of range or not one of the choices (the message names
        the key, the value and what is expected).
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        from .errors import DataFormatError

        raise DataFormatError(_unknown_key_message(unknown[0], names, _location(cls, where)))
    return cls(**_checked_values(cls, values, _Checking(where, allow_none)))


def _resolved_path(text: str, base_dir: Path | None) -> str:
    """``text`` with ``~`` expanded, relative to ``base_dir`` when relative and given."""
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def run_config_from_dict(values: dict, base_dir: Path | None = None, where: str = "the run config") -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts (one per section), every value checked.

    Parameters
    ----------
    values : dict
        Top-level keys and one dict per section (:data:`RUN_SECTIONS`); ``zc`` absent or ``None``:
        no z_c / U-Net feature spaces.
    base_dir : Path, optional
        Relative ``nsd_root`` (or ``[source] root``) / ``out_dir`` are taken relative to it (the
        config file's folder), never to the current directory.
    where : str
        What ``values`` come from, for error messages (the file name).

    Raises
    ------
    DataFormatError
        For a missing required key or an unknown key (the message names the file, the table and
        the key, and the new name of a renamed key).
    InvalidArgumentError
        For a value of the wrong type, out of range or not one of the choices
        (``run.toml: [reconstruction] n_samples = "5": expected an integer ≥ 1``).
    """
    from .errors import DataFormatError

    values = dict(values)
    stage_tables = {key: values.pop(key) for key in list(values)
                    if isinstance(values[key], dict) and key not in RUN_SECTIONS and key != "stage_settings"}
    if stage_tables:
        values["stage_settings"] = {**values.get("stage_settings", {}), **stage_tables}
    sections: dict[str, Any] = {}
    for name, cls in RUN_SECTIONS.items():
        given = values.pop(name, None)
        if given is not None:
            if not isinstance(given, dict):
                raise DataFormatError(f"{where}: [{name}] must be a table of keys, got {given!r}")
            sections[name] = config_from_dict(cls, given, where=where, allow_none=False)
    if "source" in sections:
        values["source"] = sections.pop("source")
    if "nsd_root" not in values and "source" not in values:
        raise DataFormatError(f"{where}: missing required key 'nsd_root'; expected a path (or a [source] table)")
    if "out_dir" not in values:
        raise DataFormatError(f"{where}: missing required key 'out_dir'; expected a path")
    config = config_from_dict(RunConfig, values, where=where, allow_none=False)
    root = None if config.source.root is None else _resolved_path(config.source.root, base_dir)
    return dataclasses.replace(config, nsd_root=None if config.nsd_root is None else root,
                               source=dataclasses.replace(config.source, root=root),
                               out_dir=_resolved_path(config.out_dir, base_dir), **sections)


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read a TOML run config (see ``examples/nsd_subj01_sd14.toml``).

    Raises
    ------
    MissingFileError
        When there is no file at ``path``.
    DataFormatError
        For invalid TOML, a missing or an unknown key.
    InvalidArgumentError
        For a value of the wrong type, out of range or not one of the choices.
    """
    from .errors import DataFormatError, MissingFileError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"run config {path} not found")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise DataFormatError(f"{path}: not valid TOML ({error})") from None
    return run_config_from_dict(values, base_dir=path.resolve().parent, where=str(path))
