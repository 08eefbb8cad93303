"""Pretrained networks whose activations are the feature spaces of the metric table.

Networks and nodes (torchvision names, read with
:func:`torchvision.models.feature_extraction.create_feature_extractor`):

========== ===================================================== ====== ===========
network    nodes                                                 resize normalise
========== ===================================================== ====== ===========
alexnet    features.4 (Alex2), features.11 (Alex5);              256    ImageNet
           Takagi's features.5, features.12, classifier.5
inception  avgpool (Inception-v3, ``transform_input=True``)      342    ImageNet
effnet     avgpool (EfficientNet-B1)                             255    ImageNet
swav       avgpool (SwAV ResNet-50)                              224    ImageNet
clip       image_embeds (CLIP ViT-L/14, projected embedding)      224    CLIP
========== ===================================================== ====== ===========

Resize sizes follow MindEye's evaluation (bilinear, square images resized to ``s × s``). Which
node is which feature space of the metric table is said in :mod:`.feature_spaces`.

Weights never download: ``weights="default"`` looks in ``weights_dir`` (when given) and then in
the torch hub cache (``torch.hub.get_dir()/checkpoints``) for the standard checkpoint file
names; CLIP looks for ``weights_dir/clip-vit-large-patch14`` and then the Hugging Face cache.
``weights=<path>`` loads that file (a state_dict; for CLIP a model folder); ``weights=None``
builds a randomly initialised network (for tests). Missing weights raise
:class:`~brain2image.errors.MissingWeightsError` naming the file and how to get it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DataFormatError, MissingWeightsError

__all__ = [
    "NetworkSpec",
    "NETWORKS",
    "FeatureNetwork",
    "load_feature_network",
    "find_checkpoint",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MODEL_ID = "openai/clip-vit-large-patch14"


@dataclass(frozen=True)
class NetworkSpec:
    """How to build, feed and read one network."""

    name: str
    nodes: tuple[str, ...]
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    checkpoint: str
    source: str


NETWORKS: dict[str, NetworkSpec] = {
    "alexnet": NetworkSpec(
        "alexnet", ("features.4", "features.11", "features.5", "features.12", "classifier.5"), 256,
        IMAGENET_MEAN, IMAGENET_STD, "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth "
        "(torchvision.models.AlexNet_Weights.IMAGENET1K_V1)"),
    "inception": NetworkSpec(
        "inception", ("avgpool",), 342, IMAGENET_MEAN, IMAGENET_STD, "inception_v3_google-0cc3c7bd.pth",
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth "
        "(torchvision.models.Inception_V3_Weights.IMAGENET1K_V1)"),
    "effnet": NetworkSpec(
        "effnet", ("avgpool",), 255, IMAGENET_MEAN, IMAGENET_STD, "efficientnet_b1-c27df63c.pth",
        "https://download.pytorch.org/models/efficientnet_b1-c27df63c.pth "
        "(torchvision.models.EfficientNet_B1_Weights.DEFAULT)"),
    "swav": NetworkSpec(
        "swav", ("avgpool",), 224, IMAGENET_MEAN, IMAGENET_STD, "swav_800ep_pretrain.pth.tar",
        "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar "
        "(torch.hub.load('facebookresearch/swav:main', 'resnet50'))"),
    "clip": NetworkSpec(
        "clip", ("image_embeds",), 224, CLIP_MEAN, CLIP_STD, "clip-vit-large-patch14",
        f"the Hugging Face model {CLIP_MODEL_ID} (huggingface-cli download {CLIP_MODEL_ID})"),
}

def find_checkpoint(spec: NetworkSpec, weights_dir: str | Path | None = None) -> Path:
    """Locate a network's checkpoint without downloading.

    Looks in ``weights_dir`` (when given), then in ``torch.hub.get_dir()/checkpoints``.

    Raises
    ------
    MissingWeightsError
        Naming the expected file and where to get it.
    """
    places = ([Path(weights_dir)] if weights_dir is not None else []) + [
        Path(torch.hub.get_dir()) / "checkpoints"]
    for place in places:
        candidate = place / spec.checkpoint
        if candidate.exists():
            return candidate
    raise MissingWeightsError(
        f"{spec.name} weights: {spec.checkpoint} not found in {', '.join(map(str, places))}; "
        f"download {spec.source} into one of them, or pass an explicit path")


def _load_state_dict(path: Path, name: str) -> dict:
    if not Path(path).exists():
        raise MissingWeightsError(f"{name} weights: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataFormatError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


class _ClipImageEmbeds(nn.Module):
    """CLIPVisionModelWithProjection → {"image_embeds": (n, projection_dim)}."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_embeds": self.model(pixel_values=pixel_values).image_embeds}


