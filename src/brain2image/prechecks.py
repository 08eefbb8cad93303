"""Checks a run makes before anything expensive: the model's files, the sources, the output folders, the disk.

:func:`check_before_run` is what ``brain2image run`` does first, before ``prepare`` starts and before
any run folder is created. Every check is cheap: the model's weights are found and their headers read
(never loaded), each subject is looked up in its source, each output folder's nearest existing parent
gets a probe file (created and removed), and the free disk space is compared with a rough lower bound
of what the run will write. Each failure is one line naming the config key (``model = "..." in
run.toml``) or the folder at fault.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, is_missing_model_folder
from .errors import DataFormatError, MissingFileError, MissingWeightsError, ResourceError

__all__ = ["check_before_run", "check_model_files", "check_output_folders", "check_disk_space",
           "estimate_run_bytes", "hub_cache_folder"]

#: Components of a diffusers folder the run loads, and the stem of their weight files.
_COMPONENTS = {"vae": "diffusion_pytorch_model", "unet": "diffusion_pytorch_model", "text_encoder": "model"}

#: A PNG is taken to hold at least this many bytes per pixel (generated images compress far less than 12 : 1).
_PNG_BYTES_PER_PIXEL = 0.25

#: Side in pixels of a generated image when the model's configs do not say (a lower bound).
_MIN_SIDE = 32


def _model_key(model: str, config_file: str | os.PathLike | None) -> str:
    """``model = '...' in run.toml``: the config key a message names."""
    where = f" in {config_file}" if config_file is not None else ""
    return f"model = {model!r}{where}"


def hub_cache_folder() -> Path:
    """The Hugging Face hub cache of this process's environment (``HF_HUB_CACHE``, else ``$HF_HOME/hub``).

    Read from the environment at each call (``huggingface_hub`` reads it once, at import).
    """
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
    return Path(home).expanduser() / "hub"


def _cached_snapshot(hub_id: str) -> Path | None:
    """The cached snapshot folder of ``hub_id`` holding a ``model_index.json`` (``refs/main`` first), or None."""
    repo = hub_cache_folder() / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    preferred = [snapshots / ref.read_text().strip()] if ref.is_file() else []
    others = sorted(snapshots.iterdir()) if snapshots.is_dir() else []
    return next((folder for folder in preferred + others if (folder / "model_index.json").is_file()), None)


def _check_safetensors(path: Path) -> None:
    """Read the JSON header of a safetensors file (8-byte length, then the header); raise when unreadable."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8).ljust(8, b"\xff"))
            if length > size - 8:
                raise ValueError(f"header of {length} bytes in a file of {size}")
            json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as error:
        raise DataFormatError(f"{path}: not readable safetensors ({' '.join(str(error).split())}); expected "
                              "the weights as saved by diffusers/transformers") from None


def _check_component(folder: Path, stem: str) -> None:
    """The weights of one component: a safetensors file (header read), a shard index, or a ``.bin`` file.

    A ``.bin`` file (diffusers' ``<stem>.bin``, transformers' ``pytorch_model.bin``) is only found: the
    loader decides whether it reads it.
    """
    single = folder / f"{stem}.safetensors"
    if single.is_file():
        _check_safetensors(single)
        return
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise DataFormatError(f"{index}: no 'weight_map'; expected the index of the weights' shards")
        for shard in sorted(set(map(str, weight_map.values()))):
            _check_safetensors(folder / shard)
        return
    if not any((folder / name).is_file() for name in (f"{stem}.bin", "pytorch_model.bin")):
        raise MissingWeightsError(f"{single}: not found; expected the component's weights (safetensors)")


def _check_diffusers_folder(folder: Path, key: str) -> None:
    """A diffusers folder: ``model_index.json`` and the weights of the VAE, U-Net and text encoder."""
    if not (folder / "model_index.json").is_file():
        raise DataFormatError(f"{key}: {folder} is not a diffusers model folder (no model_index.json)")
    for component, stem in _COMPONENTS.items():
        _check_component(folder / component, stem)


