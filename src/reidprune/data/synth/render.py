"""Render one re-ID crop (128 x 64 by default, Market-1501's size): cluttered scene, maybe a
bystander, the person, maybe an occluder, then the camera's colour cast, contrast, blur and noise.

All drawing is numpy signed-distance fields on the whole grid (`shapes.py`); blur is PIL's.
Other sizes keep the 2:1 shape: every length given in pixels at 128 x 64 (clutter sizes, offsets,
blur) is multiplied by height / 128, so a 256 x 128 crop shows the same scene at twice the
resolution, and 128 x 64 multiplies by exactly 1.0 (the default set's bytes do not change).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from reidprune.data.synth.appearance import PALETTE, VIEWS, Camera, Person, sample_person
from reidprune.data.synth.shapes import Canvas, Patch, box, capsule, ellipse, smooth_noise, trapezoid

HEIGHT, WIDTH = 128, 64  # the default size; the pixel constants below are at this size
OCCLUSION_RANGE = (0.2, 0.5)  # fraction of the person's pixels an occluder covers
_PALETTE_RGB = list(PALETTE.values())


@dataclass
class Rendered:
    image: np.ndarray  # uint8 (H, W, 3)
    person: np.ndarray  # bool (H, W): the main person's pixels before occlusion
    occluder: np.ndarray  # bool (H, W)
    view: str

    @property
    def occluded_fraction(self) -> float:
        total = int(self.person.sum())
        return float((self.person & self.occluder).sum()) / total if total else 0.0


def render(
    person: Person | None,
    camera: Camera,
    rng: np.random.Generator,
    *,
    occluder: np.random.Generator | None = None,
    junk: bool = False,
    size: tuple[int, int] = (HEIGHT, WIDTH),
) -> Rendered:
    """One crop of `person` (None: background only) seen by `camera`; randomness from `rng`.

    occluder: when given, cover 20-50 % of the person with an object from the bottom or one side,
    drawn from this separate generator (so the rest of the image is the same as without it).
    junk: a bad detection (background, or a too-close fragment of the person), like Market's pid -1.
    size: (height, width) in pixels, height = 2 x width.
    """
    height, width = size
    if height != 2 * width or width < 16:
        raise ValueError(f"synth image size {height}x{width}: expected height = 2 x width, width >= 16")
    px = height / HEIGHT  # pixels per pixel of the 128 x 64 design
    canvas = Canvas(height, width)
    _background(canvas, camera, rng, px)
    if rng.random() < 0.3 and not junk:  # a bystander cut by the crop border
        side = 1.0 if rng.random() < 0.5 else -1.0
        other = sample_person(rng)
        _person(
            canvas,
            other,
            VIEWS[int(rng.integers(3))],
            side,
            cx=width / 2 + side * rng.uniform(26, 38) * px,
            feet=height * rng.uniform(0.8, 1.0),
            body=height * camera.scale * rng.uniform(0.7, 0.95),
            phase=rng.uniform(0, 2 * math.pi),
            mask=None,
        )
    mask = np.zeros((height, width), np.float32)
    view = VIEWS[int(rng.choice(3, p=np.asarray(camera.views)))]
    if person is not None:
        facing = 1.0 if rng.random() < 0.5 else -1.0
        body = height * camera.scale * person.height * rng.uniform(0.94, 1.06)
        feet = height + rng.uniform(-9.0, 3.0) * px  # detector boxes sometimes cut the feet
        if junk:  # far too close: only a fragment of the body fills the box
            body *= rng.uniform(1.8, 2.6)
            feet = height + body * rng.uniform(0.2, 0.5)
        _person(
            canvas,
            person,
            view,
            facing,
            cx=width / 2 + rng.normal(0.0, 2.5) * px,
            feet=feet,
            body=body,
            phase=rng.uniform(0, 2 * math.pi),
            mask=mask,
        )
    person_mask = mask > 0.5
    covered = np.zeros_like(person_mask)
    if occluder is not None and person_mask.any():
        covered = _occlude(canvas, person_mask, occluder, px)
    image = _camera(canvas.rgb, camera, rng, px)
    return Rendered(image, person_mask, covered, view)


def _background(c: Canvas, camera: Camera, rng: np.random.Generator, px: float) -> None:
    """Wall above a horizon, ground below, low-frequency texture, then random clutter objects."""
    horizon = c.height * (camera.horizon + rng.normal(0.0, 0.04))
    texture = smooth_noise(rng, c.height, c.width, (6, 3), 3) * 16.0
    wall = np.asarray(camera.wall, np.float32) + rng.normal(0.0, 8.0, 3)
    ground = np.asarray(camera.ground, np.float32) + rng.normal(0.0, 8.0, 3)
    t = np.clip((c.Y - horizon) / 2.0 + 0.5, 0.0, 1.0)[..., None]  # (H, 1, 1): soft horizon
    c.rgb[:] = wall * (1 - t) + ground * t + texture
    for _ in range(int(rng.poisson(camera.clutter))):
        if rng.random() < 0.65:
            colour = np.asarray(camera.clutter_colours[int(rng.integers(len(camera.clutter_colours)))])
        else:
            colour = np.asarray(_PALETTE_RGB[int(rng.integers(len(PALETTE)))])
        colour = colour + rng.normal(0.0, 10.0, 3)
        x, y = rng.uniform(0, c.width), rng.uniform(0, c.height)
        kind = rng.random()
        if kind < 0.4:  # windows, signs, doors, parked things
            c.paint(box(c, x, y, rng.uniform(2, 16) * px, rng.uniform(2, 24) * px), colour)
        elif kind < 0.6:  # poles
            top, radius = y - rng.uniform(10, 60) * px, rng.uniform(0.6, 2.0) * px
            c.paint(capsule(c, x, top, x, y + 40 * px, radius), colour)
        elif kind < 0.85:  # bushes, bins, blobs
            c.paint(ellipse(c, x, y, rng.uniform(3, 14) * px, rng.uniform(3, 14) * px), colour)
        else:  # fence / crosswalk band: stripes inside a horizontal band
            period = rng.uniform(3, 8) * px
            band = box(c, c.width / 2, y, c.width, rng.uniform(2, 8) * px)
            band.sdf = np.maximum(band.sdf, np.where((band.X / period) % 1.0 < 0.5, -1.0, 1.0))
            c.paint(band, colour)


def _cloth(c: Canvas, p: Person, cx: float, top: float, body: float, front: bool) -> np.ndarray:
    """The upper-garment colour field (H, W, 3) with the identity's pattern, in body coordinates."""
    u = (c.X - cx) / (p.stripe * body)
    v = (c.Y - top) / (p.stripe * body)
    base = np.asarray(p.upper, np.float32)
    second = np.asarray(p.upper2, np.float32)
    if p.pattern == "hstripes":
        on = np.broadcast_to(v % 2.0 < 1.0, (c.height, c.width))
    elif p.pattern == "vstripes":
        on = np.broadcast_to(u % 2.0 < 1.0, (c.height, c.width))
    elif p.pattern == "checks":
        on = (u % 2.0 < 1.0) ^ (v % 2.0 < 1.0)
    elif p.pattern == "two_tone":  # a yoke: shoulders in the second colour
        on = np.broadcast_to(top + 0.29 * body > c.Y, (c.height, c.width))
    elif p.pattern == "logo" and front:  # chest print, not seen from the back or side
        on = (c.X - cx) ** 2 + (c.Y - top - 0.31 * body) ** 2 < (0.045 * body) ** 2
    else:
        return np.broadcast_to(base, (c.height, c.width, 3))
    return np.where(on[..., None], second, base)


