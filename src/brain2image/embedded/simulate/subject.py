"""The simulated subject: a voxelwise encoding model of visual cortex.

The model maps an image (and its scene's semantic labels) to a noise-free response, in
percent signal change, of every voxel of a small 3-D volume:

Anatomy
    The volume (X, Y, Z) holds an ellipsoidal brain. Each ROI of the NSD ``streams`` atlas that
    is simulated (``early`` = 1, ``midventral`` = 2, ``ventral`` = 5, ``lateral`` = 6) is a
    compact blob: the ``n`` brain voxels nearest a seed point (early: posterior; ventral:
    inferior and more anterior; the others in between). ``nsdgeneral`` is their union
    (value 1), the rest of the brain 0 and the outside -1, as in NSD.

Early voxels (retinotopic)
    Low-level feature maps are computed on a grid of half the image's side: luminance ON and
    OFF, the rectified colour-opponent channels red–green, green–red, blue–yellow,
    yellow–blue, saturation, local luminance contrast and Gaussian-derivative edge energy at
    4 orientations (0, 45, 90, 135 degrees) — :data:`CHANNELS`. Each channel is standardised
    over all images and positions. Every early voxel has a circular Gaussian receptive field
    (centre uniform over the image, sd growing with eccentricity, 0.03–0.12 of the image's
    side) and pools a random positive (gamma-distributed, sparse) mixture of the channels
    inside it: ``drive = sum_k w_k sum_p G(p) F_k(p)``.

Ventral voxels (semantic)
    ``drive = (z(labels @ b) + l * z(layout)) / sqrt(1 + l**2)``: ``labels`` is
    :func:`~brain2image.embedded.simulate.scenes.scene_labels`
    (category counts, colour counts, background one-hot, object count); ``b`` is sparse (each
    voxel weights 3–6 labels, Gaussian weights); ``layout`` is a weak (about 10 % of the
    variance, ``l = ±0.33``) term, the luminance pooled in one very coarse receptive field (sd 0.3).

Intermediate voxels (``midventral``, ``lateral``)
    A mixture ``a * early-type + (1 - a) * semantic-type`` with ``a`` uniform in [0.3, 0.7].

Model view
    When the subject has a ``model_size``, every image is first area-resampled to that side
    (:func:`resample_images`) and the feature maps are computed on this view: a large stimulus
    (NSD's 425 px) drives the same model as a small one, at the cost of a small matrix product.

Each voxel's drive is standardised over the study's images, or over the first of them (mean
and sd kept in the model, so new images are mapped the same way), and the response is
``baseline + amplitude * z(drive)`` with a baseline ~ N(1.5 %, 0.5 %) and an amplitude (the
signal sd) log-normal around 1 %.

Noise (applied by :mod:`brain2image.embedded.simulate.study`)
    A single-trial beta is ``response + e + o_session``: ``e`` ~ N(0, noise_sd) independent per
    trial and voxel, ``o_session`` a per-voxel per-session offset ~ N(0, offset_fraction *
    noise_sd). ``noise_sd = amplitude / ncsnr`` with a per-voxel ``ncsnr`` log-normal around
    the target median (NSD's ncsnr is exactly this: signal sd over single-trial noise sd).
    Brain voxels outside ``nsdgeneral`` carry noise only (ncsnr 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import h5py
import numpy as np
from scipy import ndimage

from ...errors import InvalidArgumentError

__all__ = [
    "CHANNELS",
    "STREAM_LABELS",
    "DEFAULT_ROI_SIZES",
    "SimulatedAnatomy",
    "SimulatedSubject",
    "make_anatomy",
    "image_feature_maps",
    "resample_images",
]

#: Low-level feature channels the early voxels pool over (order of ``channel_weights``).
CHANNELS = (
    "lum_on", "lum_off", "red_green", "green_red", "blue_yellow", "yellow_blue",
    "saturation", "contrast", "edge_0", "edge_45", "edge_90", "edge_135",
)

#: NSD ``streams`` atlas labels (value → name), as in ``streams.mgz.ctab``.
STREAM_LABELS: dict[int, str] = {
    0: "Unknown", 1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal",
    5: "ventral", 6: "lateral", 7: "parietal",
}

#: Voxels per simulated ROI (streams label name → count).
DEFAULT_ROI_SIZES: dict[str, int] = {"early": 1500, "ventral": 1500, "midventral": 250, "lateral": 250}

# Seed points of the ROI blobs, as fractions of the volume's (X, Y, Z) extent. Y runs
# posterior → anterior and Z inferior → superior (RAS), so early sits at the back.
_ROI_SEEDS = {
    "early": (0.5, 0.12, 0.5),
    "midventral": (0.5, 0.35, 0.25),
    "ventral": (0.5, 0.5, 0.2),
    "lateral": (0.12, 0.4, 0.5),
}
_VOXEL_KIND = {"early": "early", "ventral": "ventral", "midventral": "mixed", "lateral": "mixed"}


@dataclass(frozen=True)
class SimulatedAnatomy:
    """The volume, its brain mask and ROIs.

    Attributes
    ----------
    volume_shape : tuple of int
        (X, Y, Z), NIfTI axis order.
    brainmask : ndarray of shape (X, Y, Z), bool
    streams : ndarray of shape (X, Y, Z), int16
        NSD ``streams`` label of each voxel (0 = none).
    affine : ndarray of shape (4, 4)
        Voxel → mm, 1.8 mm isotropic voxels.
    """

    volume_shape: tuple[int, int, int]
    brainmask: np.ndarray
    streams: np.ndarray
    affine: np.ndarray

    @property
    def nsdgeneral(self) -> np.ndarray:
        """NSD ``nsdgeneral`` volume, int16: -1 outside the brain, 0 brain, 1 visual cortex."""
        out = np.where(self.brainmask, 0, -1).astype(np.int16)
        out[self.streams > 0] = 1
        return out

    @property
    def voxel_ijk(self) -> np.ndarray:
        """(X, Y, Z) indices of the ``nsdgeneral`` voxels, array of shape (n_voxels, 3), int32.

        The order (C order over the (X, Y, Z) volume) is the voxel order of every per-voxel
        array of :class:`SimulatedSubject`.
        """
        return np.argwhere(self.streams > 0).astype(np.int32)


def make_anatomy(volume_shape: tuple[int, int, int] = (24, 30, 20),
                 roi_sizes: Mapping[str, int] | None = None, seed: int = 0,
                 voxel_size: float = 1.8) -> SimulatedAnatomy:
    """Build an ellipsoidal brain with compact ROI blobs of exact sizes.

    Parameters
    ----------
    volume_shape : (int, int, int)
        (X, Y, Z) of the volume.
    roi_sizes : mapping of str to int, optional
        ``streams`` label name → number of voxels (default :data:`DEFAULT_ROI_SIZES`).
    seed : int
        Seed of the tie-breaking jitter of the blobs.
    voxel_size : float
        Voxel side in mm (NIfTI affine).

    Raises
    ------
    InvalidArgumentError
        On an unknown ROI name, or ROIs that do not fit in the brain.
    """
    roi_sizes = dict(DEFAULT_ROI_SIZES if roi_sizes is None else roi_sizes)
    shape = tuple(int(s) for s in volume_shape)
    if len(shape) != 3 or min(shape) < 4:
        raise InvalidArgumentError(f"volume_shape must be 3 sides >= 4, got {volume_shape}")
    unknown = set(roi_sizes) - set(_ROI_SEEDS)
    if unknown:
        raise InvalidArgumentError(f"unknown ROI(s) {sorted(unknown)}; expected some of {sorted(_ROI_SEEDS)}")
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n for n in shape], indexing="ij"), axis=-1)
    brainmask = (((grid - 0.5) / 0.5) ** 2).sum(-1) <= 1.0
    n_brain = int(brainmask.sum())
    if sum(roi_sizes.values()) > 0.9 * n_brain:
        raise InvalidArgumentError(f"ROIs of {sum(roi_sizes.values())} voxels do not fit in a brain of "
                         f"{n_brain} voxels of volume_shape {shape}; enlarge the volume")
    streams = np.zeros(shape, dtype=np.int16)
    value_of = {name: value for value, name in STREAM_LABELS.items()}
    jitter = rng.uniform(0, 1e-3, size=shape)
    scale = np.asarray(shape, dtype=float)
    for name in _ROI_SEEDS:  # fixed order: deterministic
        if name not in roi_sizes:
            continue
        dist = np.sqrt((((grid - np.asarray(_ROI_SEEDS[name])) * scale) ** 2).sum(-1)) + jitter
        dist[~brainmask | (streams > 0)] = np.inf
        order = np.argsort(dist, axis=None, kind="stable")[: int(roi_sizes[name])]
        streams.flat[order] = value_of[name]
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = -voxel_size * (np.asarray(shape) - 1) / 2
    return SimulatedAnatomy(shape, brainmask, streams, affine)


def image_feature_maps(images: np.ndarray, grid: int | None = None, chunk: int = 128) -> np.ndarray:
    """Low-level feature maps of images (raw, not standardised).

    Parameters
    ----------
    images : ndarray of shape (n_images, size, size, 3), uint8
    grid : int, optional
        Side of the output maps (default ``size // 2``); must divide ``size``.
    chunk : int
        Images processed at once (bounds the memory).

    Returns
    -------
    maps : ndarray of shape (n_images, n_channels, grid, grid), float32
        Channels in :data:`CHANNELS` order.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InvalidArgumentError(f"images must have shape (n_images, size, size, 3), got {images.shape}")
    size = images.shape[1]
    grid = size // 2 if grid is None else int(grid)
    if size % grid:
        raise InvalidArgumentError(f"grid {grid} must divide the image side {size}")
    out = np.empty((len(images), len(CHANNELS), grid, grid), dtype=np.float32)
    for start in range(0, len(images), chunk):
        out[start:start + chunk] = _chunk_feature_maps(images[start:start + chunk], grid)
    return out


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """Area-resampling weights from ``n_in`` to ``n_out`` pixels, array of shape (n_out, n_in), rows sum to 1."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    pixel = np.arange(n_in)
    overlap = np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel)
    return np.clip(overlap, 0.0, None) / (n_in / n_out)


def resample_images(images: np.ndarray, size: int, chunk: int = 32) -> np.ndarray:
    """Area-resample square images to ``size`` × ``size`` (each output pixel averages the input it covers).

    Parameters
    ----------
    images : ndarray of shape (n_images, side, side, 3), uint8
    size : int
        Output side (at most ``side``); the images are returned unchanged when it equals ``side``.
    chunk : int
        Images processed at once (bounds the memory).

    Returns
    -------
    resampled : ndarray of shape (n_images, size, size, 3), uint8
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (n_images, side, side, 3), got {images.shape}")
    side = images.shape[1]
    if size == side:
        return images
    if not 1 <= size < side:
        raise ValueError(f"size must be between 1 and the image side {side}, got {size}")
    weights = _area_weights(side, size).astype(np.float32)
    # Columns with the channels interleaved: (side * 3) -> (size * 3), one matrix product per chunk.
    columns = np.kron(weights.T, np.eye(3, dtype=np.float32))
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].astype(np.float32).reshape(-1, side, side * 3)
        rows = np.tensordot(weights, part, axes=([1], [1]))  # (size, n, side * 3), one matrix product
        both = (rows.reshape(-1, side * 3) @ columns).reshape(size, len(part), size, 3)
        out[start:start + chunk] = np.clip(np.round(both.transpose(1, 0, 2, 3)), 0, 255)
    return out


