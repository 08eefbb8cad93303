"""Serialisable configuration objects: one dataclass per section of a run config.

Every field carries its help text in ``metadata["help"]``; the CLI option of a field is ``--``
followed by the field name with ``_`` replaced by ``-`` (``cv_folds`` ↔ ``--cv-folds``), and the
stage commands build their parsers from these fields (:mod:`brain2image.stages`), so a setting,
its default and its help are written once, here. Every stage saves the config it ran with next to
its output (as JSON attributes or a ``config.json``), so that a result can always be traced back
to its settings.

A run config (``brain2image run CONFIG.toml``, :class:`RunConfig`) holds the run-wide keys at the
top level and one table per section: ``[prepare]``, ``[features]``, ``[decoder]``,
``[reconstruction]``, ``[evaluation]``, ``[encoding]``, ``[zc]`` (optional) and ``[report]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .methods import Method

__all__ = [
    "FeatureConfig",
    "DecoderConfig",
    "ReconstructionConfig",
    "EncodingConfig",
    "ZcConfig",
    "PrepareConfig",
    "EvaluationConfig",
    "EncodingOptions",
    "ReportConfig",
    "RunConfig",
    "RUN_SECTIONS",
    "RENAMED_KEYS",
    "BundledTrainingConfig",
    "ENCODING_ALPHAS",
    "DEFAULT_ROIS",
    "RECONSTRUCTION_METHODS",
    "DECODED_METHODS",
    "parse_sessions",
    "run_config_from_dict",
    "load_run_config",
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
]

T = TypeVar("T")

#: ROIs a run prepares by default (``atlas:label`` or an atlas alone).
DEFAULT_ROIS: tuple[str, ...] = ("streams:early", "streams:ventral", "nsdgeneral")
#: Names of the reconstruction methods (:class:`brain2image.methods.Method` holds what each needs).
RECONSTRUCTION_METHODS: tuple[str, ...] = tuple(m.value for m in Method)
#: The methods that reconstruct from decoded features (every method but the oracle).
DECODED_METHODS: tuple[str, ...] = tuple(m.value for m in Method if m is not Method.ORACLE)


def _field(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None, **cli: Any) -> Any:
    """A dataclass field with its help text and CLI hints in ``metadata``.

    ``cli`` may hold ``choices``, ``nargs`` (``"*"`` to allow an empty list), ``parse`` (a
    converter of one command-line token), ``metavar`` and ``cli=False`` (a config-only key).
    """
    metadata = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


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


def _parse_pair(text: str) -> list[str]:
    """``A:B`` -> ``["A", "B"]`` (a pair of feature spaces to partition)."""
    first, sep, second = str(text).partition(":")
    if not sep or not first or not second:
        raise ValueError(f"partition pair {text!r}: expected A:B, e.g. z:c")
    return [first, second]


@dataclass
class PrepareConfig:
    """Which NSD betas ``prepare`` reads and how (the NSD root and subject are run-wide keys)."""

    rois: list[str] = _field(factory=lambda: list(DEFAULT_ROIS), metavar="SPEC",
                             help="ROIs to prepare, atlas:label or an atlas alone (every value > 0); "
                                  "must include the decoder and encoding ROIs")
    sessions: int | list[int] | None = _field(None, parse=parse_sessions,
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

    z_resolution: int | None = _field(None, help="side (pixels) the image is resized to before VAE encoding; "
                                                 "default: the model's (320 for Stable Diffusion, 5/8 of the "
                                                 "native size for the bundled model)")
    caption_reduction: str = _field("mean", choices=("mean", "first"),
                                    help="how the text embeddings of an image's captions are combined into c")
    latent_sample: str = _field("mean", choices=("mean", "sample"),
                                help="z is the VAE posterior mean, or a seeded draw")
    batch_size: int = _field(32, help="images per model call")
    seed: int = _field(0, help="seed of the latent draws (latent_sample = sample)")


@dataclass
class DecoderConfig:
    """Ridge decoders from ROI voxels to features.

    The grid spans the reference code's 1e-6..1 range scaled by the number of training rows, up
    to strong shrinkage.
    """

    z_roi: str = _field("early", help="ROI key of the prepared file decoded into z")
    c_roi: str = _field("ventral", help="ROI key of the prepared file decoded into c")
    alphas: list[float] = _field(factory=lambda: [float(10.0**k) for k in range(0, 7)],
                                 help="ridge grid, after voxel standardisation")
    cv_folds: int = _field(5, help="folds (grouped by image) of the cross-validation that picks each alpha")
    target_chunk: int = _field(8192, help="targets solved at a time (bounds peak memory)")
    backend: str = _field("numpy", choices=("numpy", "torch", "torch_cuda"), help="himalaya compute backend")
    ridge_dtype: str = _field("float32", choices=("float32", "float64"), help="float type of the ridge solve")


@dataclass
class ReconstructionConfig:
    """img2img generation from decoded z and c; defaults are the paper's."""

    num_inference_steps: int = _field(50, help="DDIM schedule length")
    strength: float = _field(0.8, help="img2img noise strength (strength × steps denoising steps)")
    guidance_scale: float = _field(5.0, help="classifier-free guidance scale")
    eta: float = _field(0.0, help="DDIM eta")
    n_samples: int = _field(5, help="samples per test image")
    seed: int = _field(0, help="seed of the samples (each one seeded from seed, 73k id and sample)")
    batch_size: int = _field(10, help="images per pipeline call")
    methods: tuple[str, ...] = _field(DECODED_METHODS, choices=RECONSTRUCTION_METHODS,
                                      help="reconstruction methods (oracle uses the true z and c)")