def _check_bundled_folder(folder: Path) -> None:
    """A folder in the bundled model's format: VAE and U-Net safetensors, text encoder from its package."""
    from .ldm.loading import _read_text_source, locate_text_encoder

    source_file = folder / "text_encoder_source.json"
    if not (folder / "unet" / "config.json").is_file() or not source_file.is_file():
        raise MissingWeightsError(f"the bundled model is not in {folder} (expected vae/, unet/, scheduler/ and "
                                  "text_encoder_source.json); reinstall brain2image")
    for component in ("vae", "unet"):
        _check_safetensors(folder / component / "diffusion_pytorch_model.safetensors")
    package, _ = _read_text_source(source_file)
    _check_safetensors(locate_text_encoder(package, source_file) / "model.safetensors")


def _missing_from_cache(model: str, key: str, config_file: str | os.PathLike | None) -> MissingWeightsError:
    offline = "HF_HUB_OFFLINE is set; " if os.environ.get("HF_HUB_OFFLINE") else ""
    fix = (f"or set model = \"/path/to/diffusers/folder\" in {config_file}" if config_file is not None
           else "or set model to a local diffusers folder")
    return MissingWeightsError(
        f"{key}: weights not in the local Hugging Face cache {hub_cache_folder()} ({offline}brain2image never "
        f"downloads); get them on a machine with internet (`huggingface-cli download {model}`, then copy the "
        f"cache, see $HF_HOME) {fix}")


