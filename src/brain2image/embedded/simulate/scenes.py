"""Procedurally generated scenes with COCO-style captions: the stimuli of the simulated study.

A scene is a background (a setting such as a field, a beach, a room) with one to three objects
of a few categories, each with a colour, a position and a size. Scenes are rendered with
vectorised numpy masks, supersampled for anti-aliased edges, and described by five different
captions that each name what is in the picture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLOURS",
    "SceneObject",
    "Scene",
    "sample_scene",
    "sample_scenes",
    "render_scene",
    "render_scenes",
    "scene_captions",
    "scene_labels",
    "label_names",
]

#: Object categories, the "what" of a scene.
CATEGORIES = ("ball", "box", "tree", "house", "car", "kite")

#: Named colours (RGB in [0, 1]).
COLOURS = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.12, 0.62, 0.18),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.96, 0.86, 0.10),
    "orange": (0.98, 0.55, 0.08),
    "purple": (0.58, 0.20, 0.72),
    "white": (0.96, 0.96, 0.96),
    "black": (0.08, 0.08, 0.08),
}

#: Backgrounds: name → (phrase for captions, top colour, bottom colour, horizon as a fraction of height).
BACKGROUNDS = {
    "field": ("in a field", (0.55, 0.75, 0.95), (0.35, 0.65, 0.25), 0.55),
    "beach": ("on a beach", (0.45, 0.70, 0.95), (0.90, 0.82, 0.60), 0.50),
    "snow": ("in the snow", (0.75, 0.80, 0.88), (0.97, 0.97, 1.00), 0.45),
    "night": ("at night", (0.05, 0.05, 0.20), (0.15, 0.15, 0.25), 0.60),
    "room": ("in a room", (0.80, 0.72, 0.60), (0.50, 0.35, 0.25), 0.70),
}

_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene; positions and size are fractions of the image side."""

    category: str
    colour: str
    x: float
    y: float
    size: float


@dataclass(frozen=True)
class Scene:
    """A background and its objects (drawn in order, later objects in front)."""

    background: str
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """Plain-dict form, for JSON."""
        return asdict(self)


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a random scene: background, 1–3 objects with category, colour, position and size."""
    background = str(rng.choice(list(BACKGROUNDS)))
    n_objects = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.20]))
    # Spread objects over distinct horizontal slots so that they rarely hide each other.
    slots = rng.permutation(3)[:n_objects]
    objects = []
    for slot in sorted(slots):
        size = float(rng.choice([0.26, 0.40])) * float(rng.uniform(0.9, 1.1))
        x = (slot + 0.5) / 3 + float(rng.uniform(-0.07, 0.07))
        y = float(rng.uniform(0.40, 0.72))
        objects.append(SceneObject(
            category=str(rng.choice(CATEGORIES)),
            colour=str(rng.choice(list(COLOURS))),
            x=x, y=y, size=size,
        ))
    return Scene(background=background, objects=tuple(objects))


def sample_scenes(n_scenes: int, seed: int) -> list[Scene]:
    """Draw ``n_scenes`` scenes with a seeded generator (same seed, same scenes)."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(n_scenes)]