#: Ridge grid of the encoding models (features standardised and scaled by 1/sqrt(n_features)).
ENCODING_ALPHAS: tuple[float, ...] = tuple(float(10.0**k) for k in range(-2, 7))


@dataclass
class EncodingConfig:
    """Hyperparameters of the encoding analysis (saved with every result)."""

    roi: str = _field("nsdgeneral", help="ROI key of the prepared file whose voxels are modelled")
    summary_rois: list[str] = _field(factory=lambda: ["early", "ventral"], nargs="*",
                                     help="ROI keys summarised (mean r per ROI) in summary.json and the plots")
    alphas: list[float] = _field(factory=lambda: list(ENCODING_ALPHAS),
                                 help="ridge grid (features standardised and scaled by 1/sqrt(n_features))")
    cv_folds: int = _field(5, help="cross-validation folds over unique training images")
    banded_n_iter: int = _field(20, help="random-search draws of the banded ridge kernel weights")
    partition_pairs: list[list[str]] | None = _field(
        None, parse=_parse_pair, nargs="+", metavar="A:B",
        help="pairs of feature spaces to partition; default: z:c plus consecutive zc_<strength> levels")
    target_chunk: int | None = _field(None, help="voxels solved at a time (bounds memory); default: all")
    seed: int = _field(0, help="seed of the CV splits and the random search")
    maps: bool = _field(True, help="write NIfTI / PNG maps")


@dataclass
class ZcConfig:
    """How z_c and U-Net feature stores (encoding feature spaces) are computed."""

    zc_strengths: list[float] = _field(factory=lambda: [0.25, 0.5, 0.75],
                                       help="noise strengths in [0, 1] of the z_c runs (s runs "
                                            "int(num_inference_steps * s) steps)")
    num_inference_steps: int = _field(50, help="DDIM schedule length")
    guidance_scale: float = _field(5.0, help="classifier-free guidance scale")
    unet_layers: list[str] = _field(factory=lambda: ["down_blocks.2", "mid_block", "up_blocks.1"], nargs="*",
                                    help="U-Net submodules (unet.get_submodule names) whose outputs are captured")
    unet_steps: list[float] = _field(factory=lambda: [0.0, 0.5, 1.0], nargs="*",
                                     help="where in each run activations are taken, as fractions of its steps "
                                          "(0 first, 1 last)")
    pool_size: int = _field(1, help="side of the spatial average-pooling grid (1: per-channel means)")
    max_dim: int | None = _field(None, help="random-project U-Net features longer than this (seeded)")
    batch_size: int = _field(8, help="images per denoising run")
    seed: int = _field(0, help="seed of the noise (torch.Generator(seed + 73k id))")


@dataclass
class EvaluationConfig:
    """Which metric set the evaluation computes."""

    metrics: str = _field("embedded", help="embedded: pixels + the scene evaluator (simulated study); "
                                           "full: AlexNet, Inception-v3, CLIP, EfficientNet-B1, SwAV (real images)")
    weights_dir: str | None = _field(None, help="folder with the feature networks' checkpoints "
                                                "(default: the local caches)")
    size: int = _field(425, help="PixCorr/SSIM comparison size (capped at the real images' size)")


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

    n_images: int = _field(8, help="test images shown in the report's grid")


