"""Synthetic generator: deterministic, MVTec layout, exact masks, every defect kind, no silent overwrite."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.synthetic import (
    DEFAULT_CATEGORIES,
    DEFECT_KINDS,
    DEFECTS,
    generate_dataset,
    render_image,
)

SIZE = 128
COUNTS = {"n_train": 3, "n_test_good": 3, "n_test_defect": 6}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    assert generate_dataset(str(root), image_size=SIZE, seed=3, **COUNTS) == list(DEFAULT_CATEGORIES)
    return root


def test_same_seed_same_bytes_and_categories_independent(dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(str(again), image_size=SIZE, seed=3, **COUNTS)
    assert _files(again) == _files(dataset)
    alone = tmp_path / "alone"
    generate_dataset(str(alone), categories=["plate"], image_size=SIZE, seed=3, **COUNTS)
    assert _files(alone / "plate") == _files(dataset / "plate")
    other = tmp_path / "other"
    generate_dataset(str(other), categories=["plate"], image_size=SIZE, seed=4, **COUNTS)
    assert _files(other / "plate") != _files(dataset / "plate")


@pytest.mark.parametrize("category", DEFAULT_CATEGORIES)
def test_mvtec_layout_with_masks_exactly_for_defects(dataset, category):
    base = dataset / category
    kinds = DEFECTS[category]
    assert sorted(p.name for p in (base / "train").iterdir()) == ["good"]
    assert len(list((base / "train" / "good").glob("*.png"))) == COUNTS["n_train"]
    assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *kinds])
    assert len(list((base / "test" / "good").glob("*.png"))) == COUNTS["n_test_good"]
    assert sorted(p.name for p in (base / "ground_truth").iterdir()) == sorted(kinds)
    n_defects = 0
    for kind in kinds:
        images = sorted((base / "test" / kind).glob("*.png"))
        masks = sorted((base / "ground_truth" / kind).glob("*.png"))
        assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in images]
        for image_path, mask_path in zip(images, masks):
            with Image.open(mask_path) as mask_image:
                assert mask_image.mode == "L"
            mask = _pixels(mask_path)
            assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) == {0, 255}
            assert _pixels(image_path).shape == (SIZE, SIZE, 3)
        n_defects += len(images)
    assert n_defects == COUNTS["n_test_defect"]


def test_every_defect_kind_appears(dataset):
    written = {p.name for c in DEFAULT_CATEGORIES for p in (dataset / c / "test").iterdir()} - {"good"}
    assert written == set(DEFECT_KINDS)


@pytest.mark.parametrize("category,kind", [(c, k) for c, kinds in DEFECTS.items() for k in kinds])
def test_mask_is_exactly_the_changed_pixels(category, kind):
    for seed in range(4):
        image, mask = render_image(category, SIZE, [seed, 11], kind)
        normal, empty = render_image(category, SIZE, [seed, 11])
        assert not empty.any()
        diff = np.abs(image.astype(int) - normal.astype(int)).max(axis=-1)
        assert (diff[~mask] == 0).all() and (diff[mask] > 0).all()
        assert diff[mask].mean() > 60, "defects must be clearly visible"
        assert 0.002 < mask.mean() < 0.12


def test_a_defect_seed_puts_the_same_defect_on_different_parts():
    (a, mask_a), (b, mask_b) = (render_image("weave", SIZE, seed, "spot", defect_seed=5) for seed in (1, 2))
    _, mask_c = render_image("weave", SIZE, 1, "spot")
    assert (mask_a == mask_b).all() and not (mask_a == mask_c).all()
    assert not (a == b).all()  # two parts, one defect


@pytest.mark.parametrize("category", DEFAULT_CATEGORIES)
def test_written_masks_mark_pixels_unlike_normal_images(dataset, category):
    base = dataset / category
    good = np.stack([_pixels(p) for p in sorted((base / "train" / "good").glob("*.png"))]).astype(float)
    mean_good = good.mean(axis=0)
    for kind in DEFECTS[category]:
        for image_path in sorted((base / "test" / kind).glob("*.png")):
            mask = _pixels(base / "ground_truth" / kind / f"{image_path.stem}_mask.png") > 0
            deviation = np.abs(_pixels(image_path) - mean_good).max(axis=-1)
            assert np.median(deviation[mask]) > 2 * np.median(deviation[~mask]) + 20, image_path


@pytest.mark.parametrize("category", DEFAULT_CATEGORIES)
def test_normal_images_vary_but_stay_one_product(dataset, category):
    good = [_pixels(p).astype(float) for p in sorted((dataset / category / "train" / "good").glob("*.png"))]
    for a, b in zip(good, good[1:]):
        assert np.abs(a - b).mean() > 1.0
    means = np.array([g.mean(axis=(0, 1)) for g in good])
    assert (means.std(axis=0) < 0.05 * means.mean(axis=0)).all()


def test_refuses_to_overwrite(tmp_path):
    args = {"categories": ["disc"], "n_train": 1, "n_test_good": 1, "n_test_defect": 1, "image_size": 64}
    generate_dataset(str(tmp_path), seed=0, **args)
    before = _files(tmp_path)
    with pytest.raises(FileExistsError, match="disc.*overwrite=True"):
        generate_dataset(str(tmp_path), seed=1, **args)
    assert _files(tmp_path) == before
    (tmp_path / "disc" / "stale.txt").write_text("old")
    generate_dataset(str(tmp_path), seed=1, overwrite=True, **args)
    assert not (tmp_path / "disc" / "stale.txt").exists() and _files(tmp_path) != before
    (tmp_path / "wood").mkdir()  # an existing empty folder is not refused
    generate_dataset(str(tmp_path), seed=0, **{**args, "categories": ["wood"]})


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown synthetic category 'bolt'.*'weave'"):
        generate_dataset("/nonexistent", categories=["bolt"])
    with pytest.raises(ValueError, match="n_train must be >= 0"):
        generate_dataset("/nonexistent", n_train=-1)
    with pytest.raises(ValueError, match="image_size must be >= 64"):
        render_image("disc", 32, 0)
    with pytest.raises(ValueError, match="'hole' is not drawn on 'disc'"):
        render_image("disc", 64, 0, "hole")
