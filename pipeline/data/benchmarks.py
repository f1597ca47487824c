"""Readers for the folder layouts of the public anomaly-detection benchmarks.

Every layout is read into the same list of ``Sample`` records, so the evaluation code never needs
to know where a benchmark keeps its files:

- ``mvtec`` (MVTec AD) and ``mpdd`` (MPDD): ``<root>/<category>/train/good/*``,
  ``<root>/<category>/test/<defect_type>/*`` (``good`` is normal) and
  ``<root>/<category>/ground_truth/<defect_type>/<stem>_mask.png``.
- ``btad`` (BTAD): ``<root>/<category>/train/ok/*``, ``<root>/<category>/test/{ok,ko}/*`` and
  ``<root>/<category>/ground_truth/ko/<stem>.{png,bmp}``.
- ``visa`` (VisA): the split CSV its authors ship (default ``<root>/split_csv/1cls.csv``) with the
  columns ``object,split,label,image,mask``; paths in it are relative to ``<root>``.

Images are returned as RGB uint8 whatever their stored mode, upright (EXIF orientation applied);
masks as boolean arrays where any non-zero value is anomalous (VisA stores 0/1 or 0/255).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import UserError
from ..settings import DatasetConfig, SyntheticConfig
from .images import (
    IMAGE_EXTENSIONS,
    Fit,
    MaskResize,
    load_image,
    pad_array,
    read_mask,
    read_mask_grey,
    resize_grey_mask,
    resize_mask,
)

LAYOUTS = ("mvtec", "visa", "btad", "mpdd")
SPLITS = ("train", "test")


class DatasetError(UserError, ValueError):
    """A dataset the evaluation or a sweep cannot read as it is; the one-line message names the file or
    key and the fix (a ``UserError``: the programs print it and exit 2)."""


class MissingDataError(DatasetError, FileNotFoundError):
    """A dataset root, split, split file or listed image that is not there."""


# Folder layouts: the name of the normal folder and how a mask file is named after its image.
_NORMAL_DIR = {"mvtec": "good", "mpdd": "good", "btad": "ok"}
_MASK_SUFFIX = {"mvtec": "_mask", "mpdd": "_mask", "btad": ""}
_MASK_EXTENSIONS = {"mvtec": (".png",), "mpdd": (".png",), "btad": (".png", ".bmp")}
_VISA_COLUMNS = ("object", "split", "label", "image", "mask")
_VISA_LABELS = {"normal": 0, "anomaly": 1}


@dataclass(frozen=True)
class Sample:
    """One image of a split, with its ground truth."""

    image_path: str
    category: str
    label: int  # 0 normal, 1 anomalous
    defect_type: str  # "good" for normal images
    mask_path: str | None  # None for normal images (and anomalous ones without a mask file)


def list_categories(root: str, layout: str, *, split_csv: str | None = None) -> list[str]:
    """The categories (objects) of a dataset, sorted; raises when there are none."""
    root_path = _check_root(root, layout, split_csv)
    if layout == "visa":
        csv_path, rows = _read_visa_csv(root_path, split_csv)
        categories = sorted({row["object"] for row in rows})
        where = str(csv_path)
    else:
        categories = sorted(
            d.name for d in root_path.iterdir()
            if d.is_dir() and not d.name.startswith(".") and any((d / s).is_dir() for s in SPLITS)
        )
        where = f"{root_path} (expected {root_path}/<category>/train or test)"
    if not categories:
        raise MissingDataError(f"no {layout} categories found in {where}")
    return categories


def check_dataset(dataset: DatasetConfig, synthetic: SyntheticConfig, role: str = "dataset") -> None:
    """Before any work: the dataset is there in its layout, with every named category, unless it
    is to be generated (``synthetic`` enabled and the root absent). ``role`` is the config key."""
    if synthetic.enabled and not Path(dataset.root).exists():
        return
    generate = "synthetic" if role == "dataset" else f"{role}_synthetic"
    if not Path(dataset.root).is_dir():
        raise DatasetError(f"{role}.root {dataset.root}: no such folder; set {role}.root=/path/to/the/dataset "
                           f"({dataset.layout} layout), or enable {generate} to generate one")
    try:
        available = list_categories(dataset.root, dataset.layout, split_csv=dataset.split_csv)
    except DatasetError as err:
        raise DatasetError(f"{role}.root: {err}") from None
    unknown = [c for c in dataset.categories or [] if c not in available]
    if unknown:
        raise DatasetError(f"{role}.categories: {unknown} not in {dataset.root} ({dataset.layout} layout); "
                           f"available: {available}")


def read_split(root: str, layout: str, category: str, split: str = "test", *,
               split_csv: str | None = None) -> list[Sample]:
    """All samples of one category's split, sorted by (defect type, image path).

    ``split_csv`` is for the ``visa`` layout only (the folder layouts reject it rather than ignore it).
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    root_path = _check_root(root, layout, split_csv)
    if layout == "visa":
        samples = _read_visa(root_path, category, split, split_csv)
    elif (root_path / category).is_dir():
        samples = _read_folders(root_path, layout, category, split)
    else:
        available = list_categories(root, layout)
        raise DatasetError(f"unknown category {category!r} in {root} ({layout} layout); available: {available}")
    return sorted(samples, key=lambda s: (s.defect_type, s.image_path))


