"""The scene evaluator: a small CNN that reads the content of a procedural scene.

The embedded default study shows procedural scenes (:mod:`brain2image.embedded.simulate.scenes`) that no
ImageNet network has seen, so the "semantic" feature space of the metric table is this network's
penultimate layer instead of AlexNet / Inception / CLIP. It is trained on rendered scenes to
predict

- which object categories are present (multi-label, 6 sigmoid outputs),
- which colours the objects have (multi-label, 8 sigmoid outputs),
- the background (5-way softmax).

Its predictions also judge whether a text-to-image sample draws the captioned content
(:meth:`SceneEvaluator.content_match`).

Recipe (:func:`train_scene_evaluator`): training scenes drawn with ``scene_seed`` (default 7001),
validation scenes with ``val_seed`` (default 7002) — both distinct from the bundled diffusion
model's scenes (seed 1234); images 64 px; light augmentation (pixel noise, random blur, a few
pixels of shift) so that blurry reconstructions are read too; with ``roundtrip_model`` (the
bundled evaluator uses ``bundled``), a share of the training images is replaced by their VAE
round trip (encode, decode: the same content as rendered by the LDM's decoder, labelled with the
true scene), so that content is read equally in images the LDM draws; never U-Net outputs.
AdamW with a one-cycle schedule. Validation on held-out scenes reports the real images, their
VAE round trips, and the false-match rate on shuffled (image, scene) pairs. Weights are saved as
safetensors with a JSON of the recipe and of the validation figures (``bundled/scene_evaluator``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._io import atomic_path, atomic_write_text
from ..errors import DataFormatError, MissingWeightsError
from ..evaluation.feature_spaces import FeatureSpace, LoadOptions
from .simulate.scenes import BACKGROUNDS, CATEGORIES, COLOURS, Scene, render_scenes, sample_scenes

__all__ = [
    "SceneEvaluatorConfig",
    "SceneEvaluatorNet",
    "SceneEvaluator",
    "scene_targets",
    "train_scene_evaluator",
    "validate_scene_evaluator",
    "bundled_evaluator_dir",
    "scene_feature_space",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
INFO_NAME = "evaluator.json"

_COLOUR_NAMES = tuple(COLOURS)
_BACKGROUND_NAMES = tuple(BACKGROUNDS)


def bundled_evaluator_dir() -> Path:
    """Folder of the bundled scene-evaluator weights inside the installed package."""
    return Path(__file__).resolve().parent / "bundled" / "scene_evaluator"


@dataclass
class SceneEvaluatorConfig:
    """Hyperparameters of the scene evaluator and of its training recipe."""

    image_size: int = 64
    channels: tuple[int, ...] = (24, 48, 96, 128)
    feature_dim: int = 128
    n_train_scenes: int = 8000
    n_val_scenes: int = 1000
    scene_seed: int = 7001
    val_seed: int = 7002
    seed: int = 0
    batch_size: int = 64
    epochs: int = 12
    lr: float = 3e-3
    weight_decay: float = 1e-4
    noise_sd: float = 0.03
    blur_prob: float = 0.3
    max_shift: int = 3
    threshold: float = 0.5
    roundtrip_model: str | None = None
    roundtrip_prob: float = 0.5

    def to_dict(self) -> dict:
        """Plain-dict form, for JSON."""
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SceneEvaluatorConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(known["channels"])
        return cls(**known)


class SceneEvaluatorNet(nn.Module):
    """Four conv blocks, global average and max pooling, one hidden layer (the features), three heads."""

    def __init__(self, channels: tuple[int, ...] = (24, 48, 96, 128), feature_dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Linear(2 * c_in, feature_dim)
        self.category_head = nn.Linear(feature_dim, len(CATEGORIES))
        self.colour_head = nn.Linear(feature_dim, len(COLOURS))
        self.background_head = nn.Linear(feature_dim, len(BACKGROUNDS))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, tensor of shape (n_images, feature_dim)."""
        h = self.conv(x)
        # Max pooling answers "is it anywhere?", average pooling "how much of it?".
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return F.relu(self.hidden(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (features, category logits, colour logits, background logits)."""
        f = self.features(x)
        return f, self.category_head(f), self.colour_head(f), self.background_head(f)


def scene_targets(scenes: list[Scene]) -> dict[str, np.ndarray]:
    """Training targets of scenes.

    Returns
    -------
    dict with ``categories`` array of shape (n_scenes, 6) float32 (1 = present),
    ``colours`` array of shape (n_scenes, 8) float32 (1 = some object has it),
    ``background`` array of shape (n_scenes,) int64.
    """
    n = len(scenes)
    categories = np.zeros((n, len(CATEGORIES)), dtype=np.float32)
    colours = np.zeros((n, len(COLOURS)), dtype=np.float32)
    background = np.zeros(n, dtype=np.int64)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            categories[i, CATEGORIES.index(obj.category)] = 1
            colours[i, _COLOUR_NAMES.index(obj.colour)] = 1
        background[i] = _BACKGROUND_NAMES.index(scene.background)
    return {"categories": categories, "colours": colours, "background": background}


def _to_tensor(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 images (n, H, W, 3) → float tensor (n, 3, image_size, image_size) centred on 0."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataFormatError(
            f"scene evaluator input: expected images of shape (n_images, height, width, 3), "
            f"got {images.shape}")
    if images.dtype != np.uint8:
        raise DataFormatError(f"scene evaluator input: expected dtype uint8, got {images.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          antialias=True, align_corners=False)
    return x - 0.5


def _augment(x: torch.Tensor, config: SceneEvaluatorConfig, generator: torch.Generator) -> torch.Tensor:
    """Pixel noise, random 3×3 box blur and a small random shift (one per batch)."""
    n = x.shape[0]
    blur = torch.rand(n, generator=generator) < config.blur_prob
    if blur.any():
        kernel = torch.full((3, 1, 3, 3), 1 / 9.0)
        x_blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        x = torch.where(blur[:, None, None, None], x_blur, x)
    if config.max_shift > 0:
        dx, dy = (torch.randint(-config.max_shift, config.max_shift + 1, (2,), generator=generator)).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return x + config.noise_sd * torch.randn(x.shape, generator=generator)


class SceneEvaluator:
    """A trained :class:`SceneEvaluatorNet` with numpy in and out.

    Parameters
    ----------
    net : SceneEvaluatorNet
    config : SceneEvaluatorConfig
    info : dict, optional
        The JSON saved with the weights (recipe and validation figures).
    device : str or torch.device
    """

    def __init__(self, net: SceneEvaluatorNet, config: SceneEvaluatorConfig, info: dict | None = None,
                 device: str | torch.device = "cpu"):
        self.net = net.to(device).eval()
        self.config = config
        self.info = info or {}
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> SceneEvaluator:
        """Load an evaluator from a folder (default: the bundled one).

        Raises
        ------
        MissingWeightsError
            When ``model.safetensors`` or ``evaluator.json`` is not in the folder.
        """
        from safetensors.torch import load_file

        folder = Path(path) if path is not None else bundled_evaluator_dir()
        weights, info_path = folder / WEIGHTS_NAME, folder / INFO_NAME
        for needed in (weights, info_path):
            if not needed.is_file():
                raise MissingWeightsError(
                    f"scene evaluator: {needed} not found; train it with "
                    f"brain2image.embedded.scene_evaluator.train_scene_evaluator(out_dir={folder})")
        info = json.loads(info_path.read_text())
        config = SceneEvaluatorConfig.from_dict(info["config"])
        net = SceneEvaluatorNet(config.channels, config.feature_dim)
        net.load_state_dict(load_file(str(weights)))
        return cls(net, config, info, device)

    @property
    def feature_dim(self) -> int:
        """Dimension of :meth:`features`."""
        return self.config.feature_dim

    def _batches(self, images: np.ndarray, batch_size: int):
        for start in range(0, len(images), batch_size):
            x = _to_tensor(images[start:start + batch_size], self.config.image_size).to(self.device)
            with torch.no_grad():
                yield self.net(x)

    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Penultimate-layer features.

        Parameters
        ----------
        images : array of shape (n_images, height, width, 3), uint8
            Any size; resized to the evaluator's 64 px.

        Returns
        -------
        features : array of shape (n_images, feature_dim), float32
        """
        out = [f.cpu().numpy() for f, *_ in self._batches(images, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Predicted content.

        Returns
        -------
        dict with ``category_prob`` (n_images, 6), ``colour_prob`` (n_images, 8),
        ``background_prob`` (n_images, 5) float32; ``categories`` (n_images, 6) and ``colours``
        (n_images, 8) bool (probability ≥ the config's threshold); ``background`` (n_images,) int64.
        Column order: :data:`CATEGORIES`, :data:`COLOURS`, :data:`BACKGROUNDS`.
        """
        cat, col, bg = [], [], []
        for _, c, o, b in self._batches(images, batch_size):
            cat.append(torch.sigmoid(c).cpu().numpy())
            col.append(torch.sigmoid(o).cpu().numpy())
            bg.append(torch.softmax(b, dim=1).cpu().numpy())
        cat_p = np.concatenate(cat) if cat else np.zeros((0, len(CATEGORIES)), np.float32)
        col_p = np.concatenate(col) if col else np.zeros((0, len(COLOURS)), np.float32)
        bg_p = np.concatenate(bg) if bg else np.zeros((0, len(BACKGROUNDS)), np.float32)
        t = self.config.threshold
        return {"category_prob": cat_p, "colour_prob": col_p, "background_prob": bg_p,
                "categories": cat_p >= t, "colours": col_p >= t, "background": bg_p.argmax(axis=1)}

    def content_match(self, images: np.ndarray, scenes: list[Scene], *,
                      background: bool = False) -> np.ndarray:
        """Whether each image shows every category and colour its scene's captions name.

        Image i matches scene i when the predicted category set contains every category of
        the scene's objects **and** the predicted colour set contains every colour of its
        objects (extra predicted categories or colours are allowed; which colour belongs to
        which object is not checked). With ``background=True`` the predicted background
        must also be the scene's.

        Parameters
        ----------
        images : array of shape (n_images, height, width, 3), uint8
        scenes : list of n_images Scene

        Returns
        -------
        match : array of shape (n_images,), bool
        """
        if len(scenes) != len(images):
            raise DataFormatError(f"content_match: {len(images)} images but {len(scenes)} scenes")
        pred = self.predict(images)
        true = scene_targets(scenes)
        ok = _shows_content(pred, true)
        if background:
            ok &= pred["background"] == true["background"]
        return ok


def scene_feature_space(device: str | torch.device | None = None, path: str | Path | None = None) -> FeatureSpace:
    """The ``scene`` feature space of the metric table (reported as ``semantic``).

    The entry point ``scene`` of the ``brain2image.feature_spaces`` group: its extractor is a
    :class:`SceneEvaluator` (penultimate-layer features, resized to its 64 px input).

    Parameters
    ----------
    device : str or torch.device, optional
        Where the evaluator runs; default: the evaluation's device (``LoadOptions.device``).
    path : path, optional
        Folder of the evaluator (default: the bundled one).

    Returns
    -------
    FeatureSpace
        Named ``scene``, kind ``identification``.
    """
    def load(options: LoadOptions) -> SceneEvaluator:
        return SceneEvaluator.load(path, device=options.device if device is None else device)

    return FeatureSpace("scene", "identification", load, reported="semantic",
                        description="penultimate layer of the scene evaluator (procedural scenes)")


def _shows_content(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> np.ndarray:
    """Per image: every category and every colour of its scene is among the predicted ones."""
    return (np.all(pred["categories"] >= (true["categories"] > 0), axis=1)
            & np.all(pred["colours"] >= (true["colours"] > 0), axis=1))


def _binary_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    tp = float(np.sum(pred & true))
    fp = float(np.sum(pred & ~true))
    fn = float(np.sum(~pred & true))
    return {
        "f1_micro": 2 * tp / max(2 * tp + fp + fn, 1.0),
        "label_accuracy": float(np.mean(pred == true)),
        "set_accuracy": float(np.mean(np.all(pred == true, axis=1))),
    }


def validate_scene_evaluator(evaluator: SceneEvaluator, scenes: list[Scene],
                             images: np.ndarray | None = None) -> dict[str, float]:
    """Per-task validation figures on scenes (rendered at the evaluator's size unless given).

    Returns
    -------
    dict with ``category_f1_micro``, ``category_label_accuracy``, ``category_set_accuracy``,
    the same three for ``colour_*``, ``background_accuracy``, ``content_match_rate``
    (categories and colours), ``content_match_rate_with_background`` and
    ``false_match_rate_shuffled`` (content match against another scene's content).
    """
    if images is None:
        images = render_scenes(scenes, evaluator.config.image_size)
    pred = evaluator.predict(images)
    true = scene_targets(scenes)
    out: dict[str, float] = {"n_scenes": len(scenes)}
    for task in ("categories", "colours"):
        name = "category" if task == "categories" else "colour"
        for key, value in _binary_scores(pred[task], true[task] > 0).items():
            out[f"{name}_{key}"] = value
    out["background_accuracy"] = float(np.mean(pred["background"] == true["background"]))
    match = _shows_content(pred, true)
    out["content_match_rate"] = float(match.mean())
    out["content_match_rate_with_background"] = float(
        (match & (pred["background"] == true["background"])).mean())
    # Specificity: the same images judged against other scenes' content should rarely match.
    other = _shuffled_pairs(len(scenes), seed=0)
    out["false_match_rate_shuffled"] = float(_shows_content(pred, {k: v[other] for k, v in true.items()}).mean())
    return out


def _vae_roundtrip(images: np.ndarray, model_name: str, batch_size: int = 256) -> np.ndarray:
    """Encode and decode uint8 images with an LDM's VAE at their own size (uint8 out)."""
    from ..ldm.loading import load_ldm

    model = load_ldm(model_name)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            out.append(model.decode_latents(model.encode_images(batch, resolution=batch.shape[1])))
    return np.concatenate(out)


def _shuffled_pairs(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) without fixed points (image i is paired with another scene)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.roll(perm, 1)[np.argsort(perm)]


def train_scene_evaluator(out_dir: str | Path, seed: int = 0, minutes: float = 6.0,
                          config: SceneEvaluatorConfig | None = None, n_threads: int | None = 1,
                          progress: bool = False) -> dict:
    """Train the scene evaluator, validate it on held-out scenes, save weights and figures.

    Parameters
    ----------
    out_dir : path
        Folder receiving ``model.safetensors`` and ``evaluator.json``.
    seed : int
        Seed of initialisation, batch order and augmentation (overrides ``config.seed``).
    minutes : float
        Wall-clock cap on training; training stops early (and says so in the JSON) when hit.
    config : SceneEvaluatorConfig, optional
    n_threads : int or None
        ``torch.set_num_threads`` during training (restored afterwards); None leaves it.
    progress : bool
        Log each epoch at INFO level.

    Returns
    -------
    info : dict
        What ``evaluator.json`` holds: ``config``, ``training`` and ``validation`` figures.
    """
    config = SceneEvaluatorConfig(**{**asdict(config or SceneEvaluatorConfig()), "seed": seed})
    if config.scene_seed == config.val_seed:
        raise ValueError("scene_seed and val_seed must differ (held-out validation)")
    old_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        t0 = time.monotonic()
        data = _TrainingData.render(config)
        render_s = time.monotonic() - t0
        net = SceneEvaluatorNet(config.channels, config.feature_dim)
        training = _fit(net, data, config, generator, minutes=minutes, progress=progress, t0=t0)
        training.update(render_seconds=render_s, train_seconds=time.monotonic() - t0,
                        n_parameters=sum(p.numel() for p in net.parameters()))
        net.eval()
        validation = _validate_recipe(SceneEvaluator(net, config), config)
    finally:
        torch.set_num_threads(old_threads)

    info = {
        "config": config.to_dict(),
        "training": training,
        "validation": validation,
        "feature_dim": config.feature_dim,
        "label_order": {"categories": list(CATEGORIES), "colours": list(_COLOUR_NAMES),
                        "backgrounds": list(_BACKGROUND_NAMES)},
    }
    _save(Path(out_dir), net, info)
    return info


@dataclass(frozen=True)
class _TrainingData:
    """Training images as model inputs, their VAE round trips (optional) and targets."""

    x: torch.Tensor
    x_roundtrip: torch.Tensor | None
    targets: dict[str, torch.Tensor]

    @classmethod
    def render(cls, config: SceneEvaluatorConfig) -> _TrainingData:
        """Draw and render the training scenes of ``config`` (and round-trip them)."""
        scenes = sample_scenes(config.n_train_scenes, config.scene_seed)
        images = render_scenes(scenes, config.image_size)
        x = _to_tensor(images, config.image_size)
        x_roundtrip = (_to_tensor(_vae_roundtrip(images, config.roundtrip_model), config.image_size)
                       if config.roundtrip_model else None)
        return cls(x, x_roundtrip, {k: torch.from_numpy(v) for k, v in scene_targets(scenes).items()})

    def batch(self, idx: torch.Tensor, config: SceneEvaluatorConfig, generator: torch.Generator) -> torch.Tensor:
        """Augmented inputs of the images ``idx`` (a share swapped for their round trips)."""
        x = self.x[idx]
        if self.x_roundtrip is not None:
            swap = torch.rand(len(idx), generator=generator) < config.roundtrip_prob
            x = torch.where(swap[:, None, None, None], self.x_roundtrip[idx], x)
        return _augment(x, config, generator)

    def loss(self, net: SceneEvaluatorNet, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Summed category, colour (binary cross-entropy) and background (cross-entropy) losses."""
        _, cat, col, bg = net(x)
        return (F.binary_cross_entropy_with_logits(cat, self.targets["categories"][idx])
                + F.binary_cross_entropy_with_logits(col, self.targets["colours"][idx])
                + F.cross_entropy(bg, self.targets["background"][idx]))


def _fit(net: SceneEvaluatorNet, data: _TrainingData, config: SceneEvaluatorConfig, generator: torch.Generator,
         *, minutes: float, progress: bool, t0: float) -> dict:
    """AdamW with a one-cycle schedule until the epochs are done or ``minutes`` have passed.

    Returns
    -------
    dict with ``steps``, ``planned_steps``, ``stopped_early`` and ``epoch_loss`` (per epoch).
    """
    n = len(data.x)
    total_steps = math.ceil(n / config.batch_size) * config.epochs
    optim = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=config.lr, total_steps=total_steps)
    deadline = time.monotonic() + 60.0 * minutes
    step, stopped_early, losses = 0, False, []
    net.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        epoch_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = data.loss(net, data.batch(idx, config, generator), idx)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            step += 1
            epoch_loss += float(loss.detach()) * len(idx)
            if time.monotonic() > deadline:
                stopped_early = True
                break
        losses.append(epoch_loss / n)
        if progress:
            logger.info("scene evaluator epoch %d loss %.4f (%.0f s)", epoch, losses[-1], time.monotonic() - t0)
        if stopped_early:
            logger.warning("scene evaluator: stopped at the %.1f-minute cap after %d of %d steps",
                           minutes, step, total_steps)
            break
    return {"steps": step, "planned_steps": total_steps, "stopped_early": stopped_early, "epoch_loss": losses}


def _validate_recipe(evaluator: SceneEvaluator, config: SceneEvaluatorConfig) -> dict:
    """Figures on the held-out scenes of ``config`` (and on their VAE round trips, when used)."""
    scenes = sample_scenes(config.n_val_scenes, config.val_seed)
    images = render_scenes(scenes, config.image_size)
    validation: dict = dict(validate_scene_evaluator(evaluator, scenes, images))
    if config.roundtrip_model:
        validation["roundtrip"] = validate_scene_evaluator(evaluator, scenes,
                                                           _vae_roundtrip(images, config.roundtrip_model))
    return validation


def _save(out_dir: Path, net: SceneEvaluatorNet, info: dict) -> None:
    """Write ``model.safetensors`` and ``evaluator.json`` (each atomically)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    atomic_write_text(out_dir / INFO_NAME, json.dumps(info, indent=2))
