"""Synthetic generator: deterministic, MVTec layout, exact masks, every defect kind, no silent overwrite."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.products import BOARD_BARE, BOARD_LAYOUT, board_pitch
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
    assert written == {kind for c in DEFAULT_CATEGORIES for kind in DEFECTS[c]}
    assert {kind for kinds in DEFECTS.values() for kind in kinds} == set(DEFECT_KINDS)


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


def _structures(image: np.ndarray) -> np.ndarray:
    """The board's vias and chips: every pixel that is not the green substrate."""
    r, g = image[..., 0].astype(int), image[..., 1].astype(int)
    return g < r + 30


def _place(size: int, row: int, col: int) -> tuple[int, int]:
    """Pixel (x, y) of a fixture place of the unposed board."""
    rows, cols = BOARD_LAYOUT.shape
    return (round(size / 2 + (col - cols // 2) * board_pitch(size)),
            round(size / 2 + (row - rows // 2) * board_pitch(size)))


def test_fixtured_board_is_pixel_aligned_across_seeds_and_the_posed_one_is_not():
    fixtured = [_structures(render_image("board", SIZE, seed)[0]) for seed in range(3)]
    posed = [_structures(render_image("board_posed", SIZE, seed)[0]) for seed in range(3)]
    for a, b in zip(fixtured, fixtured[1:]):
        assert (a ^ b).mean() < 0.01  # antialiased edges under noise at most
    for a, b in zip(posed, posed[1:]):
        assert (a ^ b).mean() > 0.1
    assert 0.2 < fixtured[0].mean() < 0.5
    for row, col in BOARD_BARE:  # the fixture's bare places are bare in every photo
        x, y = _place(SIZE, row, col)
        assert not any(s[y - 3:y + 4, x - 3:x + 4].any() for s in fixtured)


def test_misplaced_structure_lies_where_the_fixture_has_none_and_copies_a_normal_one():
    bare = {_place(SIZE, row, col) for row, col in BOARD_BARE}
    pitch = round(board_pitch(SIZE))
    half = pitch // 2
    for seed in range(4):
        image, mask = render_image("board", SIZE, seed, "misplaced_structure")
        normal = render_image("board", SIZE, seed)[0]
        assert not (mask & _structures(normal)).any()
        ys, xs = np.nonzero(mask)
        x, y = round(xs.mean()), round(ys.mean())
        assert min(abs(x - bx) + abs(y - by) for bx, by in bare) <= 1
        assert (_structures(image) == (_structures(normal) | mask)).mean() > 0.999

        def crop(picture: np.ndarray, cx: int) -> np.ndarray:
            return picture[y - half:y + half, cx - half:cx + half].astype(float).mean(axis=-1).ravel()

        # the same structure one place along its row: a copy of it, up to texture, light and noise
        assert np.corrcoef(crop(image, x), crop(image, x + pitch))[0, 1] > 0.9
        assert np.corrcoef(crop(image, x), crop(normal, x))[0, 1] < 0.5  # and unlike the bare place


def test_brightness_brightens_one_products_images_and_leaves_its_masks(tmp_path):
    """demo.brightness (docs/nights.md's drifted night): every pixel of the named product times the factor,
    rounded and clipped; the other products and every mask as without it."""
    kwargs = {"categories": ["weave", "disc"], "n_train": 0, "n_test_good": 1, "n_test_defect": 1, "image_size": 64}
    generate_dataset(str(tmp_path / "plain"), **kwargs)
    generate_dataset(str(tmp_path / "bright"), brightness={"weave": 1.15}, **kwargs)
    for path in sorted((tmp_path / "plain").rglob("*.png")):
        plain = np.asarray(Image.open(path)).astype(np.float64)
        bright = np.asarray(Image.open(tmp_path / "bright" / path.relative_to(tmp_path / "plain")))
        brightened = path.parts[-4] == "weave" and "ground_truth" not in path.parts
        expected = np.clip(np.rint(plain * 1.15), 0, 255) if brightened else plain
        assert np.array_equal(bright, expected), path