def train_references(root: str, layout: str, category: str, count: int, size: int, resize: int | None = None,
                     split_csv: str | None = None, fit: Fit = "squash") -> np.ndarray:
    """Known-good references for few-shot scoring: the first ``count`` normal train images of a
    category, (n, S, S, 3) uint8, made square as the test images are (``fit``)."""
    normals = [s for s in read_split(root, layout, category, "train", split_csv=split_csv) if not s.label][:count]
    if not normals:
        raise DatasetError(f"few-shot scoring needs normal train images of {category!r} under {root}; there are none")
    return np.stack([load_image(s.image_path, size, resize, fit) for s in normals])


def load_mask(sample: Sample, size: int | None = None, shape: tuple[int, int] | None = None,
              resampling: MaskResize = "nearest", fit: Fit = "squash") -> np.ndarray:
    """A sample's ground truth as (H, W) bool, any non-zero value anomalous; all False without a mask.

    With ``size`` the mask is resized to size x size by ``resampling`` (default nearest neighbour;
    the bilinear rules read the file's grey values, as the published MuSc code does), after padding
    it to a square as its image is with ``fit="pad"``, so that it stays on the defect. Without it, a
    mask file keeps its own size and a sample without one gets ``shape`` (H, W) or, when ``shape`` is
    None too, the size of its upright image (read from the file header). ``shape`` given alongside a
    mask file must match it: a mismatch means the mask does not belong to the image.
    """
    if sample.mask_path is None:
        if size is not None:
            return np.zeros((size, size), dtype=bool)
        if shape is None:
            with Image.open(sample.image_path) as raw:
                width, height = ImageOps.exif_transpose(raw).size
            shape = (height, width)
        return np.zeros(tuple(shape), dtype=bool)
    square = pad_array if size is not None and fit == "pad" else (lambda values: values)
    if size is not None and resampling != "nearest":
        return resize_grey_mask(square(read_mask_grey(sample.mask_path)), size, resampling)
    mask = read_mask(sample.mask_path)
    if size is not None:
        mask = resize_mask(square(mask), size)
    elif shape is not None and mask.shape != tuple(shape):
        raise DatasetError(f"mask {sample.mask_path} is {mask.shape[0]}x{mask.shape[1]}, "
                         f"but the image shape was given as {shape[0]}x{shape[1]}")
    return mask