def _person(
    c: Canvas,
    p: Person,
    view: str,
    facing: float,
    *,
    cx: float,
    feet: float,
    body: float,
    phase: float,
    mask: np.ndarray | None,
) -> None:
    """Draw a walking figure of height `body` pixels with its feet at (cx, feet), painter's order."""
    top = feet - body
    rh = 0.066 * body  # head radius (vertical)
    head_y = top + rh
    y_sh, y_hip, y_knee, y_ankle = (
        top + 0.19 * body,
        top + 0.53 * body,
        top + 0.75 * body,
        feet - 0.035 * body,
    )
    side = view == "side"
    sw = (0.075 if side else 0.118) * body * p.build  # shoulder half width
    hw = (0.07 if side else 0.095) * body * p.build  # hip half width
    ra, rl = 0.032 * body * math.sqrt(p.build), 0.046 * body * math.sqrt(p.build)
    lower, skin = np.asarray(p.lower), np.asarray(p.skin)
    cloth = _cloth(c, p, cx, top, body, front=view == "front")
    # the person's left is image-right when seen from the front, image-left from the back
    left = (1.0 if view == "front" else -1.0) * (1.0 if p.bag_left else -1.0)
    if side:
        left = -facing

    def paint(patch: Patch, colour: np.ndarray, shade: float = 1.0) -> None:
        c.paint(patch, np.asarray(colour, np.float32) * shade, mask)

    def leg(hip_x: float, ankle_x: float, ankle_y: float, shade: float) -> None:
        if p.lower_type == "trousers":
            paint(capsule(c, hip_x, y_hip, ankle_x, ankle_y, rl), lower, shade)
        else:
            paint(capsule(c, hip_x, y_hip, ankle_x, ankle_y, rl * 0.8), skin, shade)
            if p.lower_type == "shorts":
                knee_x = (hip_x + ankle_x) / 2
                paint(capsule(c, hip_x, y_hip, knee_x, y_knee - 0.02 * body, rl * 1.08), lower, shade)
        paint(
            ellipse(
                c,
                ankle_x + (facing * 0.02 * body if side else 0.0),
                feet - 0.018 * body,
                0.045 * body,
                0.024 * body,
            ),
            p.shoes,
            shade,
        )

    def arm(sx: float, hx: float, hy: float, shade: float) -> None:
        if p.long_sleeves:
            paint(capsule(c, sx, y_sh + ra, hx, hy, ra), cloth, 0.93 * shade)
        else:
            ex, ey = (sx + hx) / 2, (y_sh + ra + hy) / 2
            paint(capsule(c, ex, ey, hx, hy, ra * 0.85), skin, shade)
            paint(capsule(c, sx, y_sh + ra, ex, ey, ra * 1.05), cloth, 0.93 * shade)
        paint(ellipse(c, hx, hy + 0.2 * ra, ra * 0.9, ra * 1.1), skin, shade)

    swing = math.sin(phase)
    stride = 0.12 * body * swing
    if side:
        arm(cx, cx + facing * 0.09 * body * swing, y_hip + 0.01 * body, 0.78)  # far arm
        leg(cx, cx - facing * stride, y_ankle, 0.8)  # far leg
        leg(cx, cx + facing * stride, y_ankle - 0.02 * body * max(swing, 0), 1.0)
    else:
        lift = 0.02 * body * swing
        leg(cx - hw * 0.5, cx - hw * 0.55, y_ankle - max(lift, 0), 1.0)
        leg(cx + hw * 0.5, cx + hw * 0.55, y_ankle - max(-lift, 0), 1.0)
    if p.lower_type == "skirt":
        half = hw * (0.8 if side else 1.05)
        paint(trapezoid(c, cx, y_hip - 0.03 * body, y_knee, half, half * 1.5), lower)
    if p.bag == "backpack" and side:
        paint(
            box(c, cx - facing * (sw + 0.045 * body), y_sh + 0.15 * body, 0.05 * body, 0.13 * body),
            p.bag_colour,
        )
    paint(ellipse(c, cx, y_sh + 0.01 * body, sw * 0.9, 0.035 * body), cloth)  # rounded shoulders
    paint(trapezoid(c, cx, y_sh, y_hip + 0.035 * body, sw, hw * 1.05), cloth)
    if p.bag == "backpack" and view == "back":
        paint(box(c, cx, y_sh + 0.16 * body, sw * 0.78, 0.14 * body), p.bag_colour)
        paint(box(c, cx, y_sh + 0.25 * body, sw * 0.5, 0.04 * body), p.bag_colour, 0.75)
    elif p.bag == "backpack" and view == "front":
        for s in (-1.0, 1.0):
            paint(
                capsule(c, cx + s * sw * 0.55, y_sh, cx + s * sw * 0.5, y_sh + 0.2 * body, 0.018 * body),
                p.bag_colour,
            )
    if side:
        arm(cx, cx - facing * 0.09 * body * swing, y_hip + 0.01 * body, 1.0)  # near arm
    else:
        for s in (-1.0, 1.0):
            arm(cx + s * (sw - ra * 0.6), cx + s * (sw + 0.015 * body), y_hip + 0.02 * body, 1.0)
    if p.bag == "shoulder":  # strap across the body, bag at the opposite hip
        paint(capsule(c, cx + left * sw * 0.6, y_sh, cx - left * hw, y_hip, 0.014 * body), p.bag_colour, 0.85)
        paint(
            box(c, cx - left * (hw + 0.02 * body), y_hip + 0.02 * body, 0.06 * body, 0.055 * body),
            p.bag_colour,
        )
    # neck, head, hair
    head_x = cx + (facing * 0.015 * body if side else 0.0)
    paint(capsule(c, cx, head_y + rh * 0.8, cx, y_sh, rh * 0.42), skin)
    paint(ellipse(c, head_x, head_y, rh * 0.82, rh), skin)
    _hair(c, p, view, facing, head_x, head_y, rh, y_sh, body, paint)
    if p.bag == "handbag":
        hx = cx + (facing * 0.09 * body * swing if side else left * (sw + 0.015 * body))
        paint(box(c, hx, y_hip + 0.08 * body, 0.045 * body, 0.05 * body), p.bag_colour)


