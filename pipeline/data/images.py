"""Image and mask decoding: the one place bytes become the arrays every model and metric reads.

Images come back as RGB uint8 whatever their stored mode, upright (EXIF orientation applied), at the
model size (bicubic) or resized and centre-cropped (Dinomaly); masks as boolean arrays where any
non-zero value is anomalous (VisA stores 0/1 or 0/255), resized with nearest neighbour, or as the
published MuSc code resizes them (``MaskResize``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import re
from collections.abc import Callable
from typing import Any, BinaryIO, Literal, TypeVar

import numpy as np
from PIL import Image, ImageOps

from ..storage import read_bytes

T = TypeVar("T")
# file endings listed as images (inputs, benchmark folders)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# greyscale modes deeper than 8 bits: 16-bit, 32-bit integer, 32-bit float
_DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_OBJECT_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")  # PIL names in-memory files by address


class UnreadableImage(ValueError):
    """An image (or mask) that cannot be read: the object does not exist, or its bytes are not an image
    this module can decode. The message says why, the same way on every run."""

# How a mask file becomes a mask at the model size. "nearest": a pixel is anomalous when its nearest
# source pixel is (no new values; the true defect area). The published MuSc code instead resamples
# the stored grey values bilinearly (PIL, 8 bit) and keeps, for MVTec AD and BTAD, only the pixels
# that stay exactly 255 ("bilinear_full": every defect loses its rim, up to half of a thin one), for
# VisA every pixel with any non-zero value ("bilinear_any": every defect gains a rim).
MaskResize = Literal["nearest", "bilinear_full", "bilinear_any"]


# How an image that is not square becomes the square model input: "squash" resizes it (the published
# MuSc code; parts look narrower or wider by their aspect ratio), "pad" centres it on a black square
# first (shapes kept; the padding is not part of the photo, see ``padding_free``).
Fit = Literal["squash", "pad"]


def square_canvas(width: int, height: int) -> tuple[int, int, int]:
    """The side of the square an image is padded to and the image's (left, top) offset on it: centred."""
    side = max(width, height)
    return side, (side - width) // 2, (side - height) // 2


def _padded(image: Image.Image) -> Image.Image:
    """``image`` centred on a square of zeros (black) of its own mode."""
    side, left, top = square_canvas(*image.size)
    if image.size == (side, side):
        return image
    canvas = Image.new(image.mode, (side, side))
    canvas.paste(image, (left, top))
    return canvas


def pad_array(values: np.ndarray) -> np.ndarray:
    """An (H, W) array centred on a square of zeros, placed as ``_padded`` places an image."""
    height, width = values.shape
    side, left, top = square_canvas(width, height)
    return np.pad(values, ((top, side - height - top), (left, side - width - left)))


def padding_free(width: int, height: int, size: int) -> np.ndarray:
    """(size, size) bool: True where a ``fit="pad"`` input of a width x height photo shows the photo,
    False on the padding (resized as masks are, nearest neighbour)."""
    return resize_mask(pad_array(np.ones((height, width), dtype=bool)), size)


def load_image(path: str | BinaryIO, size: int | None = None, resize: int | None = None,
               fit: Fit = "squash") -> np.ndarray:
    """An image (a path or an open binary file) as (H, W, 3) uint8 RGB, upright; resized to size x size
    (bicubic) when size is given, or to ``resize`` x ``resize`` and then centre-cropped to size x size
    (Dinomaly's input); ``fit="pad"`` pads it to a square first (``Fit``). Unreadable data raises
    PIL's ``UnidentifiedImageError`` or ``OSError``, and deep greyscale without an agreed meaning
    ``ValueError`` (``_to_8_bits``).
    """
    side = resize or size
    with Image.open(path) as image:
        ImageOps.exif_transpose(image, in_place=True)
        if fit == "pad":
            image = _padded(image.convert("RGB") if image.mode not in _DEEP_MODES else image)
        if image.mode in _DEEP_MODES:
            image = _to_8_bits(image, side)
        image = image.convert("RGB")
    if side is not None and image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    return center_crop(np.asarray(image), size) if resize and size is not None else np.asarray(image)


