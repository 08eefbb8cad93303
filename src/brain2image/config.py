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

The checks of every value against its field are generic (:mod:`brain2image.config_checks`); each
class here declares what they need to know of it: its table (``_section``), the renamed keys
(:data:`RENAMED_KEYS`) and, for the source and the top level, the checks that span several
fields (``_check_values``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .config_checks import (
    _field,
    _shown,
    _value_message,
    check_config,
    config_from_dict,
    config_to_dict,
    config_to_json,
)
from .methods import METHOD_CHOICES, builtin_methods
from .targets import TARGET_CHOICES, default_target_rois

__all__ = [
    "subject_token",
    "FeatureConfig",
    "DecoderConfig",
    "ReconstructionConfig",
    "EncodingConfig",
    "ZcConfig",
    "PrepareConfig",
    "SourceConfig",
    "DEFAULT_SOURCE",
    "DEFAULT_CONFOUNDS",
    "EvaluationConfig",
    "EncodingOptions",
    "ReportConfig",
    "BrainCorrelationConfig",
    "RunConfig",
    "RUN_SECTIONS",
    "RENAMED_KEYS",
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

#: ROIs a run prepares by default (``atlas:label`` or an atlas alone).
DEFAULT_ROIS: tuple[str, ...] = ("streams:early", "streams:ventral", "nsdgeneral")


#: Values of ``[decoder] backend`` and ``[encoding] backend`` (:mod:`brain2image.ridge.backend`).
BACKEND_CHOICES: tuple[str, ...] = ("auto", "numpy", "torch", "torch_cuda")
_BACKEND_HELP = "himalaya compute backend; auto: torch_cuda when device is CUDA, numpy otherwise"


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


def subject_token(text: str) -> int | str:
    """A ``--subject`` token as a config file would hold it: ``3`` -> 3, another label as given."""
    from .sources.base import numeric_label

    return numeric_label(text.strip())


def _parse_pair(text: str) -> list[str]:
    """``A:B`` -> ``["A", "B"]`` (a pair of feature spaces to partition)."""
    first, sep, second = str(text).partition(":")
    if not sep or not first or not second:
        raise ValueError(f"partition pair {text!r}: expected A:B, e.g. z:c")
    return [first, second]


def _parse_target_roi(text: str) -> tuple[str, str]:
    """``z=early`` -> ``("z", "early")``: a decoder target and the ROI it is decoded from."""
    target, sep, roi = str(text).partition("=")
    if not sep or not target or not roi:
        raise ValueError(f"decoder target {text!r}: expected TARGET=ROI, e.g. z=early")
    return target, roi


#: ``[source] kind`` of a run config without one, or with the top-level ``nsd_root`` shorthand.
DEFAULT_SOURCE = "nsd"


class _RunTable:
    """A table of the run config (the top level included), as the checks (:mod:`.config_checks`) read it."""

    #: The table's name in a run config (``""``: the top level), which error messages name.
    _section: ClassVar[str]

    @classmethod
    def _renamed_keys(cls) -> Mapping[str, str]:
        """The keys renamed or moved (:data:`RENAMED_KEYS`), which the error of an unknown key names."""
        return RENAMED_KEYS


#: ``[source] confounds`` by default: fMRIPrep's six motion parameters, their derivatives, CSF and white matter.
DEFAULT_CONFOUNDS: tuple[str, ...] = (
    *(f"{axis}_{name}" for axis in ("trans", "rot") for name in ("x", "y", "z")),
    *(f"{axis}_{name}_derivative1" for axis in ("trans", "rot") for name in ("x", "y", "z")),
    "csf", "white_matter")


def _parse_roi_mask(text: str) -> tuple[str, str]:
    """``early=masks/early.nii.gz`` or ``ventral=reliable:5000`` -> ``(name, value)``."""
    name, sep, value = str(text).partition("=")
    if not sep or not name or not value:
        nsd = f"; an NSD atlas ROI is --rois {text}" if ":" in text and not sep else ""
        raise ValueError(f"ROI {text!r}: expected NAME=MASK.nii.gz or NAME=reliable:N, e.g. "
                         f"early=masks/early.nii.gz{nsd}")
    return name, value


@dataclass
class SourceConfig(_RunTable):
    """Where the study comes from: a data source of the registry (:mod:`brain2image.sources`) and its files.

    ``kind`` and ``root`` apply to every source; the other keys to the sources named in their help
    (``bids``: a BIDS dataset with fMRIPrep derivatives; ``betas``: precomputed single-trial betas).
    A source refuses a key that does not apply to it.
    """

    _section = "source"

    kind: str = _field(DEFAULT_SOURCE, flag="--source", help="data source: nsd, bids, betas or another registered "
                                                             "kind (entry-point group brain2image.sources)")
    root: str | None = _field(None, help="the source's folder: the NSD root, the BIDS root (bids), the folder "
                                         "holding stimuli/ (betas); relative: to the config file's folder")
    derivatives: str | None = _field(None, help="bids: fMRIPrep derivatives folder (default: <root>/derivatives/"
                                                "fmriprep)")
    task: str | None = _field(None, help="bids: task label (default: the dataset's only task)")
    space: str | None = _field(None, help="space of the data: fMRIPrep's space label (bids; default T1w) or "
                                          "NSD's (func1pt8mm, func1mm, MNI, fsaverage; also [prepare] space)")
    roi: dict[str, str] = _field(factory=dict, flag="--roi", parse=_parse_roi_mask, nargs="+",
                                 metavar="NAME=MASK", allow_empty=True,
                                 table_text='a table of ROI names and NIfTI masks or reliable:N, e.g. '
                                            '{early = "masks/early.nii.gz", ventral = "reliable:5000"}',
                                 help="bids, betas: ROIs, each a NIfTI mask (resampled to the data's grid; {subject} "
                                      "in its path: the subject's label) or reliable:N (the N voxels of highest "
                                      "ncsnr in the brain mask)")
    glm: str = _field("lss", choices=("lss", "lsa"), help="bids: single-trial GLM, least squares separate (lss) "
                                                          "or all (lsa)")
    hrf: str = _field("glover", choices=("glover", "spm"), help="bids: haemodynamic response model")
    high_pass: float = _field(0.01, gt=0, help="bids: cosine drift high-pass cut-off, Hz")
    center_runs: bool = _field(True, help="bids: subtract each voxel's mean over a run's trials from the run's "
                                          "betas (the run's baseline error, which every trial of a rapid design "
                                          "shares)")
    confounds: list[str] = _field(factory=lambda: list(DEFAULT_CONFOUNDS), nargs="*", min_len=0, metavar="COLUMN",
                                  help="bids: fMRIPrep confound columns (names or patterns such as a_comp_cor_0*) "
                                       "in the GLM")
    stimulus_column: str = _field("stim_file", help="bids, betas: events / trials column naming each trial's image "
                                                    "(a path relative to stimuli/)")
    split_column: str | None = _field(None, help="bids, betas: column naming each trial's split (train / test); "
                                                 "default: images shown 2 or more times are test")
    identity_column: str | None = _field(None, help="bids, betas: events/trials column holding each image's "
                                                    "0-based NSD 73k id (images shared with NSD subjects, for "
                                                    "cross-subject transfer)")
    image_size: int = _field(425, min=8, help="bids, betas: side the stimuli are centre-cropped and resized to "
                                              "(NSD's are 425)")
    betas: str | None = _field(None, help="betas: single-trial betas, a 4D NIfTI, .npy or .h5 (n_trials, "
                                          "n_voxels) or a GLMsingle output folder")
    trials: str | None = _field(None, help="betas: trials table (TSV: stimulus, session, run; one row per trial, in "
                                           "the betas' order) or a folder of BIDS events files")
    mask: str | None = _field(None, help="betas: NIfTI mask whose voxels are an array's columns (numpy.argwhere "
                                         "order)")

    @classmethod
    def _check_values(cls, values: dict[str, Any], where: str | None, allow_none: bool) -> None:
        """``kind`` names a registered data source."""
        _check_source_kind(values, where)

    def subject_rois(self, subject: str) -> dict[str, str]:
        """``roi`` with ``{subject}`` in each mask path replaced by ``subject`` (per-subject masks of a study)."""
        return {name: value.replace("{subject}", subject) for name, value in self.roi.items()}

    def given_keys(self) -> list[str]:
        """The keys other than ``kind`` and ``root`` whose values differ from their defaults."""
        default = SourceConfig()
        return [f.name for f in dataclasses.fields(self)
                if f.name not in ("kind", "root") and getattr(self, f.name) != getattr(default, f.name)]


@dataclass
class PrepareConfig(_RunTable):
    """How ``prepare`` reads a subject's betas.

    ``sessions`` and ``zscore_sessions`` apply to every source, the other keys to NSD (the source and
    the subject are ``[source]`` and run-wide keys).
    """

    _section = "prepare"

    rois: list[str] = _field(factory=lambda: list(DEFAULT_ROIS), metavar="SPEC",
                             help="ROIs to prepare, atlas:label or an atlas alone (every value > 0); "
                                  "must include the decoder and encoding ROIs")
    sessions: int | list[int] | None = _field(None, parse=parse_sessions, min=1,
                                              expected='a count (37), a list of sessions ([1, 2, 5]) or '
                                                       'a string of sessions and ranges ("1-3,7")',
                                              help="a count (37) or a list (1,2,5 / 1-3); default: all on disk")
    beta_format: str = _field("hdf5", choices=("hdf5", "nifti"),
                              help="file format of the betas to read (volume spaces)")
    space: str = _field("func1pt8mm", choices=("func1pt8mm", "func1mm", "MNI", "fsaverage"), cli=False,
                        help="NSD space (--space sets [source] space, which takes precedence)")
    beta_version: str = _field("betas_fithrf_GLMdenoise_RR", help="NSD beta version folder")
    zscore_sessions: bool = _field(False, help="z-score each voxel over each session's trials")
    scale: str = _field("percent", choices=("percent", "raw"),
                        help="percent: %% signal change (int16 / 300); raw: the stored int16 values")


@dataclass
class FeatureConfig(_RunTable):
    """How the z and c features of an image are computed."""

    _section = "features"

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
class DecoderConfig(_RunTable):
    """Ridge decoders from ROI voxels to features.

    The grid spans the reference code's 1e-6..1 range scaled by the number of training rows, up
    to strong shrinkage.
    """

    _section = "decoder"

    targets: dict[str, str] = _field(
        factory=default_target_rois, parse=_parse_target_roi, nargs="+", metavar="TARGET=ROI",
        key_choices=TARGET_CHOICES,
        table_text='a non-empty table of decoder targets and ROI keys, e.g. {z = "early", c = "ventral"}',
        help="the decoder targets of a run and the ROI key of the prepared file each is decoded from")
    alphas: list[float] = _field(factory=lambda: [float(10.0**k) for k in range(0, 7)], gt=0,
                                 help="ridge grid, after voxel standardisation")
    cv_folds: int = _field(5, min=2, help="folds (grouped by image) of the cross-validation that picks each alpha")
    target_chunk: int = _field(8192, min=1, help="targets solved at a time (bounds peak memory); with backend "
                                          "torch_cuda, fewer when the free GPU memory holds fewer")
    backend: str = _field("auto", choices=BACKEND_CHOICES, help=_BACKEND_HELP)
    ridge_dtype: str = _field("float32", choices=("float32", "float64"), help="float type of the ridge solve")


@dataclass
class ReconstructionConfig(_RunTable):
    """img2img generation from decoded z and c; defaults are the paper's."""

    _section = "reconstruction"

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
class EncodingConfig(_RunTable):
    """Hyperparameters of the encoding analysis (saved with every result)."""

    _section = "encoding"

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
class ZcConfig(_RunTable):
    """How z_c and U-Net feature stores (encoding feature spaces) are computed."""

    _section = "zc"

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
class EvaluationConfig(_RunTable):
    """Which metric set the evaluation computes."""

    _section = "evaluation"

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
class ReportConfig(_RunTable):
    """What the report shows."""

    _section = "report"

    n_images: int = _field(8, min=1, help="test images shown in the report's grid")


@dataclass
class BrainCorrelationConfig(_RunTable):
    """How the ``brain_correlation`` stage computes z of the reconstructions."""

    _section = "brain_correlation"

    batch_size: int = _field(16, min=1, help="reconstructions per VAE call (bounds memory)")


@dataclass
class RunConfig(_RunTable):
    """Everything a run needs; saved as ``run_config.json`` in the run folder.

    The top-level fields are run-wide (several stages read them); each section is the config
    dataclass of its stage. ``zc`` is ``None`` unless the config names z_c / U-Net feature spaces
    (a ``[zc]`` table): the encoding then models them too. Any other table goes to
    ``stage_settings`` for the stage of that name (docs/stages.md).

    ``source`` is the data source (:mod:`brain2image.sources`); ``nsd_root`` is its shorthand for
    NSD and mirrors an NSD source's root (None for another kind), so a ``dataclasses.replace`` that
    changes ``source`` to another root or kind passes ``nsd_root=None`` too (else: a one-line error).
    """

    _section = ""

    nsd_root: str | None = _field(None, kw_only=True, help="NSD root (holds nsddata/, nsddata_betas/, "
                                  "nsddata_stimuli/): shorthand for [source] kind = \"nsd\", root = ...")
    out_dir: str = _field(help="run folder")
    subject: int | str = _field(1, label=True, parse=subject_token, metavar="LABEL",
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
    threads: int | None = _field(None, min=1, help="CPU threads of torch and BLAS, in the run and in every Ray "
                                                   "worker (default: torch's count where the run starts)")
    plugins: list[str] = _field(factory=list, cli=False, nargs="*",
                                help="modules imported first, in every process of the run, to register plug-ins "
                                     "(sources, targets, methods, stages; docs/extending.md)")
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
        _import_plugins(self.plugins, None)
        self.source, self.nsd_root = _reconciled_source(self.source, self.nsd_root, None)

    @classmethod
    def _check_values(cls, values: dict[str, Any], where: str | None, allow_none: bool) -> None:
        """The run's source and the subject labels, which that source checks (:func:`_check_run_values`)."""
        _check_run_values(values, where, allow_none)

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-serialisable), as a run folder saves it.

        ``subjects`` only when set, and an NSD source as ``nsd_root`` (its shorthand) rather than a
        ``source`` table, so a one-subject NSD run's ``run_config.json`` stays as it was.
        """
        values = config_to_dict(self)
        if values.get("subjects") is None:
            values.pop("subjects", None)
        if not values.get("plugins"):
            values.pop("plugins", None)
        values.pop("source" if self.nsd_root is not None else "nsd_root")
        return values


def _import_plugins(names: Any, where: str | None) -> None:
    """Import a run config's ``plugins`` (:func:`brain2image.plugins.import_plugins`) when it is a list of names.

    Another value is left to the checks, which name it.
    """
    if isinstance(names, list) and names and all(isinstance(name, str) for name in names):
        from .plugins import import_plugins

        import_plugins(names, where)


#: Sections of a run config: table name (each class's ``_section``) -> dataclass.
RUN_SECTIONS: dict[str, type] = {section._section: section for section in (
    SourceConfig, PrepareConfig, FeatureConfig, DecoderConfig, ReconstructionConfig, EvaluationConfig,
    EncodingOptions, ZcConfig, ReportConfig, BrainCorrelationConfig)}

#: Keys renamed or moved, so that an unknown-key error can name the new one.
RENAMED_KEYS: dict[str, str] = {
    "n_folds": "cv_folds", "folds": "cv_folds", "n_targets_batch": "target_chunk", "chunk_size": "target_chunk",
    "strengths": "zc_strengths", "steps": "num_inference_steps", "guidance": "guidance_scale",
    "banded_iter": "banded_n_iter", "pair": "partition_pairs", "resolution": "z_resolution",
    "rois": "[prepare] rois", "sessions": "[prepare] sessions",
    "beta_format": "[prepare] beta_format", "report_images": "[report] n_images",
    "z_roi": '[decoder] targets = {z = "..."}', "c_roi": '[decoder] targets = {c = "..."}',
}


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


def _check_run_values(values: dict[str, Any], where: str | None, allow_none: bool) -> None:
    """The run's source (``nsd_root`` or ``[source]``) and the subject labels, which that source checks.

    Labels are normalised in ``values`` (:func:`brain2image.sources.numeric_label`: NSD's stay integers).
    """
    from .errors import InvalidArgumentError
    from .sources.registry import get_source

    source, nsd_root = _reconciled_source(values.get("source", SourceConfig()), values.get("nsd_root"), where)
    if nsd_root is None and source.kind == DEFAULT_SOURCE and not allow_none:
        cls = SourceConfig if "source" in values else RunConfig
        f = next(f for f in dataclasses.fields(cls) if f.name in ("nsd_root", "root"))
        raise InvalidArgumentError(_value_message(cls, f, None, "a string", where))
    _check_subjects(values, where, get_source(source))


def _subject_error(key: str, value: Any, expected: str, where: str | None) -> Exception:
    """The one-line error of a bad ``subject`` / ``subjects`` value."""
    from .errors import InvalidArgumentError

    f = next(f for f in dataclasses.fields(RunConfig) if f.name == key)
    return InvalidArgumentError(_value_message(RunConfig, f, value, expected, where))


def _check_subjects(values: dict[str, Any], where: str | None, source: Any) -> None:
    """``subject`` and ``subjects`` are labels of ``source``; ``subjects`` is distinct and comes alone.

    ``subjects`` comes without a non-default ``subject``; each label is stored as
    :func:`~brain2image.sources.numeric_label` makes it (NSD's as integers).
    """
    from .errors import InvalidArgumentError
    from .sources.base import numeric_label

    words = source.subject_words
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
        stage_tables = {name: _stage_paths_resolved(table, base_dir) for name, table in stage_tables.items()}
        values["stage_settings"] = {**values.get("stage_settings", {}), **stage_tables}
    _import_plugins(values.get("plugins"), where)  # before the sections: a plug-in's names validate
    sections: dict[str, Any] = {}
    for name, cls in RUN_SECTIONS.items():
        given = values.pop(name, None)
        if given is not None:
            if not isinstance(given, dict):
                raise DataFormatError(f"{where}: [{name}] must be a table of keys, got {given!r}")
            sections[name] = config_from_dict(cls, given, where=where, allow_none=False)
    if "source" in sections:  # paths resolved first: a source checks the subject labels on its files
        values["source"] = _source_paths_resolved(sections.pop("source"), base_dir)
    if "nsd_root" not in values and "source" not in values:
        raise DataFormatError(f"{where}: missing required key 'nsd_root'; expected a path (or a [source] table)")
    if "out_dir" not in values:
        raise DataFormatError(f"{where}: missing required key 'out_dir'; expected a path")
    if isinstance(values.get("nsd_root"), str):
        values["nsd_root"] = _resolved_path(values["nsd_root"], base_dir)
    config = config_from_dict(RunConfig, values, where=where, allow_none=False)
    return dataclasses.replace(config, out_dir=_resolved_path(config.out_dir, base_dir), **sections)


#: Key endings of a stage's own table that hold paths (taken relative to the config file's folder):
#: ``[transfer] reference_run``.
STAGE_PATH_SUFFIXES = ("_run", "_dir", "_folder", "_file", "_path")


def _stage_paths_resolved(table: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """A stage's table with its path values (keys ending in :data:`STAGE_PATH_SUFFIXES`) relative to ``base_dir``."""
    return {key: _resolved_path(value, base_dir) if isinstance(value, str) and value and key.endswith(
        STAGE_PATH_SUFFIXES) else value for key, value in table.items()}


#: ``[source]`` keys that hold paths (taken relative to the config file's folder).
_SOURCE_PATH_KEYS = ("root", "derivatives", "betas", "trials", "mask")


def _source_paths_resolved(source: SourceConfig, base_dir: Path | None) -> SourceConfig:
    """``source`` with its paths (and its ROI masks, not ``reliable:N``) relative to ``base_dir``."""
    paths: dict[str, Any] = {key: _resolved_path(getattr(source, key), base_dir)
                             for key in _SOURCE_PATH_KEYS if getattr(source, key) is not None}
    rois = {name: value if value.startswith("reliable:") else _resolved_path(value, base_dir)
            for name, value in source.roi.items()}
    return dataclasses.replace(source, roi=rois, **paths)


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