def _hair(
    c: Canvas,
    p: Person,
    view: str,
    facing: float,
    x: float,
    y: float,
    rh: float,
    y_sh: float,
    body: float,
    paint: Callable[..., None],
) -> None:
    """Hair (and hat) on a head centred at (x, y) with vertical radius rh, drawn after the face."""
    hair = np.asarray(p.hair)
    style = p.hair_style
    if style == "bald":
        return
    back_shift = -facing * 0.3 * rh if view == "side" else 0.0
    if view == "back":  # hair covers the whole head
        paint(ellipse(c, x, y - 0.05 * rh, rh * 0.86, rh * 1.02), hair)
    else:  # a cap above the forehead (shifted backwards in profile)
        cap = ellipse(c, x + back_shift, y - 0.2 * rh, rh * 0.88, rh * 0.85)
        cap.sdf = np.maximum(cap.sdf, cap.Y - (y - 0.15 * rh))
        paint(cap, hair)
        if view == "side":
            paint(ellipse(c, x + back_shift * 1.6, y, rh * 0.55, rh * 0.8), hair)
    if style == "long":
        if view == "front":
            for s in (-1.0, 1.0):
                paint(capsule(c, x + s * rh * 0.8, y, x + s * rh * 0.9, y_sh + 0.07 * body, rh * 0.26), hair)
        else:
            sx = x + back_shift * 2.0
            paint(
                box(
                    c,
                    sx,
                    (y + y_sh + 0.1 * body) / 2,
                    rh * (0.55 if view == "side" else 0.8),
                    (y_sh + 0.1 * body - y) / 2,
                ),
                hair,
            )
    elif style == "ponytail" and view != "front":
        sx = x + back_shift * 3.0
        paint(capsule(c, sx, y, sx, y + 2.3 * rh, rh * 0.3), hair)
    elif style == "hat":
        paint(box(c, x, y - 0.55 * rh, rh * 0.9, rh * 0.45), p.hat)
        paint(
            box(c, x + (facing * 0.35 * rh if view == "side" else 0.0), y - 0.15 * rh, rh * 1.1, rh * 0.1),
            p.hat,
            0.85,
        )