def check_model_files(model: str, config_file: str | os.PathLike | None = None) -> Path | None:
    """Find the run's model and read its weights' headers, without loading it.

    Parameters
    ----------
    model : str
        The config's ``model``: ``bundled``, ``random:<arch>``, a local folder or a hub id.
    config_file : path-like, optional
        The config file the value came from, named in the messages.

    Returns
    -------
    The model's folder (None for a ``random:`` model).

    Raises
    ------
    MissingFileError, MissingWeightsError, DataFormatError, InvalidArgumentError
        One line naming ``model`` (and the config file): no such folder, not in the cache, a weight
        file missing or unreadable, an unknown ``random:`` architecture.
    """
    from .ldm.loading import BUNDLED, _named_model_dir
    from .ldm.random_model import is_random_model, parse_random_model

    key = _model_key(model, config_file)
    if is_random_model(model):
        parse_random_model(model)
        return None
    local = Path(model).expanduser()
    folder = _named_model_dir(BUNDLED) if model == BUNDLED else local if local.is_dir() else None
    if folder is None and is_missing_model_folder(model):
        raise MissingFileError(f"{key}: folder not found; expected 'bundled', 'random:sd-v1-4', a diffusers hub "
                               "id (owner/name) in the local cache or an existing diffusers folder")
    if folder is None:
        folder = _cached_snapshot(model)
        if folder is None:
            raise _missing_from_cache(model, key, config_file)
    if (folder / "text_encoder_source.json").is_file() and not (folder / "model_index.json").is_file():
        _check_bundled_folder(folder)
    else:
        _check_diffusers_folder(folder, key)
    return folder


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing parent."""
    path = path.expanduser().absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _out_dir_key(out_dir: str, config_file: str | os.PathLike | None) -> str:
    """``out_dir = '...' in run.toml``: the config key a message names."""
    return f"out_dir = {out_dir!r}" + (f" in {config_file}" if config_file is not None else "")


def _check_writable(folder: Path, name: str) -> None:
    """Create and remove a probe file in ``folder``'s nearest existing parent; one line naming ``name`` if not."""
    parent = _nearest_existing(folder)
    if not parent.is_dir():
        raise MissingFileError(f"{name}: {folder} cannot be created: {parent} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".brain2image-probe-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise MissingFileError(f"{name}: {folder} cannot be written ({parent}: {error.strerror or error})") from None


def check_output_folders(config: RunConfig, config_file: str | os.PathLike | None = None) -> None:
    """``out_dir`` and, for a several-subject run, each subject's folder can be created and written.

    A probe file is created and removed in each folder's nearest existing parent.

    Raises
    ------
    MissingFileError
        One line naming ``out_dir`` (and the config file) and the folder: under a regular file, or not writable.
    """
    from .pipeline import subject_configs

    key = _out_dir_key(config.out_dir, config_file)
    _check_writable(Path(config.out_dir), key)
    for single in subject_configs(config) if config.subjects is not None else []:
        _check_writable(Path(single.out_dir), f"subject {single.subject}'s folder (under {key})")


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; empty when the file is missing or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _positive(value: object) -> int:
    """``value`` as a count when it is a plausible positive integer, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**6 else 0


def _text_configs(folder: Path) -> tuple[dict, int]:
    """The text encoder's config and the tokens per prompt, of a diffusers or bundled-format folder."""
    source = _read_json(folder / "text_encoder_source.json")
    if source:
        from .ldm.loading import TEXT_ENCODER_PACKAGES, locate_text_encoder

        package = source.get("package")
        if package not in TEXT_ENCODER_PACKAGES:
            return {}, 0
        return _read_json(locate_text_encoder(str(package)) / "config.json"), _positive(source.get("max_length"))
    tokens = _read_json(folder / "tokenizer" / "tokenizer_config.json").get("model_max_length")
    return _read_json(folder / "text_encoder" / "config.json"), _positive(tokens)


@dataclass(frozen=True)
class _ModelSizes:
    """What a model folder's configs say about its outputs: smallest image side (pixels), values of z and c.

    The smallest side is the z resolution's (``z_only`` images) when smaller than the native one.
    """

    side: int
    z_values: int
    c_values: int

    @classmethod
    def of(cls, folder: Path | None, z_resolution: int | None) -> _ModelSizes:
        """From the folder's ``unet``, ``vae`` and text encoder configs; unknown sizes are lower bounds."""
        if folder is None:
            return cls(_MIN_SIDE, 0, 0)
        unet, vae = _read_json(folder / "unet" / "config.json"), _read_json(folder / "vae" / "config.json")
        sample = unet.get("sample_size")
        factor = 2 ** max(0, len(vae.get("block_out_channels") or [0]) - 1)
        side = _positive(sample[0] if isinstance(sample, list) and sample else sample) * factor
        z_side = z_resolution or max(factor, round(side * 5 / 8 / factor) * factor)
        z_values = _positive(vae.get("latent_channels")) * (z_side // factor) ** 2
        text, tokens = _text_configs(folder)
        return cls(max(min(side, z_side), _MIN_SIDE), z_values, tokens * _positive(text.get("hidden_size")))


@dataclass(frozen=True)
class _PreparedSizes:
    """What a subject's prepared file says: its images, test images and each ROI's voxels (empty when unknown)."""

    n_images: int = 0
    n_test: int = 1
    voxels: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, path: Path) -> _PreparedSizes:
        """Sizes of the prepared file at ``path``; the defaults when it is not there or not readable."""
        from .errors import Brain2ImageError
        from .formats.prepared import PreparedData

        if not path.is_file():
            return cls()
        try:
            prepared = PreparedData(path)
            n_test = len(prepared.trials("test")["ids"])
            voxels = tuple((roi, prepared.n_voxels(roi)) for roi in prepared.roi_keys)
            n_images = len(prepared.image_ids())
        except (Brain2ImageError, OSError, KeyError, IndexError, ValueError):
            return cls()
        return cls(n_images, max(1, n_test), voxels)


def _target_values(target: str, model: _ModelSizes) -> int:
    """Values of one decoder target per image (built-in z and c; 0 for a plug-in's, unknown here)."""
    return {"z": model.z_values, "c": model.c_values}.get(target, 0)


def estimate_run_bytes(config: RunConfig, model_folder: Path | None) -> int:
    """A rough lower bound of the bytes a one-subject run still writes.

    Reconstruction PNGs: test images (the prepared file's when it is there, else 1) × draws (a
    method with diffusion: ``n_samples``, else 1) × a PNG's size (a quarter byte per pixel of the
    smaller of the native and z sides), less the PNGs already written. With the prepared file: each
    feature store not yet written (images × the target's values × 4 bytes) and each decoder not yet
    written (voxels of its ROI × the target's values × 4 bytes). What cannot be told without loading
    anything counts as 0.
    """
    from .formats.run_layout import RunLayout
    from .methods import parse_methods
    from .sources import source_of

    layout = RunLayout.of(config.out_dir, config.subject, config.model, source_of(config).dataset)
    model = _ModelSizes.of(model_folder, config.features.z_resolution)
    prepared = _PreparedSizes.of(layout.prepared)
    recon = layout.file("recon")
    done = sum(1 for _ in recon.rglob("*.png")) if recon.is_dir() else 0
    settings = config.reconstruction
    draws = sum(settings.n_samples if method.uses_diffusion else 1 for method in parse_methods(settings.methods))
    pngs = max(0, prepared.n_test * draws - done)
    total = pngs * int(model.side * model.side * _PNG_BYTES_PER_PIXEL)
    voxels = dict(prepared.voxels)
    for target, roi in config.decoder.targets.items():
        values = 4 * _target_values(target, model)
        if not layout.feature_store(target).is_file():
            total += prepared.n_images * values
        if not layout.decoder(target, roi).is_file():
            total += voxels.get(roi, 0) * values
    return total


def _gigabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.3g} GB"


