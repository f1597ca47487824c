"""The generated products' scenes: each product drawn on a (possibly posed) pixel grid, before
defects, lighting and noise are composited by ``synthetic``.

Textured surfaces fill the frame (``weave``, ``wood``, ``tile``); parts lie on a plain background
(``disc``, ``plate``, and ``tire``, a rotationally symmetric part whose tread repeats all round, so
that keypoint matching finds as many wrong rotations as right ones). ``board`` is a fixtured
product: a circuit board held in the same place in every photo, rows of vias and rows of chips at
fixed places of a lattice, a few of which the fixture leaves bare; ``board_posed`` is the same board
placed by hand (turned and shifted), where the same position in two photos is no longer the same
place on the part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Scene:
    """One normal product image before lighting and noise, with what defects need to know."""

    image: np.ndarray  # (S, S, 3) float32, unlit colours 0..255
    behind: np.ndarray  # (S, S, 3) what shows through a hole or where material is missing
    product: np.ndarray  # (S, S) bool: pixels of product material (all True for textures)
    outline: np.ndarray  # (S, S) bool: the product's silhouette, its holes filled
    light: np.ndarray  # (S, S, 3) multiplicative lighting
    noise: np.ndarray  # (S, S, 3) additive sensor noise
    # fixtured products: the unlit image with one more of the product's structures drawn, by the same
    # renderer, at a place of the fixture that has none (picked by the generator): a misplaced structure
    add_structure: Callable[[np.random.Generator], np.ndarray] | None = None


def draw_pose(rng: np.random.Generator, size: int, degrees: float, shift: float) -> tuple[float, float, float]:
    """An extra pose (angle in radians, dx, dy in pixels) within the bounds; none for zero bounds."""
    if degrees == 0 and shift == 0:
        return 0.0, 0.0, 0.0
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    dx, dy = rng.uniform(-shift, shift, size=2) * size
    return float(angle), float(dx), float(dy)


def pose_grid(size: int, pose: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
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
           product: np.ndarray, outline: np.ndarray,
           add_structure: Callable[[np.random.Generator], np.ndarray] | None = None) -> Scene:
    """Add the per-photo lighting (exposure, white balance, slow falloff) and sensor noise."""
    size = image.shape[0]
    gain = rng.uniform(0.95, 1.05) * rng.uniform(0.98, 1.02, size=3)
    falloff = 1.0 + 0.03 * _smooth_noise(rng, size, (3, 3))
    light = (gain[None, None, :] * falloff[..., None]).astype(np.float32)
    noise = 2.5 * rng.standard_normal((size, size, 3), dtype=np.float32)
    return Scene(image, behind, product, outline, light, noise, add_structure)


def _colour(base: Sequence[float], shade: np.ndarray) -> np.ndarray:
    """A colour (3,) modulated by a shading field (S, S) -> (S, S, 3) float32."""
    return (np.asarray(base, dtype=np.float32)[None, None, :] * shade[..., None]).astype(np.float32)


def _weave(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> Scene:
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


def _wood(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> Scene:
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


def _disc(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> Scene:
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


def _plate(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> Scene:
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


def _tire(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> Scene:
    """A rubber tyre on its grey rim, seen from the side on a light table: symmetric under any
    rotation but for the phase of its 36 tread blocks and sidewall ribs."""
    x, y = grid
    size = x.shape[0]
    cx, cy = size * (0.5 + rng.uniform(-0.03, 0.03, size=2))
    radius = 0.40 * size * rng.uniform(0.985, 1.015)
    dx, dy = x - cx, y - cy
    r = np.hypot(dx, dy) / radius
    theta = np.arctan2(dy, dx) + rng.uniform(0, 2 * np.pi)
    table = _colour((200, 198, 192), 1.0 - 0.04 * (y / size))
    outline = r < 1.0
    tread = np.where((r > 0.86) & (np.cos(36 * theta) > 0.3), 0.55, 1.0)
    ribs = 1.0 + 0.12 * np.cos(2 * np.pi * r / 0.06) * ((r > 0.62) & (r < 0.84))
    rubber = _colour((52, 52, 55), (tread * ribs).astype(np.float32))
    rim = _colour((150, 152, 158), (1.0 + 0.25 * (0.55 - r)).astype(np.float32))
    hub = r < 0.12
    image = np.where((r < 0.55)[..., None], np.where(hub[..., None], table, rim), rubber)
    image = np.where(outline[..., None], image, table).astype(np.float32)
    return _scene(rng, image, table, outline & (r >= 0.55), outline)  # defects are in the rubber


def _tile(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> Scene:
    """A grey speckled stone tile, cropped at a varying scale: a texture with no pose to recover."""
    x, y = grid
    size = x.shape[0]
    scale = rng.uniform(0.8, 1.25)
    cells = (max(4, int(size / 6 * scale)),) * 2
    speckle = _smooth_noise(rng, size, cells) + 0.5 * _smooth_noise(rng, size, (cells[0] // 3,) * 2)
    shade = 0.85 + 0.25 * np.tanh(speckle)
    image = _colour((150, 150, 150), shade.astype(np.float32))
    behind = _colour((25, 25, 25), np.ones((size, size), np.float32))
    full = np.ones((size, size), dtype=bool)
    return _scene(rng, image, behind, full, full)


# The board's fixture, rows top to bottom: V a via (plated hole), C a chip. Rows of vias and rows of
# chips repeat past the frame, so that every structure's neighbourhood looks like every other's of its
# kind but near the few places the fixture leaves bare (``BOARD_BARE``: far apart, inside the frame).
BOARD_LATTICE = np.array([list("VVVVVVVVV" if row % 2 == 0 else "CCCCCCCCC") for row in range(9)])
BOARD_BARE = ((2, 2), (3, 6), (6, 3))
BOARD_LAYOUT = BOARD_LATTICE.copy()
BOARD_LAYOUT[tuple(np.array(BOARD_BARE).T)] = "."


def _over(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``colour`` painted over ``image`` with per-pixel coverage ``alpha`` (S, S) in [0, 1]."""
    return image * (1.0 - alpha[..., None]) + colour * alpha[..., None]


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Antialiased coverage of a shape from its signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0).astype(np.float32)


