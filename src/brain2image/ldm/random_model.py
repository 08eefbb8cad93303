"""Real latent diffusion architectures with seeded random weights (``random:sd-v1-4``).

The configs of each architecture ship in ``brain2image/ldm/model_configs/<name>/`` (diffusers and
transformers config files plus the tokenizer's vocabulary), so nothing is downloaded. The weights
are random: such a model measures a run's shapes, memory and time, never reconstruction quality.
Everything it produces is marked :data:`RANDOM_WEIGHTS_LABEL` (``metrics.json``, the report).

Names: ``random:<architecture>`` (seed 0) or ``random:<architecture>@<seed>``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataFormatError, InvalidArgumentError

if TYPE_CHECKING:
    import torch

    from ..sources import StimulusSource

__all__ = ["RANDOM_PREFIX", "RANDOM_WEIGHTS_LABEL", "RandomModelSpec", "is_random_model", "parse_random_model",
           "known_architectures", "clip_vocabulary", "load_clip_tokenizer", "materialize_random",
           "build_random_module", "build_random_components", "random_weights_marking",
           "warn_if_random_on_real_data"]

logger = logging.getLogger(__name__)

#: Prefix of the names of random-weight models.
RANDOM_PREFIX = "random:"
#: The mark every output of a random-weight model carries.
RANDOM_WEIGHTS_LABEL = "random weights"
#: CLIP's byte-pair vocabulary (OpenAI CLIP, MIT; as shipped in open-clip-torch), see NOTICE beside it.
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
#: Merges of the CLIP vocabulary: 49408 tokens = 2 x 256 byte tokens + merges + 2 special tokens.
CLIP_N_MERGES = 49152 - 256 - 2
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


def _configs_root() -> Traversable:
    return resources.files("brain2image.ldm") / "model_configs"


def known_architectures() -> list[str]:
    """Architectures shipped with brain2image (``sd-v1-4``), sorted."""
    return sorted(entry.name for entry in _configs_root().iterdir() if entry.is_dir() and entry.name[0] not in "._")


@dataclass(frozen=True)
class RandomModelSpec:
    """A parsed random-model name.

    Parameters
    ----------
    architecture : str
        Folder of ``model_configs`` (``sd-v1-4``).
    seed : int
        Seed of the weights (0 when the name has no ``@seed``).
    """

    architecture: str
    seed: int = 0

    @property
    def name(self) -> str:
        """The canonical name: ``random:<architecture>``, with ``@<seed>`` unless the seed is 0."""
        return f"{RANDOM_PREFIX}{self.architecture}" + (f"@{self.seed}" if self.seed else "")

    @property
    def folder(self) -> Traversable:
        """The architecture's config folder."""
        return _configs_root() / self.architecture


def is_random_model(name: str | os.PathLike | None) -> bool:
    """Whether ``name`` selects a random-weight model (starts with ``random:``)."""
    return name is not None and str(name).startswith(RANDOM_PREFIX)


def parse_random_model(name: str) -> RandomModelSpec:
    """Parse ``random:<architecture>[@<seed>]``.

    Raises
    ------
    InvalidArgumentError
        For an unknown architecture or a seed that is not a non-negative integer.
    """
    rest = str(name)[len(RANDOM_PREFIX):]
    architecture, _, seed_text = rest.partition("@")
    known = known_architectures()
    if architecture not in known:
        raise InvalidArgumentError(f"model {name!r}: unknown random architecture {architecture!r}; expected one of "
                                   f"{[RANDOM_PREFIX + k for k in known]} (optionally with @SEED)")
    if "@" in rest and not seed_text.isdigit():
        raise InvalidArgumentError(f"model {name!r}: seed {seed_text!r} after '@' must be a non-negative integer, "
                                   f"e.g. {RANDOM_PREFIX}{architecture}@1")
    return RandomModelSpec(architecture, int(seed_text) if seed_text else 0)