def _build_clip(weights, weights_dir, clip_config) -> tuple[nn.Module, int]:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if weights is None:
        config = clip_config or CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            patch_size=14, image_size=224, projection_dim=768)
        model = CLIPVisionModelWithProjection(config)
    else:
        if weights == "default":
            local = Path(weights_dir) / NETWORKS["clip"].checkpoint if weights_dir is not None else None
            source = str(local) if local is not None and local.is_dir() else CLIP_MODEL_ID
        else:
            source = str(weights)
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(source, local_files_only=True)
        except OSError as error:
            raise MissingWeightsError(
                f"clip weights: {source} is not in the local Hugging Face cache or not a model folder; "
                f"download {NETWORKS['clip'].source}, or pass --weights-dir holding "
                f"clip-vit-large-patch14/ ({error.__class__.__name__})") from error
    return _ClipImageEmbeds(model), _square_side(model.config.image_size)


def _square_side(size: object) -> int:
    """The side of a square input from a config's ``image_size`` (an int or an (h, w) pair)."""
    if isinstance(size, int):
        return size
    if isinstance(size, tuple | list) and len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    raise DataFormatError(f"clip config: image_size must be an int or a square (h, w) pair, got {size!r}")


def _build_torchvision(name: str, weights, weights_dir) -> nn.Module:
    from torchvision import models

    random_init = weights is None
    if name == "alexnet":
        model = models.alexnet(weights=None)
    elif name == "inception":
        model = models.inception_v3(weights=None, aux_logits=True, transform_input=True,
                                    init_weights=random_init)
    elif name == "effnet":
        model = models.efficientnet_b1(weights=None)
    elif name == "swav":
        model = models.resnet50(weights=None)
    else:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    if random_init:
        return model
    path = find_checkpoint(NETWORKS[name], weights_dir) if weights == "default" else Path(weights)
    state = _load_state_dict(path, name)
    if name == "swav":
        # SwAV checkpoints carry a projection head and prototypes, and no (or a linear-eval) fc.
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own}
        missing = [k for k in own if k not in state and not k.startswith("fc.")]
        if missing:
            raise DataFormatError(
                f"{path}: not a SwAV ResNet-50 state_dict; missing {len(missing)} keys such as {missing[:3]}")
        model.load_state_dict(state, strict=False)
    else:
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise DataFormatError(f"{path}: not a {name} state_dict ({str(error).splitlines()[0]})") from error
    return model


class FeatureNetwork:
    """A network with its preprocessing, returning activations at named nodes.

    Parameters
    ----------
    spec : NetworkSpec
    extractor : nn.Module
        Returns a dict node → tensor.
    resize : int
        Input side in pixels.
    device : str or torch.device
    """

    def __init__(self, spec: NetworkSpec, extractor: nn.Module, resize: int,
                 device: str | torch.device = "cpu"):
        self.spec = spec
        self.device = torch.device(device)
        self.extractor = extractor.to(self.device).eval()
        self.resize = resize
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Names of the nodes :meth:`extract` returns."""
        return self.spec.nodes

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images (n, H, W, 3) → normalised tensor (n, 3, resize, resize)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataFormatError(
                f"{self.spec.name} input: expected uint8 images of shape (n_images, height, width, 3), "
                f"got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True,
                          align_corners=False)
        return (x - self._mean) / self._std

    def extract(self, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Activations at every node, flattened.

        Parameters
        ----------
        images : array of shape (n_images, height, width, 3), uint8

        Returns
        -------
        features : dict node → array of shape (n_images, n_features), float32
        """
        chunks: dict[str, list[np.ndarray]] = {node: [] for node in self.nodes}
        for start in range(0, len(images), batch_size):
            with torch.no_grad():
                out = self.extractor(self.preprocess(images[start:start + batch_size]))
            for node in self.nodes:
                chunks[node].append(out[node].flatten(1).float().cpu().numpy())
        return {node: np.concatenate(c) for node, c in chunks.items() if c}


def load_feature_network(name: str, weights: str | Path | None = "default", *,
                         weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                         clip_config=None) -> FeatureNetwork:
    """Build one of :data:`NETWORKS` with its weights.

    Parameters
    ----------
    name : {"alexnet", "inception", "effnet", "swav", "clip"}
    weights : "default", path or None
        "default": the standard checkpoint from ``weights_dir`` or the local caches;
        a path: that state_dict file (CLIP: a model folder); None: random initialisation.
    weights_dir : path, optional
        A folder holding checkpoints under their standard names.
    device : str or torch.device
    clip_config : transformers.CLIPVisionConfig, optional
        Architecture of a random CLIP (``weights=None``); default ViT-L/14.

    Raises
    ------
    MissingWeightsError
        When the weights are not on disk.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    spec = NETWORKS[name]
    if name == "clip":
        extractor, resize = _build_clip(weights, weights_dir, clip_config)
        if clip_config is None:
            resize = spec.resize
        return FeatureNetwork(spec, extractor, resize, device)
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _build_torchvision(name, weights, weights_dir).eval()
    # Inception traces an extra auxiliary branch in train mode; only eval mode is used here.
    extractor = create_feature_extractor(model, return_nodes=list(spec.nodes), suppress_diff_warning=True)
    return FeatureNetwork(spec, extractor, spec.resize, device)