def _object_mask(obj: SceneObject, xx: np.ndarray, yy: np.ndarray) -> list[tuple[np.ndarray, tuple]]:
    """Masks (with their colours) of the parts of one object on the grid ``xx, yy`` in [0, 1]."""
    colour = COLOURS[obj.colour]
    s, cx, cy = obj.size, obj.x, obj.y
    dx, dy = xx - cx, yy - cy
    parts: list[tuple[np.ndarray, tuple]] = []
    if obj.category == "ball":
        parts.append((dx**2 + dy**2 <= (s / 2) ** 2, colour))
    elif obj.category == "box":
        parts.append(((np.abs(dx) <= s / 2) & (np.abs(dy) <= s / 2), colour))
    elif obj.category == "tree":
        trunk = (np.abs(dx) <= s * 0.08) & (dy >= s * 0.15) & (dy <= s * 0.5)
        # Triangle crown: apex at top, base at dy = 0.2 s.
        height = (dy + s * 0.55) / (s * 0.75)
        crown = (height >= 0) & (height <= 1) & (np.abs(dx) <= height * s * 0.45)
        parts.append((trunk, (0.40, 0.25, 0.10)))
        parts.append((crown, colour))
    elif obj.category == "house":
        body = (np.abs(dx) <= s * 0.4) & (dy >= -s * 0.1) & (dy <= s * 0.45)
        height = (dy + s * 0.5) / (s * 0.4)
        roof = (height >= 0) & (height <= 1) & (np.abs(dx) <= height * s * 0.5)
        door = (np.abs(dx) <= s * 0.08) & (dy >= s * 0.2) & (dy <= s * 0.45)
        parts.append((body, colour))
        parts.append((roof, (0.55, 0.15, 0.10)))
        parts.append((door, (0.25, 0.15, 0.08)))
    elif obj.category == "car":
        body = (np.abs(dx) <= s * 0.5) & (dy >= -s * 0.05) & (dy <= s * 0.2)
        cabin = (np.abs(dx) <= s * 0.25) & (dy >= -s * 0.25) & (dy <= -s * 0.05)
        wheels = ((dx + s * 0.28) ** 2 + (dy - s * 0.22) ** 2 <= (s * 0.12) ** 2) | (
            (dx - s * 0.28) ** 2 + (dy - s * 0.22) ** 2 <= (s * 0.12) ** 2)
        parts.append((body | cabin, colour))
        parts.append((wheels, (0.05, 0.05, 0.05)))
    elif obj.category == "kite":
        parts.append((np.abs(dx) / (s * 0.35) + np.abs(dy) / (s * 0.55) <= 1, colour))
    else:  # pragma: no cover - guarded by sample_scene
        raise ValueError(f"unknown category {obj.category!r}; expected one of {CATEGORIES}")
    return parts


#: Extent of each category's parts around the object's centre, in units of its size:
#: (largest |dx|, smallest dy, largest dy) — see :func:`_object_mask`.
_EXTENT = {"ball": (0.5, -0.5, 0.5), "box": (0.5, -0.5, 0.5), "tree": (0.45, -0.55, 0.5),
           "house": (0.5, -0.5, 0.45), "car": (0.5, -0.25, 0.34), "kite": (0.35, -0.55, 0.55)}