def _occlude(c: Canvas, person: np.ndarray, rng: np.random.Generator, px: float) -> np.ndarray:
    """Cover a fraction in OCCLUSION_RANGE of the person's pixels with an object entering from the
    bottom (car, bench, bush) or a side (pole, tree, wall); returns the occluder mask (H, W) bool.

    The cut row / column is chosen from cumulative pixel counts, so the covered fraction is exact.
    """
    total = person.sum()
    target = rng.uniform(0.22, 0.48)
    kind = ("bottom", "left", "right")[int(rng.choice(3, p=[0.55, 0.225, 0.225]))]
    if kind == "bottom":
        covered = np.cumsum(person.sum(axis=1)[::-1])[::-1] / total  # covered[y]: rows >= y
        cut = _best_cut(covered, target)
        region = np.broadcast_to(cut <= c.Y, person.shape)
    else:
        counts = person.sum(axis=0)
        if kind == "left":
            covered = np.cumsum(counts) / total  # covered[x]: columns <= x
            cut = _best_cut(covered, target)
            region = np.broadcast_to(cut + 1 > c.X, person.shape)
        else:
            covered = np.cumsum(counts[::-1])[::-1] / total  # columns >= x
            cut = _best_cut(covered, target)
            region = np.broadcast_to(cut <= c.X, person.shape)
    colour = np.asarray(_PALETTE_RGB[int(rng.integers(len(PALETTE)))], np.float32)
    texture = smooth_noise(rng, c.height, c.width, (8, 4), 1) * 25.0
    look = np.broadcast_to(colour, c.rgb.shape) + texture
    if kind == "bottom":  # a darker band (windows / slats) below the top edge
        band = (cut + 3 * px < c.Y) & (cut + 8 * px > c.Y)
        look = np.where(band[..., None], look * 0.6, look)
    else:  # bark / panel lines
        look = np.where(((c.X / (rng.uniform(3, 6) * px)) % 1.0 < 0.2)[..., None], look * 0.75, look)
    c.rgb[:] = np.where(region[..., None], look, c.rgb)
    return np.array(region)