def check_disk_space(config: RunConfig, model_folder: Path | None,
                     config_file: str | os.PathLike | None = None) -> None:
    """Refuse a run whose estimated outputs (:func:`estimate_run_bytes`, every subject) exceed the free space.

    The estimate is a lower bound, so a refusal means the run cannot finish there.

    Raises
    ------
    ResourceError
        One line with the estimate, the free space and the folder.
    """
    from .pipeline import subject_configs

    singles = subject_configs(config) if config.subjects is not None else [config]
    needed = sum(estimate_run_bytes(single, model_folder) for single in singles)
    where = _nearest_existing(Path(config.out_dir))
    free = shutil.disk_usage(where).free
    if free < needed:
        raise ResourceError(
            f"{_out_dir_key(config.out_dir, config_file)}: the run writes at least {_gigabytes(needed)} (estimate "
            f"from the PNGs, features and decoders) but {where} has {_gigabytes(free)} free; free space, set "
            "out_dir on a larger disk or lower [reconstruction] n_samples")


def _check_stages(config: RunConfig) -> None:
    """Each enabled stage's settings and :meth:`~brain2image.stages.Stage.check` (the ``device``), first.

    As a one-subject :func:`~brain2image.pipeline.run_pipeline` does them before the source's files.
    """
    from .pipeline import subject_configs
    from .stages import pipeline_stages
    from .stages.registry import check_stage_settings

    for single in subject_configs(config) if config.subjects is not None else [config]:
        check_stage_settings(single)
        for stage in pipeline_stages():
            if stage.enabled(single):
                stage.check(single)


def check_before_run(config: RunConfig, config_file: str | os.PathLike | None = None) -> None:
    """Everything cheap a run needs, checked before anything is written or loaded.

    The config's values, the model's files (:func:`check_model_files`), then every check of
    :func:`~brain2image.pipeline.check_study` (the source's files and every subject in it, each
    enabled stage's :meth:`~brain2image.stages.Stage.check`), every output folder's writability
    (:func:`check_output_folders`) and the free disk space (:func:`check_disk_space`).

    Parameters
    ----------
    config : RunConfig
    config_file : path-like, optional
        The config file, named in the messages about its keys.

    Raises
    ------
    MissingFileError, MissingWeightsError, DataFormatError, InvalidArgumentError, ResourceError
        The first check that fails, as one line.
    """
    from .config import check_config
    from .pipeline import check_study

    check_config(config)
    model_folder = check_model_files(config.model, config_file)
    _check_stages(config)
    check_study(config)
    check_output_folders(config, config_file)
    check_disk_space(config, model_folder, config_file)