def _block_mean(canvas: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` × ``factor`` block of an (H, W, 3) canvas.

    The blocks are summed in row-major order, the order of
    ``canvas.reshape(h, f, w, f, 3).mean(axis=(1, 3))``, so the result is bit-identical to it.
    """
    h, w = canvas.shape[0] // factor, canvas.shape[1] // factor
    blocks = canvas.reshape(h, factor, w, factor, canvas.shape[-1])
    total = blocks[:, 0, :, 0].copy()
    for a in range(factor):
        for b in range(factor):
            if a or b:
                total += blocks[:, a, :, b]
    return total / (factor * factor)


def _background_rows(background: str, coords: np.ndarray) -> np.ndarray:
    """Colour of every supersampled row of a background, array of shape (n_rows, 3)."""
    _, top_rgb, bottom_rgb, horizon = BACKGROUNDS[background]
    # Vertical gradient within each half gives the background some low-level structure.
    shade = np.where(coords < horizon, 0.85 + 0.3 * coords / horizon,
                     1.1 - 0.25 * (coords - horizon) / (1 - horizon))
    return np.where((coords < horizon)[:, None], np.asarray(top_rgb), np.asarray(bottom_rgb)) * shade[:, None]


def _object_window(obj: SceneObject, coords: np.ndarray, supersample: int) -> tuple[slice, slice]:
    """Rows and columns (whole output pixels, in supersampled units) that hold every part of ``obj``."""
    half_width, top, bottom = _EXTENT[obj.category]
    margin = 0.02 * obj.size + 1.0 / len(coords)

    def span(low: float, high: float) -> slice:
        start = int(np.searchsorted(coords, low - margin)) // supersample * supersample
        stop = -(-int(np.searchsorted(coords, high + margin, side="right")) // supersample) * supersample
        return slice(start, stop)

    return (span(obj.y + top * obj.size, obj.y + bottom * obj.size),
            span(obj.x - half_width * obj.size, obj.x + half_width * obj.size))


def _intersect(a: slice, b: slice) -> slice:
    """The part of slice ``b`` inside slice ``a``, relative to ``a.start`` (empty when disjoint)."""
    start, stop = max(a.start, b.start), min(a.stop, b.stop)
    return slice(start - a.start, max(start, stop) - a.start)


def _window_labels(scene: Scene, windows: list[tuple[slice, slice]], window: tuple[slice, slice],
                   coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which part covers each supersampled pixel of ``window`` (objects drawn in order, later in front).

    Returns
    -------
    labels : ndarray of shape (rows, columns), uint8
        0 for the background, ``k`` for the part of colour ``colours[k]``.
    colours : ndarray of shape (n_parts + 1, 3)
        Colour of each label (row 0 unused).
    """
    labels = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=np.uint8)
    colours = [(0.0, 0.0, 0.0)]
    for obj, other in zip(scene.objects, windows):
        local = (_intersect(window[0], other[0]), _intersect(window[1], other[1]))
        if local[0].start == local[0].stop or local[1].start == local[1].stop:
            continue  # the object's parts all lie outside this window
        part = labels[local]
        for mask, colour in _object_mask(obj, coords[window[1]][None, local[1]], coords[window[0]][local[0], None]):
            colours.append(colour)
            part[np.broadcast_to(mask, part.shape)] = len(colours) - 1
    return labels, np.asarray(colours, dtype=float)


def _window_mean(labels: np.ndarray, colours: np.ndarray, rows: np.ndarray, supersample: int) -> np.ndarray:
    """Block means of a window given its labels and its background rows ``rows`` (n_rows, 3).

    Blocks of one label take the block mean of that colour (or of the background rows); only
    blocks on an edge gather their supersampled values. Every value is summed in the order of
    :func:`_block_mean`, so the result equals the block mean of the drawn canvas bit for bit.
    """
    f = supersample
    blocks = labels.reshape(labels.shape[0] // f, f, labels.shape[1] // f, f)
    first = blocks[:, 0, :, 0]
    mixed = np.zeros(first.shape, dtype=bool)
    for a in range(f):
        for b in range(f):
            mixed |= blocks[:, a, :, b] != first
    out = np.empty((*first.shape, 3))
    out[:] = _block_mean(np.broadcast_to(rows[:, None, :], (len(rows), f, 3)), f)
    uniform = ~mixed & (first > 0)
    solid = np.concatenate([_block_mean(np.broadcast_to(c, (f, f, 3)), f) for c in colours])[:, 0]
    out[uniform] = solid[first[uniform]]
    bi, bj = np.nonzero(mixed)
    if len(bi):
        sub_rows = bi[:, None, None] * f + np.arange(f)[None, :, None]
        sub_cols = bj[:, None, None] * f + np.arange(f)[None, None, :]
        label = labels[sub_rows, sub_cols]
        values = np.where(label[..., None] == 0, rows[sub_rows], colours[label])
        total = values[:, 0, 0].copy()
        for a in range(f):
            for b in range(f):
                if a or b:
                    total += values[:, a, b]
        out[bi, bj] = total / (f * f)
    return out


def render_scene(scene: Scene, size: int = 64, supersample: int = 3) -> np.ndarray:
    """Render a scene.

    Parameters
    ----------
    scene : Scene
    size : int
        Side of the square image in pixels.
    supersample : int
        Render at ``size * supersample`` and average blocks, for anti-aliased edges.

    Returns
    -------
    image : ndarray of shape (size, size, 3), uint8

    Notes
    -----
    The background depends on the row only, so it is averaged once per row; the objects are
    drawn as labels only in the window of whole output pixels around each object (with every
    other object that reaches into it, in drawing order), and only edge blocks are averaged value
    by value. The result is bit-identical to drawing and averaging the whole supersampled canvas.
    """
    big = size * supersample
    coords = (np.arange(big) + 0.5) / big
    rows = _background_rows(scene.background, coords)
    canvas = np.empty((size, size, 3))
    canvas[:] = _block_mean(np.broadcast_to(rows[:, None, :], (big, supersample, 3)), supersample)
    windows = [_object_window(obj, coords, supersample) for obj in scene.objects]
    for window in windows:
        labels, colours = _window_labels(scene, windows, window, coords)
        out_rows = slice(window[0].start // supersample, window[0].stop // supersample)
        out_cols = slice(window[1].start // supersample, window[1].stop // supersample)
        canvas[out_rows, out_cols] = _window_mean(labels, colours, rows[window[0]], supersample)
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)


def render_scenes(scenes: list[Scene], size: int = 64) -> np.ndarray:
    """Render several scenes into an array of shape (n_scenes, size, size, 3), uint8."""
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for i, scene in enumerate(scenes):
        out[i] = render_scene(scene, size)
    return out


def _where(obj: SceneObject) -> str:
    if obj.x < 0.4:
        return "on the left"
    if obj.x > 0.6:
        return "on the right"
    return "in the middle"


def _size_word(obj: SceneObject) -> str:
    return "large" if obj.size > 0.33 else "small"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(obj: SceneObject, with_size: bool = False) -> str:
    words = ([_size_word(obj)] if with_size else []) + [obj.colour, obj.category]
    return f"{_article(words[0])} {' '.join(words)}"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def scene_captions(scene: Scene, rng: np.random.Generator, n_captions: int = 5) -> list[str]:
    """Write ``n_captions`` different COCO-style captions that name the scene's content.

    Every caption names each object's colour and category; they differ in wording, order,
    and in which extra details (sizes, positions, setting, count) they mention.
    """
    objs = list(scene.objects)
    setting = BACKGROUNDS[scene.background][0]
    count = _COUNT_WORDS[len(objs)]
    shuffled = [objs[i] for i in rng.permutation(len(objs))]
    templates = [
        lambda: f"{_join([_phrase(o) for o in objs])} {setting}",
        lambda: f"a picture of {_join([_phrase(o, True) for o in shuffled])} {setting}",
        lambda: (f"{count} object{'s' if len(objs) > 1 else ''} {setting}: "
                 + _join([f"{_phrase(o)} {_where(o)}" for o in objs])),
        lambda: f"{setting[0].upper() + setting[1:]} there is {_join([_phrase(o) for o in shuffled])}",
        lambda: f"a photo showing {_join([_phrase(o, True) + ' ' + _where(o) for o in objs])}",
        lambda: f"{_join([_phrase(o) for o in reversed(objs)])}, seen {setting}",
    ]
    order = rng.permutation(len(templates))[:n_captions]
    return [templates[i]() for i in order]


def label_names() -> list[str]:
    """Names of the entries of :func:`scene_labels`."""
    return ([f"category:{c}" for c in CATEGORIES] + [f"colour:{c}" for c in COLOURS]
            + [f"background:{b}" for b in BACKGROUNDS] + ["count"])


def scene_labels(scene: Scene) -> np.ndarray:
    """Semantic content of a scene as a vector (see :func:`label_names`).

    Object categories and colours are counts, the background one-hot, ``count`` the
    number of objects.
    """
    out = np.zeros(len(CATEGORIES) + len(COLOURS) + len(BACKGROUNDS) + 1, dtype=np.float32)
    colours = list(COLOURS)
    for obj in scene.objects:
        out[CATEGORIES.index(obj.category)] += 1
        out[len(CATEGORIES) + colours.index(obj.colour)] += 1
    out[len(CATEGORIES) + len(COLOURS) + list(BACKGROUNDS).index(scene.background)] = 1
    out[-1] = len(scene.objects)
    return out