def _to_8_bits(image: Image.Image, side: int | None) -> Image.Image:
    """Deep greyscale as 8 bits, scaled rather than clipped, after resizing to ``side`` at full depth:
    the numbers are converted at the final size (a 13000 x 13000 16-bit PNG took 4.6 GB as float64).

    Integers are 16-bit values (0..65535 -> 0..255) and floats values in [0, 1]; anything else has no
    agreed meaning and is refused (it decoded as all white or all black before).
    """
    low, high = image.getextrema()
    if image.mode == "F":
        if not 0.0 <= low <= high <= 1.0:  # NaN fails too
            raise ValueError(f"32-bit float image with values in [{low:g}, {high:g}]: only [0, 1] is understood")
        scale = 255.0
    else:
        if low < 0 or high > 65535:
            raise ValueError(f"32-bit integer image with values in [{low}, {high}]: only 0..65535 is understood")
        scale = 255.0 / 65535.0
    if side is not None and image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    values = np.asarray(image, dtype=np.float32) * np.float32(scale)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _read(uri: str, storage_options: dict[str, Any] | None) -> bytes:
    """The object's bytes; a missing object raises UnreadableImage, any other storage failure (network,
    credentials) is raised as it is, for the caller to fail on."""
    try:
        return read_bytes(uri, storage_options)
    except FileNotFoundError:
        raise UnreadableImage("FileNotFoundError: no such file or object") from None
    except OSError as err:  # a link loop (loop.png -> loop.png) is one unreadable input, not a storage failure
        if err.errno != errno.ELOOP:
            raise
        raise UnreadableImage("OSError: a symbolic link loop (too many levels of symbolic links)") from None


def _decoded(data: bytes, decode: Callable[[BinaryIO], T]) -> T:
    """``decode`` of bytes in memory; any failure is theirs and raises UnreadableImage."""
    try:
        return decode(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - the bytes are in memory: every failure is theirs
        raise UnreadableImage(f"{type(err).__name__}: {_OBJECT_ADDRESS.sub('', str(err))}") from err


def fetch_image(uri: str, size: int | None = None, resize: int | None = None,
                storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """``load_image`` of any URI (local or object storage); raises UnreadableImage for a missing
    object or undecodable bytes."""
    return _decoded(_read(uri, storage_options), lambda file: load_image(file, size, resize))


def fetch_image_and_digest(uri: str, size: int | None = None, resize: int | None = None,
                           storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, str]:
    """``fetch_image`` and the SHA-256 (hex) of the bytes it read, so that byte-identical files are
    found without reading them twice (~2 ms per MB: 13 ms for a 7 MB 2048 x 1536 PNG whose decoding
    takes 240 ms)."""
    data = _read(uri, storage_options)
    return _decoded(data, lambda file: load_image(file, size, resize)), hashlib.sha256(data).hexdigest()


def fetch_mask(uri: str, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """``read_mask`` of any URI; raises UnreadableImage as ``fetch_image`` does."""
    return _decoded(_read(uri, storage_options), read_mask)


def load_images(uris: list[str], size: int, resize: int | None = None,
                storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """(N, size, size, 3) uint8 images from any URIs (local or object storage), resized (and
    centre-cropped from ``resize``)."""
    return np.stack([fetch_image(u, size, resize, storage_options) for u in uris])


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size window of an (H, W, ...) array at least that large."""
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {size}x{size} from an image of {image.shape[0]}x{image.shape[1]}")
    return image[top:top + size, left:left + size]


def read_mask(path: str | BinaryIO) -> np.ndarray:
    """A mask file (a path or an open binary file) as (H, W) bool, upright; any non-zero colour is
    anomalous (palette images are expanded, an alpha band is ignored)."""
    with Image.open(path) as raw:
        image = ImageOps.exif_transpose(raw)
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        values = np.asarray(image)
        if values.ndim == 3:
            colour = [i for i, band in enumerate(image.getbands()) if band != "A"]
            values = values[..., colour].max(axis=-1)
    return values > 0


def read_mask_grey(path: str | BinaryIO) -> np.ndarray:
    """A mask file as its (H, W) uint8 grey values (PIL mode "L"), upright: what the published MuSc
    code resamples."""
    with Image.open(path) as raw:
        return np.asarray(ImageOps.exif_transpose(raw).convert("L"))


def resize_grey_mask(grey: np.ndarray, size: int, rule: Literal["bilinear_full", "bilinear_any"]) -> np.ndarray:
    """(H, W) uint8 grey mask -> size x size bool: PIL's bilinear resampling (antialiased when it
    shrinks, rounded to 8 bits), then the pixels equal to 255 ("bilinear_full") or above 0
    ("bilinear_any"); see ``MaskResize``."""
    if grey.shape != (size, size):
        grey = np.asarray(Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR))
    return grey == 255 if rule == "bilinear_full" else grey > 0


def resize_mask(mask: np.ndarray, size: int, resize: int | None = None) -> np.ndarray:
    """A bool mask resized to size x size with nearest-neighbour sampling (no new values), or to
    ``resize`` x ``resize`` and centre-cropped to size x size, as ``load_image`` does the image."""
    side = resize or size
    if mask.shape != (side, side):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 127
    return center_crop(mask, size) if resize else mask