def _check_root(root: str, layout: str, split_csv: str | None) -> Path:
    """Validate the layout name, that split_csv goes with VisA only, and that the root is a directory."""
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if split_csv is not None and layout != "visa":
        raise DatasetError(f"split_csv is only used by the 'visa' layout, got it with layout {layout!r}")
    path = Path(root)
    if not path.is_dir():
        raise MissingDataError(f"dataset root {path} does not exist or is not a directory")
    return path


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _read_folders(root: Path, layout: str, category: str, split: str) -> list[Sample]:
    """MVTec / MPDD / BTAD: one folder per defect type, masks found by the image's stem."""
    split_dir = root / category / split
    normal = _NORMAL_DIR[layout]
    samples = []
    type_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir()) if split_dir.is_dir() else []
    for type_dir in type_dirs:
        masks = _mask_index(root / category / "ground_truth" / type_dir.name, layout)
        for image in sorted(p for p in type_dir.iterdir() if _is_image(p)):
            is_normal = type_dir.name == normal
            mask = None if is_normal else masks.get(image.stem + _MASK_SUFFIX[layout])
            if mask is None and not is_normal:
                _refuse_misnamed_mask(image, masks, layout)
            samples.append(Sample(
                image_path=str(image),
                category=category,
                label=0 if is_normal else 1,
                defect_type="good" if is_normal else type_dir.name,
                mask_path=None if mask is None else str(mask),
            ))
    if not samples:
        raise MissingDataError(
            f"no images in {split_dir}: expected {split_dir}/<defect_type>/*{{{','.join(IMAGE_EXTENSIONS)}}} "
            f"with '{normal}' for normal images"
        )
    return samples


def _refuse_misnamed_mask(image: Path, masks: dict[str, Path], layout: str) -> None:
    """A defective image without its mask, next to a mask named by another layout's rule (``000.png``
    for ``000_mask.png``): every pixel metric would silently become n/a, so refuse with the rename."""
    expected = image.stem + _MASK_SUFFIX[layout]
    for other in {image.stem, image.stem + "_mask"} - {expected}:
        if other in masks:
            found = masks[other]
            raise DatasetError(f"{found} looks like the mask of {image}, but {layout} masks are named "
                             f"<stem>{_MASK_SUFFIX[layout]}<ext>: rename it to {expected}{found.suffix} "
                             f"(and the other masks of {found.parent} likewise)")


def _mask_index(mask_dir: Path, layout: str) -> dict[str, Path]:
    """Mask files of one defect folder by stem (first in name order if a stem has several extensions)."""
    if not mask_dir.is_dir():
        return {}
    index: dict[str, Path] = {}
    for path in sorted(mask_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in _MASK_EXTENSIONS[layout]:
            index.setdefault(path.stem, path)
    return index


def _read_visa_csv(root: Path, split_csv: str | None) -> tuple[Path, list[dict[str, str]]]:
    """The rows of a VisA split CSV, after checking its header."""
    csv_path = Path(split_csv) if split_csv is not None else root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise MissingDataError(
            f"VisA split CSV {csv_path} not found; pass split_csv (columns {','.join(_VISA_COLUMNS)})"
        )
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"VisA split CSV {csv_path} lacks columns {missing}; "
                             f"expected header {','.join(_VISA_COLUMNS)}, got {reader.fieldnames}")
        return csv_path, list(reader)


def _read_visa(root: Path, category: str, split: str, split_csv: str | None) -> list[Sample]:
    """VisA: the CSV rows of one object and split; every listed file must exist."""
    csv_path, rows = _read_visa_csv(root, split_csv)
    available = sorted({row["object"] for row in rows})
    if category not in available:
        raise DatasetError(f"unknown category {category!r} in {csv_path} (visa layout); available: {available}")
    samples = []
    for line, row in enumerate(rows, start=2):
        if row["object"] != category or row["split"] != split:
            continue
        if row["label"] not in _VISA_LABELS:
            raise DatasetError(f"{csv_path} line {line}: label {row['label']!r} is not one of {list(_VISA_LABELS)}")
        label = _VISA_LABELS[row["label"]]
        mask = row["mask"].strip()
        samples.append(Sample(
            image_path=str(root / row["image"]),
            category=category,
            label=label,
            defect_type="anomaly" if label else "good",
            mask_path=str(root / mask) if label and mask else None,
        ))
    if not samples:
        raise MissingDataError(f"no {split} images of {category!r} listed in {csv_path}")
    missing = [p for s in samples for p in (s.image_path, s.mask_path) if p is not None and not Path(p).is_file()]
    if missing:
        raise MissingDataError(f"{len(missing)} files listed in {csv_path} for {category!r} do not exist, "
                                f"e.g. {missing[:3]}")
    return samples
