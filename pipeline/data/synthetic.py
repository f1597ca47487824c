"""Synthetic products with drawn defects, in the MVTec AD layout: demo data and test data.

Four products: two textured surfaces (``weave``, a woven fabric; ``wood``, a grained board) and two
parts on a plain background (``disc``, a bottle-cap-like round part with a printed mark; ``plate``, a
brushed metal plate with four holes and a slot). Normal images of a product vary the way photos of
one product do: small shifts and rotations, texture phase and period, lighting and sensor noise.
An optional extra ``pose`` turns and shifts every product further, as parts placed by hand are.

Every image is rendered from its own seed in independent random streams, one for the product, one
for the defect and one for the extra pose, so the same seed renders the same picture with or without
the defect. A defect is drawn as a shape, composited over the product before lighting and noise, and
its mask is the set of pixels inside that shape whose value the defect changed: exact, and never a
diff of noisy images.
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The defect kinds of each product; every kind occurs in at least one product.
DEFECTS: dict[str, tuple[str, ...]] = {
    "weave": ("hole", "spot", "color"),
    "wood": ("scratch", "spot", "color"),
    "disc": ("scratch", "missing_part", "extra_part"),
    "plate": ("hole", "missing_part", "color"),
}
DEFAULT_CATEGORIES = tuple(DEFECTS)
DEFECT_KINDS = ("scratch", "spot", "hole", "missing_part", "extra_part", "color")
MIN_IMAGE_SIZE = 64

# Colours (unlit RGB) a defect takes on each product, chosen to stand out from the product.
_SCRATCH = {"wood": (240, 230, 205), "disc": (228, 230, 238)}
_SPOT = {"weave": (150, 40, 25), "wood": (40, 30, 28)}
_TINT = {"weave": (60, 95, 200), "wood": (85, 145, 135), "plate": (205, 105, 35)}


@dataclass
class _Scene:
    """One normal product image before lighting and noise, with what defects need to know."""

    image: np.ndarray  # (S, S, 3) float32, unlit colours 0..255
    behind: np.ndarray  # (S, S, 3) what shows through a hole or where material is missing
    product: np.ndarray  # (S, S) bool: pixels of product material (all True for textures)
    outline: np.ndarray  # (S, S) bool: the product's silhouette, its holes filled
    light: np.ndarray  # (S, S, 3) multiplicative lighting
    noise: np.ndarray  # (S, S, 3) additive sensor noise


def render_image(category: str, image_size: int, seed: int | Sequence[int], defect: str | None = None,
                 *, pose: tuple[float, float] = (0.0, 0.0),
                 defect_seed: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One product image (S, S, 3) uint8 and its defect mask (S, S) bool (empty when defect is None).

    The same ``seed`` gives the same product with and without the defect: the two images are equal
    outside the mask and differ at every mask pixel. ``pose`` = (degrees, fraction of S): the scene
    is rendered turned about the centre by up to that many degrees and shifted by up to that
    fraction of the size in x and y (uniform draws), so that poses differ far more than by default
    while background and borders stay rendered, never filled in by a warp; (0, 0) adds nothing.
    ``defect_seed`` draws the defect from its own seed instead of ``seed``.
    """
    _check_category(category)
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    if defect is not None and defect not in DEFECTS[category]:
        raise ValueError(f"defect {defect!r} is not drawn on {category!r}; its kinds: {DEFECTS[category]}")
    if min(pose) < 0:
        raise ValueError(f"pose must be (degrees >= 0, shift fraction >= 0), got {pose}")
    product_rng, defect_rng, pose_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    if defect_seed is not None:  # the same defect (size, place, colour) on different parts, as a worn tool leaves
        defect_rng = np.random.default_rng(np.random.SeedSequence(defect_seed).spawn(3)[1])
    scene = _RENDERERS[category](product_rng, _grid(image_size, _draw_pose(pose_rng, image_size, *pose)))
    normal = _finish(scene, scene.image)
    if defect is None:
        return normal, np.zeros((image_size, image_size), dtype=bool)
    min_pixels = max(16, int(0.002 * image_size**2))
    for _ in range(50):
        unlit, region = _draw_defect(defect_rng, scene, category, defect)
        image = _finish(scene, unlit)
        mask = region & (image != normal).any(axis=-1)
        if mask.sum() >= min_pixels:
            return image, mask
    raise RuntimeError(f"could not place a {defect} defect on {category} (seed {seed})")