def _chunk_feature_maps(images: np.ndarray, grid: int) -> np.ndarray:
    rgb = images.astype(np.float32) / 255.0
    size = rgb.shape[1]
    f = size // grid

    def down(x: np.ndarray) -> np.ndarray:  # block average onto the grid (anti-aliased)
        return x.reshape(len(x), grid, f, grid, f).mean(axis=(2, 4))

    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    rg = r - g
    by = b - 0.5 * (r + g)
    s = size / 32.0  # filter scales in pixels of a 32-pixel reference image
    local_mean = ndimage.gaussian_filter(lum, sigma=(0, 2 * s, 2 * s))
    contrast = np.sqrt(ndimage.gaussian_filter((lum - local_mean) ** 2, sigma=(0, s, s)))
    gy = ndimage.gaussian_filter(lum, sigma=(0, s, s), order=(0, 1, 0))
    gx = ndimage.gaussian_filter(lum, sigma=(0, s, s), order=(0, 0, 1))
    lum_d = down(lum)
    rg_d, by_d = down(rg), down(by)
    maps = [lum_d, 1 - lum_d, np.maximum(rg_d, 0), np.maximum(-rg_d, 0), np.maximum(by_d, 0),
            np.maximum(-by_d, 0), down(rgb.max(-1) - rgb.min(-1)), down(contrast)]
    for theta in np.deg2rad([0, 45, 90, 135]):
        # Edge energy at orientation theta = squared luminance gradient along its normal.
        d = gx * np.sin(theta) + gy * np.cos(theta)
        maps.append(down(ndimage.gaussian_filter(d * d, sigma=(0, s, s))))
    return np.stack(maps, axis=1)