def _box(ox: np.ndarray, oy: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    """Signed distance to an axis-aligned box centred at the origin."""
    qx, qy = np.abs(ox) - half_w, np.abs(oy) - half_h
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def board_pitch(size: int) -> float:
    """Distance in pixels between neighbouring places of the board's fixture lattice: size / 8, a
    whole number of patches at the usual strides (8, 14, 16 at 256, 224, 256 px), so that every
    structure sits at the same phase of the patch grid."""
    return size / 8


def _board(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray], degrees: float = 0.0,
           shift: float = 0.0) -> Scene:
    """A close-up of a green circuit board: vias and chips at the fixture's places (``BOARD_LAYOUT``).

    Fixtured (no pose bounds), every structure lands on the same pixels in every photo; substrate
    weave, copper tone, lighting and noise vary. Structures are drawn per pixel from the nearest
    lattice place, antialiased, so one added at a bare place is rendered exactly like the others.
    """
    x, y = grid
    size = x.shape[0]
    cx, cy = size / 2 + rng.uniform(-shift, shift, size=2) * size
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    lx = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    ly = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    outline = np.maximum(np.abs(lx), np.abs(ly)) < 0.6 * size  # the tray shows only where the board is turned
    tray = _colour((48, 50, 54), 1.0 + 0.05 * _smooth_noise(rng, size, (4, 4)))
    period, phase = size / 36.0, rng.uniform(0, 1, size=2)
    weave = np.sin(2 * np.pi * (lx / period + phase[0])) * np.sin(2 * np.pi * (ly / period + phase[1]))
    substrate = _colour((38, 105, 62), (1.0 + 0.05 * weave + 0.04 * _smooth_noise(rng, size, (8, 8))))
    tone = np.float32(rng.uniform(0.95, 1.05))
    ring, drill = np.float32([205, 170, 85]) * tone, np.float32([18, 18, 16])
    body, terminal = np.float32([22, 22, 24]), np.float32([200, 200, 205]) * tone
    pitch, rows, cols = board_pitch(size), *BOARD_LAYOUT.shape
    col, row = np.rint(lx / pitch).astype(int) + cols // 2, np.rint(ly / pitch).astype(int) + rows // 2
    ox, oy = lx - (col - cols // 2) * pitch, ly - (row - rows // 2) * pitch
    on_lattice = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    radius = np.hypot(ox, oy)
    half_w, half_h, end = 0.04 * size, 0.022 * size, 0.012 * size
    base = np.where(outline[..., None], substrate, tray)

    def draw(layout: np.ndarray) -> np.ndarray:
        kind = np.where(on_lattice, layout[row.clip(0, rows - 1), col.clip(0, cols - 1)], ".")
        via, chip = (kind == "V").astype(np.float32), (kind == "C").astype(np.float32)
        image = _over(base, ring, via * _coverage(radius - 0.035 * size))
        image = _over(image, drill, via * _coverage(radius - 0.015 * size))
        image = _over(image, body, chip * _coverage(_box(ox, oy, half_w, half_h)))
        image = _over(image, terminal, chip * _coverage(_box(np.abs(ox) - (half_w - end), oy, end, half_h)))
        return image.astype(np.float32)

    def misplaced(defect_rng: np.random.Generator) -> np.ndarray:
        place = BOARD_BARE[defect_rng.integers(len(BOARD_BARE))]
        layout = BOARD_LAYOUT.copy()
        layout[place] = BOARD_LATTICE[place]  # the structure the lattice would have there
        return draw(layout)

    return _scene(rng, draw(BOARD_LAYOUT), tray, outline, outline, misplaced)


def _board_posed(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray]) -> Scene:
    """The same board placed by hand: turned by up to 20 degrees and shifted by up to 8% of the size."""
    return _board(rng, grid, degrees=20.0, shift=0.08)


RENDERERS = {"weave": _weave, "wood": _wood, "disc": _disc, "plate": _plate, "tire": _tire, "tile": _tile,
             "board": _board, "board_posed": _board_posed}