def generate_dataset(root: str, categories: Sequence[str] = DEFAULT_CATEGORIES, n_train: int = 10,
                     n_test_good: int = 10, n_test_defect: int = 10, image_size: int = 224, seed: int = 0,
                     *, overwrite: bool = False, pose: tuple[float, float] = (0.0, 0.0)) -> list[str]:
    """Write products in the MVTec AD layout under ``root``; returns the category names.

    Per category: ``train/good``, ``test/good`` and ``test/<kind>`` with the defect kinds taking
    turns, and ``ground_truth/<kind>/<stem>_mask.png`` (single-channel, 0/255). Deterministic for a
    seed, and a category's images do not depend on which other categories are generated. A non-empty
    ``root/<category>`` is refused unless ``overwrite``, which deletes it first. ``pose``: see
    :func:`render_image`.
    """
    categories = list(categories)
    for category in categories:
        _check_category(category)
    for name, count in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_defect", n_test_defect)):
        if count < 0:
            raise ValueError(f"{name} must be >= 0, got {count}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    targets = [Path(root) / category for category in categories]
    occupied = [str(t) for t in targets if t.is_dir() and any(t.iterdir())]
    if occupied and not overwrite:
        raise FileExistsError(f"refusing to overwrite non-empty {occupied}; pass overwrite=True to replace them")
    for category, target in zip(categories, targets):
        if target.exists():
            shutil.rmtree(target)
        key = [seed, zlib.crc32(category.encode())]
        for i in range(n_train):
            _save(render_image(category, image_size, [*key, 0, i], pose=pose)[0],
                  target / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            _save(render_image(category, image_size, [*key, 1, i], pose=pose)[0],
                  target / "test" / "good" / f"{i:03d}.png")
        kinds = DEFECTS[category]
        for i in range(n_test_defect):
            kind = kinds[i % len(kinds)]
            stem = f"{i // len(kinds):03d}"
            image, mask = render_image(category, image_size, [*key, 2, i], kind, pose=pose)
            _save(image, target / "test" / kind / f"{stem}.png")
            _save(mask.astype(np.uint8) * 255, target / "ground_truth" / kind / f"{stem}_mask.png")
    return categories


def _check_category(category: str) -> None:
    if category not in DEFECTS:
        raise ValueError(f"unknown synthetic category {category!r}; available: {list(DEFECTS)}")


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def _finish(scene: _Scene, unlit: np.ndarray) -> np.ndarray:
    """Lighting and sensor noise, then 8 bits: the same for an image with and without its defect."""
    return np.clip(np.rint(unlit * scene.light + scene.noise), 0, 255).astype(np.uint8)


# --- products --------------------------------------------------------------------------------------


def _draw_pose(rng: np.random.Generator, size: int, degrees: float, shift: float) -> tuple[float, float, float]:
    """An extra pose (angle in radians, dx, dy in pixels) within the bounds; none for zero bounds."""
    if degrees == 0 and shift == 0:
        return 0.0, 0.0, 0.0
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    dx, dy = rng.uniform(-shift, shift, size=2) * size
    return float(angle), float(dx), float(dy)


def _grid(size: int, pose: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Scene coordinates (x, y), each (S, S) float32, of the pixel centres: the pixel grid moved
    back by the pose (angle, dx, dy), so a scene drawn on them appears turned and shifted by it."""
    axis = np.arange(size, dtype=np.float32) + 0.5
    x, y = np.meshgrid(axis, axis)
    angle, dx, dy = pose
    if (angle, dx, dy) == (0.0, 0.0, 0.0):
        return x, y
    c, s, centre = np.cos(angle), np.sin(angle), size / 2
    u, v = x - centre - dx, y - centre - dy
    return (centre + c * u + s * v).astype(np.float32), (centre - s * u + c * v).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """(S, S) smooth random field: a (rows, cols) grid of normal values upsampled bicubically."""
    coarse = Image.fromarray(rng.standard_normal(cells).astype(np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def _scene(rng: np.random.Generator, image: np.ndarray, behind: np.ndarray,
           product: np.ndarray, outline: np.ndarray) -> _Scene:
    """Add the per-photo lighting (exposure, white balance, slow falloff) and sensor noise."""
    size = image.shape[0]
    gain = rng.uniform(0.95, 1.05) * rng.uniform(0.98, 1.02, size=3)
    falloff = 1.0 + 0.03 * _smooth_noise(rng, size, (3, 3))
    light = (gain[None, None, :] * falloff[..., None]).astype(np.float32)
    noise = 2.5 * rng.standard_normal((size, size, 3), dtype=np.float32)
    return _Scene(image, behind, product, outline, light, noise)


def _colour(base: Sequence[float], shade: np.ndarray) -> np.ndarray:
    """A colour (3,) modulated by a shading field (S, S) -> (S, S, 3) float32."""
    return (np.asarray(base, dtype=np.float32)[None, None, :] * shade[..., None]).astype(np.float32)


def _weave(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> _Scene:
    """Plain-weave fabric: threads alternately over and under, each thread a little different."""
    x, y = grid
    size = x.shape[0]
    angle = np.deg2rad(rng.uniform(-3.0, 3.0))
    period = size / 14.0 * rng.uniform(0.97, 1.03)
    u = (x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform(0, 2)
    v = (-x * np.sin(angle) + y * np.cos(angle)) / period + rng.uniform(0, 2)
    iu, iv = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - iu, v - iv
    across = np.sin(np.pi * fv) ** 0.6 * (0.8 + 0.2 * np.sin(np.pi * fu))
    along = np.sin(np.pi * fu) ** 0.6 * (0.8 + 0.2 * np.sin(np.pi * fv))
    over = (iu + iv) % 2 == 0
    thread_gain = 1.0 + 0.04 * rng.standard_normal(64)
    t = np.where(over, across * thread_gain[iv % 64], along * thread_gain[iu % 64])
    gap, thread = np.array([95, 85, 70], np.float32), np.array([205, 190, 155], np.float32)
    image = gap + (thread - gap) * t[..., None].astype(np.float32)
    image *= (1.0 + 0.03 * _smooth_noise(rng, size, (12, 12)))[..., None]
    behind = _colour((22, 20, 18), np.ones((size, size), np.float32))
    full = np.ones((size, size), dtype=bool)
    return _scene(rng, image.astype(np.float32), behind, full, full)


def _wood(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> _Scene:
    """A planed board: wavy vertical growth rings and fine fibres."""
    x, y = grid
    size = x.shape[0]
    warp = 0.06 * size * _smooth_noise(rng, size, (4, 3)) + 0.01 * size * _smooth_noise(rng, size, (12, 8))
    period = size / rng.uniform(9.0, 11.0)
    ring = (0.5 + 0.5 * np.sin(2 * np.pi * ((x + warp) / period + rng.uniform(0, 1)))) ** 4
    fibre = _smooth_noise(rng, size, (3, max(size // 3, 8)))
    shade = (1.0 - 0.28 * ring) * (1.0 + 0.04 * fibre)
    image = _colour((196, 150, 100), shade)
    behind = _colour((30, 22, 16), np.ones((size, size), np.float32))
    full = np.ones((size, size), dtype=bool)
    return _scene(rng, image, behind, full, full)


def _disc(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> _Scene:
    """A blue cap seen from above on a light table: groove, knurled rim, highlight, printed mark."""
    x, y = grid
    size = x.shape[0]
    cx, cy = size * (0.5 + rng.uniform(-0.03, 0.03, size=2))
    radius = 0.30 * size * rng.uniform(0.985, 1.015)
    turn = np.deg2rad(rng.uniform(-12.0, 12.0))
    dx, dy = x - cx, y - cy
    r = np.hypot(dx, dy) / radius
    theta = np.arctan2(dy, dx)
    shadow = 1.0 - 0.12 * np.clip(1.15 - np.hypot(dx - 0.03 * size, dy - 0.03 * size) / radius, 0.0, 0.15) / 0.15
    table = _colour((205, 205, 198), shadow * (1.0 - 0.04 * (y / size)))
    outline = r < 1.0
    shade = 1.0 + 0.12 * (1.0 - r)
    shade = np.where(np.abs(r - 0.78) < 0.03, 0.7, shade)
    shade = np.where(r > 0.92, 1.1 + 0.08 * np.sin(60 * (theta - turn)), shade)
    highlight = 45.0 * np.exp(-(((dx + 0.35 * radius) ** 2 + (dy + 0.35 * radius) ** 2) / (0.3 * radius) ** 2))
    cap = _colour((50, 85, 150), shade) + highlight[..., None]
    mark = Image.new("L", (size, size))
    angle = -np.pi / 2 + turn
    ux, uy, px, py = np.cos(angle), np.sin(angle), -np.sin(angle), np.cos(angle)
    mx, my = cx + 0.45 * radius * ux, cy + 0.45 * radius * uy
    half_l, half_w = 0.18 * radius, 0.05 * radius
    corners = [(mx + sl * half_l * px + sw * half_w * ux, my + sl * half_l * py + sw * half_w * uy)
               for sl, sw in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    ImageDraw.Draw(mark).polygon(corners, fill=255)
    cap = np.where((np.asarray(mark) > 0)[..., None], np.float32(235), cap)
    image = np.where(outline[..., None], cap, table).astype(np.float32)
    return _scene(rng, image, table, outline, outline)


def _plate(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> _Scene:
    """A brushed, rounded metal plate with four holes and a slot, on a dark conveyor."""
    x, y = grid
    size = x.shape[0]
    cx, cy = size * (0.5 + rng.uniform(-0.03, 0.03, size=2))
    angle = np.deg2rad(rng.uniform(-6.0, 6.0))
    lx = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    ly = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    half_w, half_h, corner = 0.32 * size, 0.22 * size, 0.03 * size
    qx, qy = np.abs(lx) - (half_w - corner), np.abs(ly) - (half_h - corner)
    edge = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - corner
    outline = edge < 0
    holes = np.zeros_like(outline)
    for sx in (-1, 1):
        for sy in (-1, 1):
            holes |= np.hypot(lx - sx * 0.23 * size, ly - sy * 0.13 * size) < 0.04 * size
    holes |= (np.abs(lx) < 0.08 * size) & (np.abs(ly) < 0.025 * size)
    product = outline & ~holes
    conveyor = _colour((40, 42, 46), 1.0 + 0.05 * _smooth_noise(rng, size, (4, 4)))
    brushed = 1.0 + 0.05 * np.interp(ly, np.linspace(-size, size, 4 * size), rng.standard_normal(4 * size))
    bevel = np.where(edge > -0.015 * size, 1.12, 1.0)
    metal = _colour((170, 172, 176), (brushed * bevel).astype(np.float32))
    image = np.where(product[..., None], metal, conveyor).astype(np.float32)
    return _scene(rng, image, conveyor, product, outline)


_RENDERERS = {"weave": _weave, "wood": _wood, "disc": _disc, "plate": _plate}


# --- defects ---------------------------------------------------------------------------------------


def _blob(rng: np.random.Generator, size: int, centre: np.ndarray, area: float, irregularity: float) -> np.ndarray:
    """(S, S) bool: an irregular, slightly elongated closed shape of about ``area`` pixels."""
    n = 24
    base = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi / n)
    wobble = sum(rng.uniform(-1, 1) / k * np.cos(k * base + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    radius = np.sqrt(area / np.pi) * (1.0 + irregularity * wobble / 1.1)
    stretch, turn = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    px, py = radius * np.cos(base), radius * np.sin(base) * stretch
    points = np.stack([centre[0] + px * np.cos(turn) - py * np.sin(turn),
                       centre[1] + px * np.sin(turn) + py * np.cos(turn)], axis=1)
    canvas = Image.new("L", (size, size))
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=255)
    return np.asarray(canvas) > 0


def _scratch(rng: np.random.Generator, size: int, centre: np.ndarray) -> np.ndarray:
    """(S, S) bool: a thin, gently curved line through ``centre``."""
    length = rng.uniform(0.18, 0.35) * size
    direction = rng.uniform(0, np.pi)
    along = np.array([np.cos(direction), np.sin(direction)])
    across = np.array([-along[1], along[0]])
    t = np.linspace(-0.5, 0.5, 24)[:, None]
    bend = rng.uniform(-0.15, 0.15) * length
    points = centre + t * length * along + (1 - 4 * t**2) * bend * across
    canvas = Image.new("L", (size, size))
    width = max(2, round(size / 80))
    ImageDraw.Draw(canvas).line([tuple(p) for p in points], fill=255, width=width, joint="curve")
    return np.asarray(canvas) > 0


def _place_inside(rng: np.random.Generator, scene: _Scene, margin: float,
                  draw: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A shape drawn by ``draw(centre)`` at a random centre, lying on the product and in the image.

    Centres are at least ``margin`` from the border; a shape that sticks out of the silhouette by
    more than 5% is redrawn elsewhere, so a hole or a stain is never a bite out of the edge.
    """
    size = scene.image.shape[0]
    for _ in range(200):
        centre = rng.uniform(margin, size - margin, size=2)
        if not scene.outline[int(centre[1]), int(centre[0])]:
            continue
        shape = draw(centre)
        if (shape & ~scene.outline).sum() <= 0.05 * shape.sum():
            return shape
    raise RuntimeError("found no place on the product for the defect")


def _edge_point(rng: np.random.Generator, scene: _Scene, offset: float) -> np.ndarray:
    """A random point of the silhouette's border, moved ``offset`` pixels outward along the normal."""
    inner = scene.outline.copy()
    inner[1:, :] &= scene.outline[:-1, :]
    inner[:-1, :] &= scene.outline[1:, :]
    inner[:, 1:] &= scene.outline[:, :-1]
    inner[:, :-1] &= scene.outline[:, 1:]
    ys, xs = np.nonzero(scene.outline & ~inner)
    cy, cx = (float(v.mean()) for v in np.nonzero(scene.outline))
    pick = rng.integers(len(xs))
    point = np.array([xs[pick] + 0.5, ys[pick] + 0.5])
    normal = point - np.array([cx, cy])
    return point + offset * normal / max(float(np.hypot(*normal)), 1e-6)


def _draw_defect(rng: np.random.Generator, scene: _Scene, category: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The unlit image with one defect composited in, and the shape's pixels that may have changed."""
    size = scene.image.shape[0]
    image = scene.image.copy()
    fill_noise = 4.0 * rng.standard_normal(image.shape, dtype=np.float32)
    if kind == "scratch":
        region = _place_inside(rng, scene, 0.2 * size, lambda c: _scratch(rng, size, c)) & scene.product
        fill = np.float32(_SCRATCH[category]) + fill_noise
    elif kind == "spot":
        area = rng.uniform(0.01, 0.06) * size**2
        shape = _place_inside(rng, scene, 1.5 * np.sqrt(area), lambda c: _blob(rng, size, c, area, 0.35))
        region = shape & scene.product
        fill = 0.15 * image + 0.85 * np.float32(_SPOT[category]) + fill_noise
    elif kind == "hole":
        area = rng.uniform(0.01, 0.055) * size**2
        shape = _place_inside(rng, scene, 1.5 * np.sqrt(area), lambda c: _blob(rng, size, c, area, 0.3))
        region = shape & scene.product
        fill = scene.behind
    elif kind == "missing_part":
        area = rng.uniform(0.04, 0.1) * size**2
        centre = _edge_point(rng, scene, -0.5 * np.sqrt(area / np.pi))
        region = _blob(rng, size, centre, area, 0.3) & scene.product
        fill = scene.behind
    elif kind == "extra_part":
        area = rng.uniform(0.025, 0.08) * size**2
        centre = _edge_point(rng, scene, 0.5 * np.sqrt(area / np.pi))
        region = _blob(rng, size, centre, area, 0.35) & ~scene.outline
        material = scene.image[scene.product].mean(axis=0) * rng.uniform(0.55, 0.7)
        fill = material + fill_noise
    elif kind == "color":
        area = rng.uniform(0.02, 0.09) * size**2
        shape = _place_inside(rng, scene, 1.5 * np.sqrt(area), lambda c: _blob(rng, size, c, area, 0.35))
        region = shape & scene.product
        luminance = image @ np.float32([0.299, 0.587, 0.114])
        relative = luminance / float(luminance[scene.product].mean())
        fill = relative[..., None] * np.float32(_TINT[category]) + 0.5 * fill_noise
    else:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    image[region] = np.broadcast_to(fill, image.shape)[region]
    return image, region
