"""What an identity and a camera look like: small dataclasses of parameters, sampled from a seed.

Identities draw every attribute from short lists (named colours, patterns, hair styles, bags),
so many identities share single attributes and only the combination (plus a small per-identity
colour offset) tells them apart. Cameras draw a colour cast, brightness, contrast, blur, noise,
JPEG quality, a typical viewpoint mix, a person scale and a background scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Named colours (RGB 0..255). Clothing shares the palette with background clutter on purpose.
PALETTE = {
    "black": (28, 28, 32),
    "white": (226, 226, 220),
    "grey": (128, 128, 130),
    "dark_grey": (70, 70, 76),
    "navy": (32, 42, 92),
    "blue": (52, 92, 172),
    "light_blue": (132, 172, 212),
    "red": (172, 36, 36),
    "maroon": (112, 30, 42),
    "green": (52, 122, 62),
    "olive": (112, 112, 52),
    "khaki": (176, 160, 116),
    "brown": (112, 76, 46),
    "beige": (206, 190, 160),
    "yellow": (222, 192, 52),
    "orange": (216, 122, 42),
    "pink": (222, 152, 172),
    "purple": (102, 62, 132),
    "teal": (42, 122, 122),
}
UPPER_COLOURS = list(PALETTE)
LOWER_COLOURS = ["black", "navy", "blue", "dark_grey", "grey", "khaki", "brown", "beige", "white", "olive"]
SKIN = [(236, 200, 170), (222, 176, 140), (196, 146, 108), (150, 104, 72), (104, 70, 50)]
HAIR = [(22, 18, 16), (52, 36, 26), (92, 62, 38), (196, 164, 104), (150, 150, 148), (140, 62, 30)]
PATTERNS = ["solid", "solid", "hstripes", "vstripes", "checks", "two_tone", "logo"]
HAIR_STYLES = ["short", "short", "long", "ponytail", "bald", "hat"]
LOWER_TYPES = ["trousers", "trousers", "trousers", "shorts", "skirt"]
BAGS = ["none", "none", "backpack", "shoulder", "handbag"]
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class Person:
    """One identity's appearance. Colours are RGB float triples; sizes are fractions of the body height."""

    height: float  # fraction of the frame height at the camera's mean scale (0.85..1.05)
    build: float  # width multiplier (0.85..1.25)
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str
    hat: tuple[float, float, float]
    upper: tuple[float, float, float]
    upper2: tuple[float, float, float]  # pattern colour
    pattern: str
    stripe: float  # stripe period, fraction of body height
    long_sleeves: bool
    lower: tuple[float, float, float]
    lower_type: str
    shoes: tuple[float, float, float]
    bag: str
    bag_colour: tuple[float, float, float]
    bag_left: bool  # shoulder bag / handbag on the person's left side


@dataclass(frozen=True)
class Camera:
    """One camera's look. gain: RGB multipliers (colour cast); brightness: added level (0..255 scale)."""

    gain: tuple[float, float, float]
    brightness: float
    contrast: float
    blur: float  # Gaussian sigma, pixels
    noise: float  # sensor noise std, 0..255 scale
    quality: int  # JPEG quality
    views: tuple[float, float, float]  # probabilities of front / back / side
    scale: float  # mean person height / frame height
    wall: tuple[float, float, float]
    ground: tuple[float, float, float]
    horizon: float  # wall/ground boundary, fraction of the frame height
    clutter: int  # mean number of clutter objects
    clutter_colours: tuple[tuple[float, float, float], ...]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float) -> tuple[float, float, float]:
    values = np.clip(np.asarray(rgb, np.float64) + rng.normal(0.0, amount, 3), 0, 255)
    return (float(values[0]), float(values[1]), float(values[2]))


def _named(rng: np.random.Generator, names: list[str], amount: float = 10.0) -> tuple[float, float, float]:
    return _jitter(rng, PALETTE[names[int(rng.integers(len(names)))]], amount)


def sample_person(rng: np.random.Generator) -> Person:
    """A random identity; the same generator state gives the same person."""
    upper = _named(rng, UPPER_COLOURS)
    upper2 = _named(rng, UPPER_COLOURS)
    while np.abs(np.subtract(upper, upper2)).sum() < 90:  # a pattern must be visible
        upper2 = _named(rng, UPPER_COLOURS)
    return Person(
        height=float(rng.uniform(0.85, 1.05)),
        build=float(rng.uniform(0.85, 1.25)),
        skin=_jitter(rng, SKIN[int(rng.integers(len(SKIN)))], 6.0),
        hair=_jitter(rng, HAIR[int(rng.integers(len(HAIR)))], 6.0),
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
        hat=_named(rng, UPPER_COLOURS),
        upper=upper,
        upper2=upper2,
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        stripe=float(rng.uniform(0.035, 0.07)),
        long_sleeves=bool(rng.random() < 0.5),
        lower=_named(rng, LOWER_COLOURS),
        lower_type=LOWER_TYPES[int(rng.integers(len(LOWER_TYPES)))],
        shoes=_named(rng, ["black", "white", "brown", "dark_grey", "grey"]),
        bag=BAGS[int(rng.integers(len(BAGS)))],
        bag_colour=_named(rng, ["black", "dark_grey", "brown", "navy", "red", "beige", "green", "pink"]),
        bag_left=bool(rng.random() < 0.5),
    )


def sample_camera(rng: np.random.Generator) -> Camera:
    """A random camera with its own cast, optics, viewpoint mix and scene."""
    views = rng.dirichlet([1.2, 1.2, 1.2])
    scene = [_named(rng, list(PALETTE), 25.0) for _ in range(4)]
    muted = [tuple(0.55 * np.asarray(c) + 0.45 * 128.0) for c in scene]
    return Camera(
        gain=tuple(float(g) for g in np.clip(1.0 + rng.normal(0.0, 0.09, 3), 0.75, 1.25)),  # type: ignore[arg-type]
        brightness=float(rng.normal(0.0, 14.0)),
        contrast=float(rng.uniform(0.78, 1.12)),
        blur=float(rng.uniform(0.0, 1.0)),
        noise=float(rng.uniform(2.0, 6.0)),
        quality=int(rng.integers(78, 95)),
        views=(float(views[0]), float(views[1]), float(views[2])),
        scale=float(rng.uniform(0.74, 0.86)),
        wall=tuple(float(v) for v in muted[0]),  # type: ignore[arg-type]
        ground=tuple(float(v) for v in muted[1]),  # type: ignore[arg-type]
        horizon=float(rng.uniform(0.5, 0.78)),
        clutter=int(rng.integers(4, 11)),
        clutter_colours=tuple(tuple(float(v) for v in c) for c in (*muted[2:], *scene[2:])),  # type: ignore[misc]
    )
