"""Procedurally drawn, SYNTHETIC face-like demo data for agestudy.

Real face data (e.g. CACD) cannot be shipped with the package, so this module
draws cartoon faces from scratch with numpy + PIL. None of the images shows a
real person. The layout mirrors the real data set:

    OUT/train/0/*.jpg   young  (label 0, "aged 20-26")
    OUT/train/1/*.jpg   old    (label 1, "aged 52-62")
    OUT/test/{0,1}/*.jpg
    OUT/SYNTHETIC.txt   marker + explanation; see :func:`is_synthetic`

How the task is made learnable but not trivial
-----------------------------------------------
Every face gets a latent "apparent age" ``a`` in [0, 1], drawn from a Beta
distribution that depends on the label (young faces mostly low, old faces
mostly high) but whose two distributions *overlap*. Each age cue (forehead
lines, crow's feet, nasolabial folds, grey hair, receding hairline, age spots,
rough skin, sagging features, thin lips, eye bags) is switched on at random and
gets a random strength that grows with ``a``. So some old faces look young,
some young faces carry a faint line or light hair, and a CNN should reach high
but not perfect accuracy. Everything else (pose, scale, lighting, skin tone,
background, hair style, glasses, noise, blur, JPEG artefacts) is nuisance
variation drawn identically for both classes.

Usage::

    python -m agestudy.data.synthetic OUT --per-class 1000 --seed 0

This module imports only the standard library, numpy, PIL and tqdm.
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["generate", "is_synthetic", "render_face", "main", "MARKER_FILE", "IMAGE_SIZE"]

MARKER_FILE = "SYNTHETIC.txt"
# The built-in demo data set used when the user gives no data (drawn once, then cached).
DEMO_PER_CLASS = 1000
DEMO_SEED = 0
IMAGE_SIZE = 100  # output images are IMAGE_SIZE x IMAGE_SIZE RGB
GENERATOR_VERSION = 1  # bump when the drawing changes (images change with it)

_SS = 2  # draw at 2x and downscale: cheap anti-aliasing for thin lines
_C = IMAGE_SIZE * _SS  # drawing canvas size

# Latent apparent-age distribution per label, Beta(alpha, beta). The overlap of
# these two distributions is the main knob that caps achievable accuracy:
# thresholding the latent age itself at 0.5 gives ~97 %, the drawn cues ~95 %,
# and a small 4-layer CNN trained 8-10 epochs on 2x1000 images reaches ~90 %.
_AGE_BETA = {0: (2.0, 7.0), 1: (7.0, 2.0)}

# Split codes used to seed each image independently (determinism per file).
_SPLIT_CODE = {"train": 0, "test": 1}

# Pixel coordinates in [-0.5, 0.5) at output size, for gradients (computed once).
_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE - 0.5

_MARKER_TEXT = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  SYNTHETIC DEMO DATA -- THESE ARE NOT PHOTOS OF REAL PEOPLE         !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

Every image in this folder was drawn procedurally by
agestudy.data.synthetic (generator version {version}). The "faces" are
cartoon ellipses with painted-on age cues (wrinkle lines, grey or receding
hair, skin spots, sagging features). Label 0 stands in for "aged 20-26" and
label 1 for "aged 52-62", but no real age, person or photograph is involved.

Results obtained on this data say NOTHING about age recognition on real
faces. Use it only to check that the pipeline runs end to end.

Parameters: per_class={per_class} seed={seed} test_fraction={test_fraction}
Counts:     train/0={train0} train/1={train1} test/0={test0} test/1={test1}
Image size: {size}x{size} RGB JPEG (quality 95)

This file marks the folder as synthetic (agestudy.data.synthetic.is_synthetic)
and allows the generator to overwrite the folder.
"""


# --------------------------------------------------------------------------
# Sampled parameters of one face
# --------------------------------------------------------------------------