def _best_cut(covered: np.ndarray, target: float) -> int:
    """Index whose covered fraction is in OCCLUSION_RANGE and closest to `target`."""
    low, high = OCCLUSION_RANGE
    distance = np.abs(covered - target) + np.where((covered >= low) & (covered <= high), 0.0, 10.0)
    return int(np.argmin(distance))


def _camera(rgb: np.ndarray, camera: Camera, rng: np.random.Generator, px: float) -> np.ndarray:
    """Colour cast, contrast, brightness and per-image illumination; then blur and sensor noise."""
    light = rng.uniform(0.88, 1.12)
    out = (
        (rgb * np.asarray(camera.gain, np.float32) * light - 128.0) * camera.contrast
        + 128.0
        + camera.brightness
    )
    image = _to_uint8(out)
    blur = camera.blur + rng.uniform(0.0, 0.4)
    if blur > 0.25:
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur * px)))
    noisy = image.astype(np.float32) + rng.normal(0.0, camera.noise, image.shape).astype(np.float32)
    return _to_uint8(noisy)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """np.clip(values, 0, 255).astype(uint8), clipping in place (same bytes, no wrapper overhead)."""
    np.maximum(values, 0.0, out=values)
    np.minimum(values, 255.0, out=values)
    return values.astype(np.uint8)