def _gaussian_rfs(centres: np.ndarray, sizes: np.ndarray, grid: int) -> np.ndarray:
    """Normalised Gaussian RFs, array of shape (grid * grid, n_voxels) float32."""
    coords = (np.arange(grid) + 0.5) / grid
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    d2 = ((xx.reshape(-1, 1) - centres[:, 0]) ** 2 + (yy.reshape(-1, 1) - centres[:, 1]) ** 2)
    rf = np.exp(-0.5 * d2 / sizes**2)
    return (rf / rf.sum(0, keepdims=True)).astype(np.float32)


def _draw_voxel_parameters(anatomy: SimulatedAnatomy, n_labels: int, ncsnr: float, ncsnr_spread: float,
                           rng: np.random.Generator) -> dict[str, Any]:
    """The random parameters of every ``nsdgeneral`` voxel (the fields of SimulatedSubject).

    Draws from ``rng`` in a fixed order: the same generator state gives the same subject.
    """
    stream = anatomy.streams[tuple(anatomy.voxel_ijk.T)]
    kind = np.array([_VOXEL_KIND[STREAM_LABELS[int(v)]] for v in stream])
    n_vox = len(kind)
    mix = np.where(kind == "early", 1.0, np.where(kind == "ventral", 0.0,
                                                 rng.uniform(0.3, 0.7, n_vox)))
    # Retinotopy: centres cover the image (a little beyond its border), size grows with eccentricity.
    centre = rng.uniform(-0.05, 1.05, size=(n_vox, 2))
    ecc = np.linalg.norm(centre - 0.5, axis=1)
    size = np.clip((0.03 + 0.12 * ecc) * rng.lognormal(0, 0.25, n_vox), 0.025, 0.15)
    n_ch = len(CHANNELS)
    cw = rng.gamma(0.4, size=(n_vox, n_ch)) * (rng.random((n_vox, n_ch)) < 0.6)
    cw[np.arange(n_vox), rng.integers(0, n_ch, n_vox)] += 1.0  # at least one channel
    cw /= cw.sum(1, keepdims=True)
    sw = rng.normal(0, 1, size=(n_vox, n_labels)) * (
        rng.random((n_vox, n_labels)) < rng.uniform(3, 6, (n_vox, 1)) / n_labels)
    sw[np.arange(n_vox), rng.integers(0, n_labels, n_vox)] += rng.choice([-1.5, 1.5], n_vox)
    cw[mix == 0] = 0.0
    sw[mix == 1] = 0.0
    return {
        "kind": kind, "mix": mix, "rf_centre": centre, "rf_size": size,
        "channel_weights": cw.astype(np.float32), "semantic_weights": sw.astype(np.float32),
        "layout_weight": np.where(mix < 1, rng.choice([-1.0, 1.0], n_vox) * 0.33, 0.0),
        "layout_centre": rng.uniform(0.25, 0.75, size=(n_vox, 2)),
        "baseline": rng.normal(1.5, 0.5, n_vox), "amplitude": rng.lognormal(0.0, 0.3, n_vox),
        "ncsnr": ncsnr * rng.lognormal(0.0, ncsnr_spread, n_vox),
    }