@dataclass
class _Face:
    label: int
    age: float  # latent apparent age in [0, 1]
    cx: float  # face centre and half-axes on the drawing canvas
    cy: float
    rx: float
    ry: float
    skin: np.ndarray  # RGB float
    hair: np.ndarray  # RGB float, before greying
    hair_style: str  # "short" | "long"
    iris: tuple
    shirt: tuple
    smile: float  # nuisance: mouth curvature, + = smile
    glasses: bool
    stubble: float
    cues: dict = field(default_factory=dict)  # age cue -> strength in [0, 1]

    def at(self, fx: float, fy: float) -> tuple[float, float]:
        """Canvas point from face-relative coords (-1..1 across the face ellipse)."""
        return (self.cx + fx * self.rx, self.cy + fy * self.ry)


_AGE_CUES = (
    "forehead", "crows_feet", "nasolabial", "grey", "recede",
    "spots", "texture", "sag", "thin_lips", "eye_bags",
)

_HAIR_COLOURS = np.array([
    (25, 20, 18), (45, 32, 25), (70, 48, 32), (105, 70, 40),
    (130, 60, 30), (165, 130, 80), (200, 170, 110), (215, 195, 150),
], dtype=np.float32)
_HAIR_P = np.array([0.22, 0.22, 0.18, 0.12, 0.06, 0.09, 0.07, 0.04])

_IRIS_COLOURS = [(70, 45, 25), (40, 30, 20), (70, 100, 140), (80, 110, 80), (110, 85, 50)]


def _cue_strength(rng: np.random.Generator, age: float) -> float:
    """Strength in [0, 1] of one age cue for a face of latent age ``age``.

    Each cue is independently absent with some probability (so old faces show
    a random subset of cues), and otherwise grows with age plus jitter, so a
    young face occasionally shows a faint cue.
    """
    if rng.random() < 0.3:
        return 0.0
    onset = 0.3
    s = (age - onset + rng.normal(0.0, 0.12)) / (1.0 - onset)
    return float(np.clip(s, 0.0, 1.0))


def _sample_face(rng: np.random.Generator, label: int) -> _Face:
    age = float(rng.beta(*_AGE_BETA[label]))
    cues = {name: _cue_strength(rng, age) for name in _AGE_CUES}

    # Scale: face half-width ~27 px of 100, height/width ratio varies.
    rx = rng.uniform(23.0, 31.0) * _SS
    ry = rx * rng.uniform(1.18, 1.38)
    cx = _C / 2
    cy = _C / 2 + 0.08 * ry  # leave room for hair above the head

    # Skin tone along a light-to-dark axis, plus a little hue jitter.
    t = rng.beta(1.6, 1.6)
    skin = (1 - t) * np.array([238, 205, 182]) + t * np.array([112, 74, 52])
    skin = skin * rng.uniform(0.95, 1.05, size=3)

    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P)]
    hair = hair * rng.uniform(0.85, 1.15)

    return _Face(
        label=label, age=age, cx=cx, cy=cy, rx=rx, ry=ry,
        skin=np.clip(skin, 0, 255).astype(np.float32),
        hair=np.clip(hair, 0, 255).astype(np.float32),
        hair_style="long" if rng.random() < 0.35 else "short",
        iris=_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))],
        shirt=tuple(int(v) for v in rng.integers(20, 230, size=3)),
        smile=float(rng.uniform(-0.3, 1.0)),
        glasses=bool(rng.random() < 0.15),
        stubble=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.2 else 0.0,
        cues=cues,
    )


# --------------------------------------------------------------------------
# Small drawing helpers
# --------------------------------------------------------------------------

def _rgb(c, alpha: float | None = None) -> tuple:
    c = tuple(int(round(float(v))) for v in np.clip(c, 0, 255))
    if alpha is None:
        return c
    return c + (int(round(float(np.clip(alpha, 0, 1)) * 255)),)


def _box(x: float, y: float, hw: float, hh: float) -> tuple:
    return (x - hw, y - hh, x + hw, y + hh)


def _bezier(p0, p1, p2, n: int = 12) -> list:
    """Points on a quadratic Bezier curve (for folds, lips, brows)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t ** 2 * np.array(p2)
    return [tuple(p) for p in pts]


def _resize_field(small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Smoothly upsample a 2-D float array (cheap low-frequency noise)."""
    img = Image.fromarray(small.astype(np.float32))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _line_colour(f: _Face, darkness: float = 0.55) -> np.ndarray:
    # Wrinkles and folds are shadows: a darker, slightly reddish skin tone.
    return f.skin * darkness * np.array([1.0, 0.92, 0.9])


