"""A benchmark split checked before any scoring: every input the evaluation could not use as it is
surfaces here, not after minutes of scoring or never.

Each problem is either a one-line refusal (``SplitError``) that names the file and the fix, or a
counted skip that the evaluation reports (``CheckedSplit``):

- a file that does not decode (a truncated PNG, a corrupt JPEG): refused, naming it;
- a mask whose aspect ratio differs from its image's: refused (resizing it would misplace every
  defect pixel); a mask of the image's aspect at another resolution is fine;
- test images of very different aspect ratios: refused when asked (``dataset.resize: refuse``: each is
  squashed to the square model input by a different amount, so the same part looks different in
  each); otherwise squashed or padded, and their range recorded (``CheckedSplit.aspect_range``);
- a category with no anomalous (or no normal) test image: refused (image AUROC needs both);
- a defective image without a mask file: left out of the pixel metrics, counted and reported.

Masks named after another layout's rule (``<stem>.png`` where ``<stem>_mask.png`` is expected) are
refused by ``benchmarks.read_split`` already.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .benchmarks import DatasetError, Sample

# a mask's aspect ratio may differ from its image's by this factor (sizes rounded when masks were made)
MASK_ASPECT_TOLERANCE = 1.02
# test images of one category whose aspect ratios differ by more than this factor are refused
MAX_ASPECT_SPREAD = 1.25
# EXIF orientations that swap width and height
_TRANSPOSED = (5, 6, 7, 8)
Mapper = Callable[[Callable[[str], tuple[int, int]], Iterable[str]], Iterator[tuple[int, int]]]


class SplitError(DatasetError):
    """A split the evaluation cannot use as it is; the one-line message names the file and the fix."""


@dataclass(frozen=True)
class CheckedSplit:
    """A category's test samples after ``check_split``; ``unmasked`` are the defective images without a
    mask file, which the pixel metrics leave out (their image scores still count)."""

    category: str
    samples: list[Sample]
    unmasked: tuple[str, ...]
    sizes: dict[str, tuple[int, int]]  # image path -> upright (width, height)

    def aspect_range(self) -> tuple[float, float]:
        """The narrowest and widest aspect ratio (width / height) among the test images."""
        ratios = [_aspect(size) for size in self.sizes.values()]
        return min(ratios), max(ratios)

    def has_pixel_truth(self) -> list[bool]:
        """Per sample: does it take part in the pixel metrics (normal, or defective with a mask)?"""
        return [not (s.label and s.mask_path is None) for s in self.samples]

    def line(self) -> str | None:
        """The console line about what was left out, or None when nothing was."""
        if not self.unmasked:
            return None
        return (f"  pixel metrics leave out {len(self.unmasked)} defective images without a mask file, "
                f"e.g. {self.unmasked[0]}")

    def as_dict(self) -> dict[str, object]:
        """What ``metrics.json`` records under ``skipped``."""
        return {"defective_without_mask": len(self.unmasked), "files": list(self.unmasked)}


def decoded_size(path: str) -> tuple[int, int]:
    """The upright (width, height) of an image file after decoding all of it (PNG: every chunk's
    checksum, without inflating the pixels); raises SplitError naming the file when it does not decode."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                image.load()
        with Image.open(path) as image:  # verify leaves the file unusable: the header again
            width, height = image.size
            if image.getexif().get(0x0112) in _TRANSPOSED:
                width, height = height, width
    except (OSError, SyntaxError, ValueError) as err:
        raise SplitError(f"{path} does not decode ({type(err).__name__}: {err}): replace the file or remove it "
                         "from the split") from None
    return width, height


def _aspect(size: tuple[int, int]) -> float:
    return size[0] / size[1]


def check_split(category: str, samples: list[Sample], mapper: Mapper = map,
                refuse_mixed_aspects: bool = True) -> CheckedSplit:
    """Refuse a split the evaluation cannot use (``SplitError``) or return it with its skips counted.

    ``mapper`` decodes the files (``map`` serially; a thread pool's ``map`` in parallel);
    ``refuse_mixed_aspects``: refuse test images whose aspect ratios differ by more than ``MAX_ASPECT_SPREAD``."""
    labels = {s.label for s in samples}
    if labels != {0, 1}:
        missing, present = ("anomalous", "normal") if 1 not in labels else ("normal", "anomalous")
        raise SplitError(f"category {category!r} has no {missing} test images ({len(samples)} {present}, e.g. "
                         f"{samples[0].image_path}): image AUROC needs both; add {missing} images or leave "
                         f"{category!r} out of dataset.categories")
    sizes = dict(zip((s.image_path for s in samples), mapper(decoded_size, [s.image_path for s in samples])))
    masked = [s for s in samples if s.mask_path is not None]
    for sample, mask_size in zip(masked, mapper(decoded_size, [s.mask_path for s in masked])):
        image_size = sizes[sample.image_path]
        if abs(math.log(_aspect(mask_size) / _aspect(image_size))) > math.log(MASK_ASPECT_TOLERANCE):
            raise SplitError(f"mask {sample.mask_path} is {mask_size[0]}x{mask_size[1]} but its image "
                             f"{sample.image_path} is {image_size[0]}x{image_size[1]}: a mask of another aspect "
                             "ratio cannot be placed on its image; replace it with the image's own mask")
    narrowest = min(sizes, key=lambda p: _aspect(sizes[p]))
    widest = max(sizes, key=lambda p: _aspect(sizes[p]))
    if refuse_mixed_aspects and _aspect(sizes[widest]) / _aspect(sizes[narrowest]) > MAX_ASPECT_SPREAD:
        raise SplitError(
            f"test images of {category!r} range in aspect ratio from {_aspect(sizes[narrowest]):.2f} "
            f"({Path(narrowest).name}, {sizes[narrowest][0]}x{sizes[narrowest][1]}) to {_aspect(sizes[widest]):.2f} "
            f"({Path(widest).name}, {sizes[widest][0]}x{sizes[widest][1]}); each is squashed to the square model "
            "input by a different amount: crop them to one aspect ratio or evaluate them as separate categories "
            "(or set dataset.resize: squash or pad)")
    unmasked = tuple(s.image_path for s in samples if s.label and s.mask_path is None)
    return CheckedSplit(category, samples, unmasked, sizes)