@dataclass
class SimulatedSubject:
    """Parameters of the encoding model of one simulated subject (see module docstring).

    Per-voxel arrays follow the order of :attr:`SimulatedAnatomy.voxel_ijk`.

    Attributes
    ----------
    anatomy : SimulatedAnatomy
    kind : ndarray of shape (n_voxels,), str
        ``early``, ``ventral`` or ``mixed``.
    mix : ndarray of shape (n_voxels,)
        Weight of the early-type drive (1 early, 0 ventral).
    rf_centre : ndarray of shape (n_voxels, 2)
        (x, y) RF centre as fractions of the image side (x right, y down).
    rf_size : ndarray of shape (n_voxels,)
        RF sd, fraction of the image side.
    channel_weights : ndarray of shape (n_voxels, n_channels)
        Non-negative weights of :data:`CHANNELS` (zero for ventral voxels).
    semantic_weights : ndarray of shape (n_voxels, n_labels)
        Weights of :func:`~brain2image.embedded.simulate.scenes.scene_labels` (zero for early voxels).
    layout_weight : ndarray of shape (n_voxels,)
        Weight of the coarse luminance layout term of ventral-type drives.
    layout_centre : ndarray of shape (n_voxels, 2)
        Centre of the coarse layout RF (sd :attr:`layout_size`).
    baseline, amplitude : ndarray of shape (n_voxels,)
        Mean response and signal sd, % signal change.
    ncsnr : ndarray of shape (n_voxels,)
        Signal sd / single-trial noise sd.
    channel_mean, channel_sd : ndarray of shape (n_channels,)
        Standardisation of the feature maps.
    drive_mean, drive_sd : ndarray of shape (n_voxels, 3)
        Standardisation of the early-type, semantic and layout drives (columns).
    grid : int
        Side of the feature maps.
    drive_norm : ndarray of shape (n_voxels,)
        sd of the combined standardised drives over the study's images (divided out).
    layout_size : float
        sd of the coarse layout RF, fraction of the image side.
    model_size : int or None
        Side images are area-resampled to before the feature maps (:func:`resample_images`);
        None: images are used at their own size.
    """

    anatomy: SimulatedAnatomy
    kind: np.ndarray
    mix: np.ndarray
    rf_centre: np.ndarray
    rf_size: np.ndarray
    channel_weights: np.ndarray
    semantic_weights: np.ndarray
    layout_weight: np.ndarray
    layout_centre: np.ndarray
    baseline: np.ndarray
    amplitude: np.ndarray
    ncsnr: np.ndarray
    channel_mean: np.ndarray
    channel_sd: np.ndarray
    drive_mean: np.ndarray
    drive_sd: np.ndarray
    grid: int
    drive_norm: np.ndarray | None = None
    layout_size: float = 0.3
    model_size: int | None = None
    _rf_cache: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_voxels(self) -> int:
        """Number of ``nsdgeneral`` voxels."""
        return int(self.kind.shape[0])

    @property
    def noise_sd(self) -> np.ndarray:
        """Single-trial noise sd per voxel (% signal change), array of shape (n_voxels,)."""
        return self.amplitude / self.ncsnr

    @overload
    @classmethod
    def sample(cls, anatomy: SimulatedAnatomy, images: np.ndarray, labels: np.ndarray, *,
               ncsnr: float = ..., ncsnr_spread: float = ..., seed: int = ...,
               model_size: int | None = ..., return_responses: Literal[False] = ...) -> SimulatedSubject: ...

    @overload
    @classmethod
    def sample(cls, anatomy: SimulatedAnatomy, images: np.ndarray, labels: np.ndarray, *,
               ncsnr: float = ..., ncsnr_spread: float = ..., seed: int = ...,
               model_size: int | None = ...,
               return_responses: Literal[True]) -> tuple[SimulatedSubject, np.ndarray]: ...

    @classmethod
    def sample(cls, anatomy: SimulatedAnatomy, images: np.ndarray, labels: np.ndarray, *,
               ncsnr: float = 0.4, ncsnr_spread: float = 0.3, seed: int = 0,
               model_size: int | None = None, return_responses: bool = False
               ) -> SimulatedSubject | tuple[SimulatedSubject, np.ndarray]:
        """Draw a subject's parameters and standardise its drives on ``images``.

        Parameters
        ----------
        anatomy : SimulatedAnatomy
        images : ndarray of shape (n_images, size, size, 3), uint8
            The images that set the feature and drive standardisation (the study's, or the
            first of them).
        labels : ndarray of shape (n_images, n_labels)
            Their :func:`~brain2image.embedded.simulate.scenes.scene_labels`.
        ncsnr : float
            Median single-trial ncsnr of the ROI voxels.
        ncsnr_spread : float
            sd of log(ncsnr) across voxels.
        seed : int
        model_size : int, optional
            Side of the model's view (see :attr:`model_size`); None: the images' own side.
        return_responses : bool
            Also return :meth:`responses` of ``images`` (computed once, with the drives).

        Returns
        -------
        subject : SimulatedSubject
        responses : ndarray of shape (n_images, n_voxels), float32
            Only when ``return_responses``.
        """
        if ncsnr <= 0:
            raise ValueError(f"ncsnr must be > 0, got {ncsnr}")
        if model_size is not None:
            images = resample_images(images, model_size)
        params = _draw_voxel_parameters(anatomy, labels.shape[1], ncsnr, ncsnr_spread,
                                        np.random.default_rng(seed))
        n_vox, n_ch = len(params["kind"]), len(CHANNELS)
        subject = cls(
            anatomy=anatomy, **params,
            channel_mean=np.zeros(n_ch), channel_sd=np.ones(n_ch),
            drive_mean=np.zeros((n_vox, 3)), drive_sd=np.ones((n_vox, 3)),
            grid=images.shape[1] // 2, model_size=model_size,
        )
        raw = subject._standardise(images, labels)
        if return_responses:
            return subject, subject._responses_from_drives(raw)
        return subject

    def _standardise(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Set the feature, drive and response scalings on ``images``; returns their raw drives."""
        maps = image_feature_maps(images, self.grid)
        self.channel_mean = maps.mean(axis=(0, 2, 3)).astype(np.float64)
        self.channel_sd = maps.std(axis=(0, 2, 3)).astype(np.float64) + 1e-8
        raw = self._raw_drives(maps, labels)
        self.drive_mean = raw.mean(0).astype(np.float64)
        self.drive_sd = raw.std(0).astype(np.float64) + 1e-6
        self.drive_norm = np.ones(self.n_voxels)
        first = self._responses_from_drives(raw)
        # Scale the combined drive to unit sd, so that ``amplitude`` is exactly the signal sd.
        self.drive_norm = (first.std(0) / self.amplitude) + 1e-12
        return raw

    def _raw_drives(self, maps: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Unstandardised drives, array of shape (n_images, n_voxels, 3).

        The last axis holds the early-type (RF-pooled features), semantic and layout drives.
        """
        n_images = maps.shape[0]
        z = ((maps - self.channel_mean[None, :, None, None].astype(np.float32))
             / self.channel_sd[None, :, None, None].astype(np.float32))
        flat = z.reshape(n_images, z.shape[1], -1)
        rf, layout_rf = self._receptive_fields()  # (n_positions, n_voxels) each
        n_ch = flat.shape[1]
        weights = self.channel_weights.T.astype(np.float32)  # (n_channels, n_voxels)
        early = np.empty((n_images, self.n_voxels), dtype=np.float32)
        for start in range(0, n_images, 128):  # chunks bound the (n, n_channels, n_voxels) array
            part = flat[start:start + 128]
            pooled = (part.reshape(-1, part.shape[-1]) @ rf).reshape(len(part), n_ch, -1)
            early[start:start + 128] = np.einsum("nkv,kv->nv", pooled, weights)
        layout = flat[:, 0] @ layout_rf  # lum_on channel in one coarse RF
        semantic = np.asarray(labels, dtype=np.float32) @ self.semantic_weights.T
        return np.stack([early, semantic, layout], axis=-1)

    def _receptive_fields(self) -> tuple[np.ndarray, np.ndarray]:
        """The voxels' pooling RFs and coarse layout RFs, arrays of shape (n_positions, n_voxels).

        Computed once per subject (the parameters do not change after :meth:`sample`).
        """
        if self._rf_cache is None:
            rf = _gaussian_rfs(self.rf_centre, self.rf_size, self.grid)
            layout_rf = _gaussian_rfs(self.layout_centre, np.full(self.n_voxels, self.layout_size), self.grid)
            self._rf_cache = (rf, layout_rf)
        return self._rf_cache

    def responses(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Noise-free responses (% signal change) of every ROI voxel.

        Parameters
        ----------
        images : ndarray of shape (n_images, size, size, 3), uint8
            Resampled to :attr:`model_size` first when the subject has one.
        labels : ndarray of shape (n_images, n_labels)

        Returns
        -------
        responses : ndarray of shape (n_images, n_voxels), float32
        """
        labels = np.asarray(labels)
        if labels.shape != (len(images), self.semantic_weights.shape[1]):
            raise ValueError(f"labels must have shape ({len(images)}, "
                             f"{self.semantic_weights.shape[1]}), got {labels.shape}")
        if self.model_size is not None:
            images = resample_images(images, self.model_size)
        return self._responses_from_drives(
            self._raw_drives(image_feature_maps(images, self.grid), labels))

    def _responses_from_drives(self, raw: np.ndarray) -> np.ndarray:
        z = (raw - self.drive_mean) / self.drive_sd
        lw = self.layout_weight
        ventral = (z[..., 1] + lw * z[..., 2]) / np.sqrt(1 + lw**2)
        drive = self.mix * z[..., 0] + (1 - self.mix) * ventral
        drive = drive / self.drive_norm
        return (self.baseline + self.amplitude * drive).astype(np.float32)

    _ARRAYS = ("mix", "rf_centre", "rf_size", "channel_weights", "semantic_weights",
               "layout_weight", "layout_centre", "baseline", "amplitude", "ncsnr",
               "channel_mean", "channel_sd", "drive_mean", "drive_sd", "drive_norm")

    def to_hdf5(self, group: h5py.Group) -> None:
        """Write the parameters into an HDF5 group (no timestamps, deterministic)."""
        for name in self._ARRAYS:
            group.create_dataset(name, data=np.asarray(getattr(self, name)), track_times=False)
        group.create_dataset("kind", data=self.kind.astype("S"), track_times=False)
        group.create_dataset("noise_sd", data=self.noise_sd, track_times=False)
        group.create_dataset("ijk", data=self.anatomy.voxel_ijk, track_times=False)
        group.create_dataset("brainmask", data=self.anatomy.brainmask.astype(np.int8),
                             track_times=False)
        group.create_dataset("streams", data=self.anatomy.streams, track_times=False)
        group.create_dataset("affine", data=self.anatomy.affine, track_times=False)
        group.attrs["grid"] = self.grid
        group.attrs["layout_size"] = self.layout_size
        group.attrs["channels"] = list(CHANNELS)
        if self.model_size is not None:  # absent otherwise: older files read the same
            group.attrs["model_size"] = self.model_size

    @classmethod
    def from_hdf5(cls, group: h5py.Group) -> SimulatedSubject:
        """Read back what :meth:`to_hdf5` wrote."""
        streams = group["streams"][()]
        x, y, z = (int(s) for s in streams.shape)
        anatomy = SimulatedAnatomy((x, y, z),
                                   group["brainmask"][()].astype(bool), streams,
                                   group["affine"][()])
        arrays = {name: group[name][()] for name in cls._ARRAYS}
        model_size = int(group.attrs["model_size"]) if "model_size" in group.attrs else None
        return cls(anatomy=anatomy, kind=group["kind"][()].astype(str), grid=int(group.attrs["grid"]),
                   layout_size=float(group.attrs["layout_size"]), model_size=model_size, **arrays)