# --------------------------------------------------------------------------
# Face parts, back to front
# --------------------------------------------------------------------------

def _draw_background(rng: np.random.Generator) -> Image.Image:
    """Random base colour, a linear gradient and soft blotches (studio / wall).

    Drawn directly at output size: it has no thin lines that need anti-aliasing.
    """
    base = rng.uniform(30, 225, size=3).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(ang) * _XX + np.sin(ang) * _YY)[..., None] * rng.uniform(0, 80)
    small = np.clip(128 + 40 * rng.standard_normal((4, 4, 3)), 0, 255).astype(np.uint8)
    blotch = np.asarray(Image.fromarray(small).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC),
                        dtype=np.float32) / 40.0 - 3.2
    bg = base + grad + blotch * rng.uniform(0, 25)
    return Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))


def _hair_texture(rng: np.random.Generator, f: _Face) -> Image.Image:
    """Streaky hair texture; grey cue mixes in white strands ("salt and pepper")."""
    # Strands: noise that varies quickly across x and slowly along y.
    streak = _resize_field(rng.standard_normal((_C // 20, _C // 2), dtype=np.float32), (_C, _C))
    strand = _resize_field(rng.standard_normal((_C // 16, _C // 2), dtype=np.float32), (_C, _C))
    strand_u = 1.0 / (1.0 + np.exp(-1.7 * strand))  # roughly uniform in (0, 1)
    grey = f.cues["grey"]
    base = f.hair + (np.float32(150.0) - f.hair) * (0.6 * grey)  # overall greying
    white = np.array([228, 226, 220], dtype=np.float32) * rng.uniform(0.9, 1.05)
    w = np.clip((grey * 1.1 - strand_u) * 6.0, 0.0, 1.0)  # fraction of white strands
    shade = 1.0 + 0.18 * streak
    tex = (base + (white - base) * w[..., None]) * shade[..., None]
    return Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8))


def _draw_hair_back(mask_draw: ImageDraw.ImageDraw, f: _Face) -> None:
    """Hair behind the head: a cap, or long hair falling to the shoulders."""
    cap = _box(f.cx, f.cy - 0.12 * f.ry, 1.13 * f.rx, 1.0 * f.ry)
    mask_draw.ellipse(cap, fill=255)
    if f.hair_style == "long":
        top = f.cy - 0.3 * f.ry
        mask_draw.rounded_rectangle(
            (f.cx - 1.2 * f.rx, top, f.cx + 1.2 * f.rx, f.cy + 1.0 * f.ry),
            radius=0.4 * f.rx, fill=255)
    # Receding hair / baldness: remove the top of the cap, leaving the sides.
    recede = f.cues["recede"]
    if recede > 0.45:
        y_cut = f.cy - 1.3 * f.ry + (recede - 0.45) / 0.55 * 1.0 * f.ry
        if y_cut > 0:
            mask_draw.rectangle((0, 0, _C, y_cut), fill=0)


def _draw_neck_and_shoulders(background: Image.Image, f: _Face, shift: tuple) -> None:
    """Neck and shirt, drawn straight onto the output-size background.

    They are not part of the rotated head layer, so a tilted head never shows
    the cut-off edge of the drawing canvas; the head covers the top of the neck.
    """
    draw = ImageDraw.Draw(background)
    k = 1.0 / _SS
    cx, cy, rx, ry = (f.cx + shift[0] * _SS) * k, (f.cy + shift[1] * _SS) * k, f.rx * k, f.ry * k
    draw.rectangle((cx - 0.5 * rx, cy + 0.3 * ry, cx + 0.5 * rx, IMAGE_SIZE), fill=_rgb(f.skin * 0.8))
    draw.ellipse(_box(cx, cy + 1.65 * ry, 2.0 * rx, 0.5 * ry), fill=f.shirt)


def _draw_ears(draw, mask_draw, f: _Face) -> None:
    for side in (-1, 1):
        box = _box(f.cx + side * 0.97 * f.rx, f.cy + 0.02 * f.ry, 0.15 * f.rx, 0.2 * f.ry)
        draw.ellipse(box, fill=_rgb(f.skin * 0.93))
        mask_draw.ellipse(box, fill=255)


def _draw_head(draw, mask_draw, skin_draw, f: _Face) -> None:
    """Head ellipse plus a jaw ellipse; sagging widens the jaw into jowls."""
    sag = f.cues["sag"]
    head = _box(f.cx, f.cy, f.rx, f.ry)
    jaw = _box(f.cx, f.cy + 0.45 * f.ry, (0.78 + 0.18 * sag) * f.rx, 0.55 * f.ry)
    for d in (draw, mask_draw, skin_draw):
        fill = _rgb(f.skin) if d is draw else 255
        d.ellipse(head, fill=fill)
        d.ellipse(jaw, fill=fill)


def _apply_skin_texture(rng, face_img: Image.Image, skin_mask: Image.Image, f: _Face) -> Image.Image:
    """Rough, mottled skin for the texture cue (fine noise + blotches) inside the skin."""
    amount = 2.0 + 14.0 * f.cues["texture"]
    fine = rng.standard_normal((_C, _C), dtype=np.float32)
    mottle = _resize_field(rng.standard_normal((12, 12), dtype=np.float32), (_C, _C))
    m = np.asarray(skin_mask, dtype=np.float32) * (amount / 255.0)
    arr = np.asarray(face_img, dtype=np.float32) + (m * (fine + 0.6 * mottle))[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _draw_spots(rng, draw, f: _Face) -> None:
    """Age spots: small brownish blotches on forehead and cheeks."""
    n = rng.poisson(14 * f.cues["spots"] ** 1.2)
    colour = f.skin * np.array([0.72, 0.6, 0.5])
    for _ in range(n):
        fx, fy = rng.uniform(-0.65, 0.65), rng.uniform(-0.7, 0.5)
        if fx * fx + fy * fy > 0.6:
            continue
        x, y = f.at(fx, fy)
        r = rng.uniform(1.2, 3.2) * _SS
        draw.ellipse(_box(x, y, r, r * rng.uniform(0.7, 1.0)), fill=_rgb(colour, rng.uniform(0.35, 0.8)))


def _eye_geometry(f: _Face):
    sag = f.cues["sag"]
    ey = f.cy - 0.08 * f.ry + 0.05 * sag * f.ry  # sagging: features drop a little
    ex = 0.40 * f.rx
    ew = 0.17 * f.rx
    eh = 0.075 * f.ry * (1.0 - 0.35 * sag)  # drooping lids narrow the eye
    return ey, ex, ew, eh


def _draw_wrinkles(rng, draw, f: _Face) -> None:
    """Forehead lines, crow's feet, nasolabial and marionette folds."""
    col = _line_colour(f)
    ey, ex, ew, _ = _eye_geometry(f)
    brow_y = ey - 0.17 * f.ry

    s = f.cues["forehead"]
    if s > 0:
        n = 1 + int(round(3 * s))
        for i in range(n):
            y = brow_y - (0.10 + 0.085 * i) * f.ry + rng.normal(0, 0.01) * f.ry
            half = (0.42 - 0.04 * i) * f.rx * rng.uniform(0.8, 1.1)
            bend = rng.uniform(-0.04, 0.06) * f.ry
            pts = _bezier((f.cx - half, y + bend), (f.cx, y - bend), (f.cx + half, y + bend))
            draw.line(pts, fill=_rgb(col, s * rng.uniform(0.5, 0.9)), width=_SS)

    s = f.cues["crows_feet"]
    if s > 0:
        for side in (-1, 1):
            x0, y0 = f.cx + side * (ex + ew + 0.03 * f.rx), ey
            for ang in (-30, -5, 22)[: 1 + int(round(2 * s))]:
                a = math.radians(ang + rng.normal(0, 6))
                length = rng.uniform(0.09, 0.16) * f.rx
                x1, y1 = x0 + side * length * math.cos(a), y0 + length * math.sin(a)
                draw.line([(x0, y0), (x1, y1)], fill=_rgb(col, s * rng.uniform(0.5, 0.9)), width=_SS)

    s = f.cues["nasolabial"]
    if s > 0:
        for side in (-1, 1):
            p0 = f.at(side * 0.2, 0.26)
            p1 = f.at(side * 0.42, 0.45)
            p2 = f.at(side * 0.36, 0.70)
            draw.line(_bezier(p0, p1, p2), fill=_rgb(col, s * rng.uniform(0.45, 0.85)), width=_SS + 1)
            if s > 0.6:  # marionette lines only on strongly aged faces
                m0 = f.at(side * 0.30, 0.62 + 0.04 * f.cues["sag"])
                draw.line([m0, (m0[0] + side * 0.03 * f.rx, m0[1] + 0.16 * f.ry)],
                          fill=_rgb(col, (s - 0.6) * 1.5), width=_SS)


def _draw_eyes(draw, f: _Face) -> None:
    ey, ex, ew, eh = _eye_geometry(f)
    bags = f.cues["eye_bags"]
    for side in (-1, 1):
        x = f.cx + side * ex
        if bags > 0:  # puffy dark crescent below the eye
            pts = _bezier((x - ew, ey + eh), (x, ey + eh + 0.12 * f.ry), (x + ew, ey + eh))
            draw.line(pts, fill=_rgb(_line_colour(f, 0.6), bags * 0.8), width=_SS)
        draw.ellipse(_box(x, ey, ew, eh), fill=(236, 232, 226))
        r = min(0.5 * ew, 0.95 * eh)
        draw.ellipse(_box(x, ey, r, r), fill=f.iris)
        draw.ellipse(_box(x, ey, 0.45 * r, 0.45 * r), fill=(15, 12, 10))
        # upper lid line makes the eye read as an eye
        draw.arc(_box(x, ey, ew, eh), 180, 360, fill=_rgb(f.skin * 0.35), width=_SS)


def _brow_colour(f: _Face) -> np.ndarray:
    # Brows follow the hair colour and grey with it, but less.
    grey = 0.6 * f.cues["grey"]
    return f.hair * 0.8 * (1 - grey) + np.array([190, 188, 182]) * grey


def _draw_brows(rng, draw, f: _Face) -> None:
    ey, ex, ew, _ = _eye_geometry(f)
    y = ey - 0.17 * f.ry + rng.normal(0, 0.015) * f.ry
    width = int(round(rng.uniform(1.5, 3.2) * _SS))
    for side in (-1, 1):
        inner = (f.cx + side * (ex - 1.05 * ew), y + 0.02 * f.ry)
        outer = (f.cx + side * (ex + 1.2 * ew), y + 0.03 * f.ry)
        top = (f.cx + side * ex, y - 0.06 * f.ry)
        draw.line(_bezier(inner, top, outer, 8), fill=_rgb(_brow_colour(f)), width=width)


def _draw_nose(draw, f: _Face) -> None:
    shade = _rgb(f.skin * 0.7, 0.8)
    tip_y = 0.28 + 0.04 * f.cues["sag"]
    draw.line(_bezier(f.at(-0.06, -0.02), f.at(-0.12, 0.15), f.at(-0.13, tip_y)), fill=shade, width=_SS)
    draw.arc(_box(*f.at(0.0, tip_y), 0.16 * f.rx, 0.06 * f.ry), 20, 160, fill=_rgb(f.skin * 0.55), width=_SS)
    for side in (-1, 1):  # nostrils
        x, y = f.at(side * 0.08, tip_y + 0.02)
        draw.ellipse(_box(x, y, 0.04 * f.rx, 0.02 * f.ry), fill=_rgb(f.skin * 0.45))


def _draw_mouth(draw, f: _Face) -> None:
    """Lips; thin-lips cue thins them, sagging turns the corners down."""
    y = 0.58 + 0.05 * f.cues["sag"]
    hw = 0.30 * f.rx
    thick = 0.055 * f.ry * (1.0 - 0.7 * f.cues["thin_lips"])
    droop = (0.06 * f.cues["sag"] + 0.04 * f.cues["thin_lips"]) * f.ry
    curve = f.smile * 0.05 * f.ry - droop
    lip = _rgb(f.skin * np.array([0.78, 0.55, 0.55]))
    cx, cy = f.at(0.0, y)
    left, right = (cx - hw, cy - curve), (cx + hw, cy - curve)
    upper = _bezier(left, (cx, cy - 2.2 * thick + curve * 0.3), right)
    lower = _bezier(right, (cx, cy + 2.4 * thick + curve), left)
    draw.polygon(upper + lower, fill=lip)
    draw.line(_bezier(left, (cx, cy + curve), right), fill=_rgb(f.skin * 0.35), width=_SS)


def _draw_stubble(rng, face_img: Image.Image, f: _Face) -> Image.Image:
    """Nuisance for both classes: speckled beard shadow on the lower face."""
    if f.stubble <= 0:
        return face_img
    m = Image.new("L", (_C, _C), 0)
    ImageDraw.Draw(m).ellipse(_box(*f.at(0, 0.55), 0.8 * f.rx, 0.45 * f.ry), fill=255)
    keep = Image.new("L", (_C, _C), 0)  # leave the mouth and upper cheeks clear
    ImageDraw.Draw(keep).rectangle((0, 0, _C, f.at(0, 0.3)[1]), fill=255)
    m_arr = np.asarray(m, np.float32) * (1 - np.asarray(keep, np.float32) / 255.0)
    speck = (rng.random((_C, _C), dtype=np.float32) < 0.5).astype(np.float32)
    alpha = (m_arr / 255.0) * speck * 0.45 * f.stubble
    colour = _brow_colour(f) * 0.8
    arr = np.asarray(face_img, np.float32)
    arr = arr * (1 - alpha[..., None]) + colour * alpha[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _hairline_mask(f: _Face) -> Image.Image:
    """Fringe: the part of a slightly enlarged head above a (receding) hairline."""
    recede = f.cues["recede"]
    m = Image.new("L", (_C, _C), 0)
    # Hairline depth below the top of the head; recession raises it, more at the temples.
    depth = (0.42 - 0.45 * recede) * f.ry
    if depth <= 0.02 * f.ry:
        return m
    ax, ay = 1.04 * f.rx, 1.04 * f.ry
    xs = np.linspace(-ax, ax, 41)
    top = f.cy - ay * np.sqrt(np.clip(1 - (xs / ax) ** 2, 0, 1))
    temple = 0.35 * recede * f.ry * (xs / ax) ** 2
    hairline = np.maximum(top, f.cy - f.ry + depth - temple + 0.25 * f.ry * (xs / ax) ** 4)
    pts = [(f.cx + x, y) for x, y in zip(xs, top)] + \
          [(f.cx + x, y) for x, y in zip(xs[::-1], hairline[::-1])]
    ImageDraw.Draw(m).polygon(pts, fill=255)
    return m


def _draw_glasses(draw, f: _Face) -> None:
    ey, ex, ew, _ = _eye_geometry(f)
    col = (30, 30, 35)
    for side in (-1, 1):
        draw.rounded_rectangle(_box(f.cx + side * ex, ey, 1.5 * ew, 0.11 * f.ry),
                               radius=0.06 * f.ry, outline=col, width=_SS)
    draw.line([(f.cx - ex + 1.5 * ew, ey), (f.cx + ex - 1.5 * ew, ey)], fill=col, width=_SS)


# --------------------------------------------------------------------------
# Camera: pose, lighting, blur, noise, compression (identical for both labels)
# --------------------------------------------------------------------------

def _apply_camera(rng, img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    # Directional light: multiplicative gradient; then global brightness/contrast/colour cast.
    gain = 1.0 + rng.uniform(0.0, 0.6) * (np.cos(ang) * _XX + np.sin(ang) * _YY)
    arr = arr * gain[..., None]
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.7, 1.2) + mean * rng.uniform(0.75, 1.2)
    arr = arr * rng.uniform(0.93, 1.07, size=3)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    radius = rng.uniform(0.0, 0.9)
    if radius > 0.3:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(out, dtype=np.float32)
    arr = arr + rng.uniform(1.0, 7.0) * rng.standard_normal(arr.shape, dtype=np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:  # earlier lossy re-encoding, as in web-scraped photos
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(rng.integers(35, 85)))
        buf.seek(0)
        out = Image.open(buf).convert("RGB")
    return out


# --------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------

def render_face(label: int, rng: np.random.Generator) -> Image.Image:
    """Draw one synthetic face-like 100x100 RGB image; label 0 = young, 1 = old."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    f = _sample_face(rng, label)
    # Pose: small in-plane head rotation (degrees) and off-centre shift (output pixels).
    angle = rng.normal(0.0, 6.0)
    shift = tuple(rng.normal(0.0, 3.0, size=2))
    background = _draw_background(rng)
    _draw_neck_and_shoulders(background, f, shift)

    face = Image.new("RGB", (_C, _C), _rgb(f.skin))  # person layer
    person = Image.new("L", (_C, _C), 0)  # where the person layer is opaque
    skin = Image.new("L", (_C, _C), 0)  # where skin texture applies
    draw, pdraw, sdraw = ImageDraw.Draw(face, "RGBA"), ImageDraw.Draw(person), ImageDraw.Draw(skin)

    hair_tex = _hair_texture(rng, f)
    hair_back = Image.new("L", (_C, _C), 0)
    _draw_hair_back(ImageDraw.Draw(hair_back), f)
    face.paste(hair_tex, mask=hair_back)
    person.paste(255, mask=hair_back)
    if f.hair_style != "long":
        _draw_ears(draw, pdraw, f)
    _draw_head(draw, pdraw, sdraw, f)

    face = _apply_skin_texture(rng, face, skin, f)
    draw = ImageDraw.Draw(face, "RGBA")
    _draw_spots(rng, draw, f)
    _draw_wrinkles(rng, draw, f)
    _draw_eyes(draw, f)
    _draw_brows(rng, draw, f)
    _draw_nose(draw, f)
    _draw_mouth(draw, f)
    face = _draw_stubble(rng, face, f)
    fringe = _hairline_mask(f)
    face.paste(hair_tex, mask=fringe)
    person.paste(255, mask=fringe)
    if f.glasses:
        _draw_glasses(ImageDraw.Draw(face, "RGBA"), f)

    # Downscale first (anti-aliasing), then apply the pose; rotating the small image is 4x cheaper.
    face.putalpha(person)
    face = face.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    face = face.rotate(angle, resample=Image.Resampling.BILINEAR,
                       center=(f.cx / _SS, f.cy / _SS), translate=shift)
    img = Image.alpha_composite(background.convert("RGBA"), face).convert("RGB")
    return _apply_camera(rng, img)


def _image_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    # One independent stream per file: output does not depend on generation order.
    return np.random.default_rng([GENERATOR_VERSION, seed, _SPLIT_CODE[split], label, index])


# --------------------------------------------------------------------------
# Data set on disk
# --------------------------------------------------------------------------

def is_synthetic(root) -> bool:
    """True when ``root`` is a data set written by this generator (has SYNTHETIC.txt)."""
    return (Path(root) / MARKER_FILE).is_file()


def _check_args(out_dir: Path, per_class, seed, test_fraction) -> None:
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not (isinstance(test_fraction, (int, float)) and 0.0 <= test_fraction <= 1.0):
        raise ValueError(f"test_fraction must be a number in [0, 1], got {test_fraction!r}")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"output path exists and is not a directory: {out_dir}")
        if any(out_dir.iterdir()) and not is_synthetic(out_dir):
            raise ValueError(
                f"output directory {out_dir} is not empty and is not a previous synthetic "
                f"output (no {MARKER_FILE}); refusing to write into it")


def generate(out_dir, per_class: int = 1000, seed: int = 0, test_fraction: float = 0.2,
             progress: bool | None = None) -> dict:
    """Write a synthetic two-class data set to ``out_dir``; return the image counts.

    Layout: ``out_dir/{train,test}/{0,1}/*.jpg`` (100x100 RGB, JPEG quality 95) plus
    ``out_dir/SYNTHETIC.txt``. ``per_class`` images per class go to train and
    ``round(per_class * test_fraction)`` per class to test (CACD: 20000 : 4000).
    The same arguments give byte-identical files. If ``out_dir`` holds a previous
    synthetic output, its train/ and test/ folders are replaced; any other
    non-empty directory is refused with ValueError.

    ``progress``: show a tqdm bar (None = only when stderr is a terminal).

    Returns ``{"train": {0: n, 1: n}, "test": {0: m, 1: m}}``.
    """
    out_dir = Path(out_dir)
    _check_args(out_dir, per_class, seed, test_fraction)
    per_class, seed = int(per_class), int(seed)
    n_test = int(round(per_class * test_fraction))
    counts = {"train": {0: per_class, 1: per_class}, "test": {0: n_test, 1: n_test}}

    if is_synthetic(out_dir):  # overwrite: drop old images so no stale files remain
        for split in _SPLIT_CODE:
            if (out_dir / split).is_dir():
                shutil.rmtree(out_dir / split)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Write the marker first so a half-written folder is still recognised (and overwritable).
    marker = _MARKER_TEXT.format(
        version=GENERATOR_VERSION, per_class=per_class, seed=seed, test_fraction=test_fraction,
        train0=per_class, train1=per_class, test0=n_test, test1=n_test, size=IMAGE_SIZE)
    (out_dir / MARKER_FILE).write_text(marker, encoding="utf-8")

    from tqdm import tqdm  # imported lazily: only needed when writing files

    total = sum(n for split in counts.values() for n in split.values())
    disable = None if progress is None else not progress
    with tqdm(total=total, desc="synthetic faces", unit="img", disable=disable) as bar:
        for split, per_label in counts.items():
            for label, n in per_label.items():
                folder = out_dir / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    img = render_face(label, _image_rng(seed, split, label, i))
                    img.save(folder / f"synth_{split}_{label}_{i:05d}.jpg", format="JPEG", quality=95)
                    bar.update(1)
    return counts


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line on stderr, exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bounded(cast, low, high=None, what="a number"):
    """An argparse type: ``cast(text)`` within [low, high], else a one-line usage error."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


_positive_int = _bounded(int, 1, what="an integer")
_nonneg_int = _bounded(int, 0, what="an integer")
_fraction = _bounded(float, 0, 1)


def _build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(
        prog="python -m agestudy.data.synthetic",
        description=(
            "Write a SYNTHETIC demo data set of procedurally drawn, face-like 100x100 RGB "
            "images (no real people) in the agestudy layout OUT/{train,test}/{0,1}/*.jpg. "
            "Label 0 stands in for 'young' (20-26), label 1 for 'old' (52-62); old faces "
            "carry random subsets of drawn age cues (wrinkles, grey/receding hair, spots, "
            "sagging), with overlap between the classes so accuracy is high but not 100%. "
            "Also writes OUT/SYNTHETIC.txt, which marks the folder as synthetic."),
        epilog="Example: python -m agestudy.data.synthetic data/synthetic --per-class 1000 --seed 0",
    )
    p.add_argument("out", metavar="OUT", help="output directory; must be empty, new, or a "
                   "previous synthetic output (which is overwritten)")
    p.add_argument("--per-class", type=_positive_int, default=1000, metavar="N",
                   help="training images per class (default: %(default)s)")
    p.add_argument("--seed", type=_nonneg_int, default=0, metavar="S",
                   help="random seed; same seed gives byte-identical files (default: %(default)s)")
    p.add_argument("--test-fraction", type=_fraction, default=0.2, metavar="F",
                   help="test images per class = round(N*F), F in [0, 1] (default: %(default)s, "
                   "the CACD ratio 20000:4000)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return p


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        counts = generate(args.out, per_class=args.per_class, seed=args.seed,
                          test_fraction=args.test_fraction,
                          progress=False if args.no_progress else None)
    except ValueError as e:
        parser.error(str(e))  # exits with code 2
    except OSError as e:
        print(f"{parser.prog}: error: could not write data: {e}", file=sys.stderr)
        return 1
    for split, per_label in counts.items():
        print(f"{split}: " + ", ".join(f"class {k}: {v}" for k, v in per_label.items()))
    print(f"!!! SYNTHETIC DATA (procedurally drawn, not real faces) written to {args.out} !!!")
    return 0


if __name__ == "__main__":
    sys.exit(main())