def _read_json(folder: Traversable, component: str, filename: str = "config.json") -> dict[str, Any]:
    return json.loads((folder / component / filename).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------- tokenizer
def _byte_symbols() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255, in CLIP's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(extra))]


def clip_vocabulary(bpe_gz: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's token ids and merges from the gzipped merge list ``bpe_simple_vocab_16e6.txt.gz``.

    The vocabulary is the byte symbols, the same with ``</w>``, one token per merge, then
    ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).

    Returns
    -------
    vocab : dict of str to int, 49408 entries
    merges : list of (str, str), 48894 pairs
    """
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    pairs = [line.split() for line in lines[1:CLIP_N_MERGES + 1]]
    if len(pairs) != CLIP_N_MERGES or any(len(pair) != 2 for pair in pairs):
        raise DataFormatError(f"{CLIP_BPE_FILE}: expected {CLIP_N_MERGES} merge lines of two symbols after "
                              "the header line")
    merges = [(first, second) for first, second in pairs]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [CLIP_BOS, CLIP_EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def load_clip_tokenizer(folder: Traversable, max_length: int) -> Any:
    """The CLIP BPE tokenizer (transformers ``CLIPTokenizer``) from ``<folder>/tokenizer``.

    It writes the ``vocab.json`` / ``merges.txt`` pair that every transformers version reads to a
    temporary folder and loads it from there.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary((folder / "tokenizer" / CLIP_BPE_FILE).read_bytes())
    with tempfile.TemporaryDirectory(prefix="brain2image-clip-") as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        Path(tmp, "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in merges) + "\n",
                                           encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)


# ---------------------------------------------------------------------------------------- weights
def _tensor_seed(seed: int, component: str, name: str) -> int:
    """A 56-bit seed of one tensor, from the model seed, the component and the tensor's name."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{component}/{name}".encode()).digest()[:7], "little")


def _random_tensor(name: str, shape: tuple[int, ...], seed: int, device: torch.device, dtype: torch.dtype
                   ) -> torch.Tensor:
    """Weights ~ N(0, 1/fan_in) (variance-preserving), norm scales 1, biases 0."""
    import torch

    if len(shape) >= 2:
        fan_in = max(1, int(torch.Size(shape[1:]).numel()))
        generator = torch.Generator().manual_seed(seed)
        value = torch.empty(shape, dtype=torch.float32).normal_(0.0, fan_in ** -0.5, generator=generator)
    elif name.endswith("bias"):
        value = torch.zeros(shape)
    else:
        value = torch.ones(shape)
    return value.to(device=device, dtype=dtype)


def materialize_random(module: torch.nn.Module, seed: int, component: str, device: torch.device,
                       dtype: torch.dtype) -> torch.nn.Module:
    """Give every parameter of ``module`` (built on the ``meta`` device) seeded random values.

    Each tensor has its own generator (seeded from ``seed``, ``component`` and its name), so the
    values do not depend on the order or the threads that draw them, nor on the global RNG.
    """
    params = {name: tuple(p.shape) for name, p in module.named_parameters()}
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        values = pool.map(lambda item: _random_tensor(item[0], item[1], _tensor_seed(seed, component, item[0]),
                                                      device, dtype), params.items())
        state = dict(zip(params, values))
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys or any(p.is_meta for p in module.parameters()):
        raise RuntimeError(f"{component}: random initialisation left parameters unset")
    return module


#: The modules with weights, in the order they are built.
COMPONENTS = ("vae", "unet", "text_encoder")


def _empty_module(folder: Traversable, component: str) -> torch.nn.Module:
    """``component`` built from its shipped config with its parameters on ``meta`` (buffers real)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = _read_json(folder, component)
    with init_empty_weights(include_buffers=False):
        if component == "vae":
            return AutoencoderKL.from_config(config)
        if component == "unet":
            return UNet2DConditionModel.from_config(config)
        if component == "text_encoder":
            return CLIPTextModel(CLIPTextConfig.from_dict(config))
    raise InvalidArgumentError(f"component {component!r}: expected one of {list(COMPONENTS)}")


def build_random_module(spec: RandomModelSpec, component: str, device: torch.device,
                        dtype: torch.dtype) -> torch.nn.Module:
    """One module (``vae``, ``unet`` or ``text_encoder``) of ``spec`` with its seeded random weights.

    It is built without memory on the ``meta`` device, then each parameter is drawn once,
    directly in ``dtype`` on ``device`` (:func:`materialize_random`).
    """
    return materialize_random(_empty_module(spec.folder, component), spec.seed, component, device, dtype)


def build_random_components(spec: RandomModelSpec, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The VAE, U-Net, text encoder, tokenizer and DDIM scheduler of ``spec`` with random weights.

    Returns
    -------
    dict with keys ``vae``, ``unet``, ``text_encoder``, ``tokenizer``, ``scheduler``
    """
    from diffusers import DDIMScheduler

    out: dict[str, Any] = {key: build_random_module(spec, key, device, dtype) for key in COMPONENTS}
    max_length = int(out["text_encoder"].config.max_position_embeddings)
    out["tokenizer"] = load_clip_tokenizer(spec.folder, max_length)
    out["scheduler"] = DDIMScheduler.from_config(_read_json(spec.folder, "scheduler", "scheduler_config.json"))
    return out


# ---------------------------------------------------------------------------------------- marking
def random_weights_marking(model: str | None, stimuli: StimulusSource | None) -> dict[str, Any]:
    """What ``metrics.json`` and the report carry for a random-weight model; ``{}`` for others.

    Parameters
    ----------
    model : str or None
    stimuli : StimulusSource or None
        The run's stimuli (:func:`brain2image.sources.stimuli_of`); None: unknown, no warning.

    Returns
    -------
    dict
        ``{"weights": "random weights"}``, plus ``"warnings": [message]`` when the stimuli are real
        data (not simulated, e.g. an NSD tree written by ``brain2image simulate``).
    """
    if not is_random_model(model):
        return {}
    marking: dict[str, Any] = {"weights": RANDOM_WEIGHTS_LABEL}
    if stimuli is not None and not stimuli.is_simulated():
        marking["warnings"] = [f"random-weights model {model} used on real {stimuli.describe()}: its features, "
                               "images and metrics measure shapes, memory and time only, not the method"]
    return marking


def warn_if_random_on_real_data(model: str | None, stimuli: StimulusSource | None) -> list[str]:
    """Log (warning level) the warnings of :func:`random_weights_marking`; returns them."""
    warnings: list[str] = random_weights_marking(model, stimuli).get("warnings", [])
    for message in warnings:
        logger.warning(message)
    return warnings
