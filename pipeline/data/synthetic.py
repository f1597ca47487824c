"""Synthetic products with drawn defects, in the MVTec AD layout: demo data and test data.

Four demo products: two textured surfaces (``weave``, a woven fabric; ``wood``, a grained board) and
two parts on a plain background (``disc``, a bottle-cap-like round part with a printed mark;
``plate``, a brushed metal plate with four holes and a slot); on request also ``tire`` (a
rotationally symmetric part), ``tile`` (a grey stone texture cropped at varying scales), and the
fixtured ``board`` with its hand-placed twin ``board_posed``, drawn in ``products``. The board's
``misplaced_structure`` is one of its own vias or chips drawn by its renderer at a place of the
fixture that has none: every patch of it has look-alikes on every board, so only a comparison by
position can find it. Normal images of a product vary the way photos of
one product do: small shifts and rotations, texture phase and period, lighting and sensor noise.
An optional extra ``pose`` turns and shifts every product further, as parts placed by hand are.

Every image is rendered from its own seed in independent random streams, one for the product, one
for the defect and one for the extra pose, so the same seed renders the same picture with or without
the defect. A defect is drawn as a shape, composited over the product before lighting and noise, and
its mask is the set of pixels inside that shape whose value the defect changed: exact, and never a
diff of noisy images.
"""

from __future__ import annotations

import io
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .products import RENDERERS, Scene, draw_pose, pose_grid

# The defect kinds of each product; every kind occurs in at least one product.
DEFECTS: dict[str, tuple[str, ...]] = {
    "weave": ("hole", "spot", "color"),
    "wood": ("scratch", "spot", "color"),
    "disc": ("scratch", "missing_part", "extra_part"),
    "plate": ("hole", "missing_part", "color"),
    "tire": ("scratch", "spot", "missing_part"),
    "tile": ("scratch", "spot", "hole"),
    "board": ("misplaced_structure", "scratch", "spot"),
    "board_posed": ("misplaced_structure", "scratch", "spot"),
}
# the demo's products; the others are generated on request (the alignment and frontier benchmarks)
DEFAULT_CATEGORIES = ("weave", "wood", "disc", "plate")
DEFECT_KINDS = ("scratch", "spot", "hole", "missing_part", "extra_part", "color", "misplaced_structure")
MIN_IMAGE_SIZE = 64

# Colours (unlit RGB) a defect takes on each product, chosen to stand out from the product.
_SCRATCH = {"wood": (240, 230, 205), "disc": (228, 230, 238), "tire": (200, 200, 196), "tile": (250, 250, 250),
            "board": (215, 150, 90), "board_posed": (215, 150, 90)}  # board: copper laid bare
_SPOT = {"weave": (150, 40, 25), "wood": (40, 30, 28), "tire": (190, 170, 130), "tile": (20, 20, 20),
         "board": (25, 18, 12), "board_posed": (25, 18, 12)}  # board: a burn mark
_TINT = {"weave": (60, 95, 200), "wood": (85, 145, 135), "plate": (205, 105, 35)}


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
    scene = RENDERERS[category](product_rng, pose_grid(image_size, draw_pose(pose_rng, image_size, *pose)))
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
                     *, overwrite: bool = False, pose: tuple[float, float] = (0.0, 0.0),
                     brightness: dict[str, float] | None = None) -> list[str]:
    """Write products in the MVTec AD layout under ``root``; returns the category names.

    Per category: ``train/good``, ``test/good`` and ``test/<kind>`` with the defect kinds taking
    turns, and ``ground_truth/<kind>/<stem>_mask.png`` (single-channel, 0/255). Deterministic for a
    seed, and a category's images do not depend on which other categories are generated. A non-empty
    ``root/<category>`` is refused unless ``overwrite``, which deletes it first. ``pose``: see
    :func:`render_image`. ``brightness``: per category, a factor for every pixel of its images (a line
    whose lighting changed; masks are unchanged).
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
    for target in targets:
        if target.exists():
            shutil.rmtree(target)
    for item in dataset_files(categories, n_train, n_test_good, n_test_defect):
        image, mask = render_file(item, image_size, seed, pose)
        _save(brighten(image, (brightness or {}).get(item.category, 1.0)), Path(root) / item.image)
        if item.mask is not None:
            _save(mask.astype(np.uint8) * 255, Path(root) / item.mask)
    return categories


@dataclass(frozen=True)
class DatasetFile:
    """One image ``generate_dataset`` writes: where (relative to its root), its defect, its mask's name."""

    category: str
    image: str  # <category>/<split>/<good or kind>/<stem>.png
    defect: str | None
    mask: str | None  # <category>/ground_truth/<kind>/<stem>_mask.png for a defective image
    seed: tuple[int, int]  # (0 train, 1 test good, 2 test defective; index): the tail of its render seed

    @property
    def split(self) -> str:
        return self.image.split("/")[1]


def dataset_files(categories: Sequence[str], n_train: int, n_test_good: int,
                  n_test_defect: int) -> list[DatasetFile]:
    """Every image ``generate_dataset`` writes, named without rendering or writing anything (the job's
    dry run plans the demo batch from these); defect kinds take turns within a category."""
    files = []
    for category in categories:
        _check_category(category)
        files += [DatasetFile(category, f"{category}/train/good/{i:03d}.png", None, None, (0, i))
                  for i in range(n_train)]
        files += [DatasetFile(category, f"{category}/test/good/{i:03d}.png", None, None, (1, i))
                  for i in range(n_test_good)]
        kinds = DEFECTS[category]
        for i in range(n_test_defect):
            kind, stem = kinds[i % len(kinds)], f"{i // len(kinds):03d}"
            files.append(DatasetFile(category, f"{category}/test/{kind}/{stem}.png", kind,
                                     f"{category}/ground_truth/{kind}/{stem}_mask.png", (2, i)))
    return files


def render_file(item: DatasetFile, image_size: int, seed: int = 0,
                pose: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask ``generate_dataset`` writes for ``item``, in memory."""
    return render_image(item.category, image_size, [seed, zlib.crc32(item.category.encode()), *item.seed],
                        item.defect, pose=pose)


def encode_png(array: np.ndarray) -> bytes:
    """The PNG bytes ``generate_dataset`` writes for an image or mask."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def brighten(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (uint8) with every pixel multiplied by ``factor``, rounded and clipped to 0-255."""
    if factor == 1.0:
        return image
    return np.clip(np.rint(image.astype(np.float64) * factor), 0, 255).astype(np.uint8)


def _check_category(category: str) -> None:
    if category not in DEFECTS:
        raise ValueError(f"unknown synthetic category {category!r}; available: {list(DEFECTS)}")


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(array))


def _finish(scene: Scene, unlit: np.ndarray) -> np.ndarray:
    """Lighting and sensor noise, then 8 bits: the same for an image with and without its defect."""
    return np.clip(np.rint(unlit * scene.light + scene.noise), 0, 255).astype(np.uint8)


# --- products --------------------------------------------------------------------------------------


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


def _place_inside(rng: np.random.Generator, scene: Scene, margin: float,
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


def _edge_point(rng: np.random.Generator, scene: Scene, offset: float) -> np.ndarray:
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


def _draw_defect(rng: np.random.Generator, scene: Scene, category: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
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
    elif kind == "misplaced_structure":  # drawn by the product's renderer: no seam, every patch a look-alike
        fill = scene.add_structure(rng)
        region = (fill != image).any(axis=-1)
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