@dataclass
class RunConfig:
    """Everything a run needs; saved as ``run_config.json`` in the run folder.

    The top-level fields are run-wide (several stages read them); each section is the config
    dataclass of its stage. ``zc`` is ``None`` unless the config names z_c / U-Net feature spaces
    (a ``[zc]`` table): the encoding then models them too. Any other table goes to
    ``stage_settings`` for the stage of that name (docs/stages.md).
    """

    nsd_root: str = _field(help="NSD root (holds nsddata/, nsddata_betas/, nsddata_stimuli/)")
    out_dir: str = _field(help="run folder")
    subject: int = _field(1, help="NSD subject (1..8)")
    model: str = _field("bundled", help="'bundled', a diffusers hub id in the local cache, or a local "
                                        "diffusers folder")
    device: str = _field("cpu", help="torch device of the model")
    dtype: str | None = _field(None, choices=("float32", "float16", "bfloat16"),
                               help="torch dtype of the model (default: float32 on CPU, float16 on CUDA)")
    threads: int | None = _field(None, help="torch CPU threads (default: all)")
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    reconstruction: ReconstructionConfig = field(
        default_factory=lambda: ReconstructionConfig(methods=RECONSTRUCTION_METHODS))
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    encoding: EncodingOptions = field(default_factory=EncodingOptions)
    zc: ZcConfig | None = None
    report: ReportConfig = field(default_factory=ReportConfig)
    stage_settings: dict[str, dict[str, Any]] = _field(
        factory=dict, cli=False, help="tables of stages registered from outside this module (a stage's own "
                                      "settings_class), by stage name; checked when the run starts")

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-serialisable)."""
        return config_to_dict(self)


#: Sections of a run config: table name -> dataclass.
RUN_SECTIONS: dict[str, type] = {"prepare": PrepareConfig, "features": FeatureConfig, "decoder": DecoderConfig,
                                 "reconstruction": ReconstructionConfig, "evaluation": EvaluationConfig,
                                 "encoding": EncodingOptions, "zc": ZcConfig, "report": ReportConfig}

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


def _unknown_key_message(key: str, names: list[str], where: str) -> str:
    """``unknown key 'n_folds' in <where>; did you mean 'cv_folds'?`` (or the list of known keys)."""
    hint = RENAMED_KEYS.get(key)
    if hint is None or (not hint.startswith("[") and hint not in names):
        close = difflib.get_close_matches(key, names, n=1)
        hint = close[0] if close else None
    known = f"; expected one of {names}"
    return f"unknown key {key!r} in {where}" + (f"; did you mean {hint!r}?" if hint else "") + known


def config_from_dict(cls: type[T], values: dict, where: str | None = None) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with a clear message.

    Parameters
    ----------
    cls : dataclass type
    values : dict
    where : str, optional
        What ``values`` come from (a file and table) for the error message; default the class name.

    Raises
    ------
    DataFormatError
        For an unknown key (the message names the key, the new name of a renamed key, and the
        known keys).
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        from .errors import DataFormatError

        raise DataFormatError(_unknown_key_message(unknown[0], names, where or cls.__name__))
    kwargs = dict(values)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in kwargs and isinstance(kwargs[f.name], list) and "tuple" in str(f.type):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)


def run_config_from_dict(values: dict, base_dir: Path | None = None, where: str = "the run config") -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts (one per section).

    Parameters
    ----------
    values : dict
        Top-level keys and one dict per section (:data:`RUN_SECTIONS`); ``zc`` absent or ``None``:
        no z_c / U-Net feature spaces.
    base_dir : Path, optional
        Relative ``nsd_root`` / ``out_dir`` are taken relative to it (the config file's folder),
        never to the current directory.
    where : str
        What ``values`` come from, for error messages (the file name).

    Raises
    ------
    DataFormatError
        For a missing required key or an unknown key (the message names the file, the table and
        the key, and the new name of a renamed key).
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
            sections[name] = config_from_dict(cls, given, where=f"{where} [{name}]")
    for key in ("nsd_root", "out_dir"):
        if key not in values:
            raise DataFormatError(f"{where}: missing required key {key!r}; expected a path")
        path = Path(values[key]).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        values[key] = str(path)
    config = config_from_dict(RunConfig, values, where=f"{where} (top level)")
    return dataclasses.replace(config, **sections)


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read a TOML run config (see ``examples/nsd_subj01_sd14.toml``).

    Raises
    ------
    MissingFileError
        When there is no file at ``path``.
    DataFormatError
        For invalid TOML, a missing or an unknown key.
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
