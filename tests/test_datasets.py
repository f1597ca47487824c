"""Dataset readers: the four benchmark layouts, image modes, masks and error messages.

The layouts are built in the test from one small synthetic MVTec-layout set by copying and renaming
files the way each benchmark stores them, so every sample's true label, defect type and mask is known.
"""

import csv
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.benchmarks import LAYOUTS, Sample, list_categories, load_mask, read_split
from pipeline.data.images import UnreadableImage, fetch_image, load_image
from pipeline.data.synthetic import generate_dataset

SIZE = 64
N_TRAIN, N_GOOD, N_DEFECT = 2, 3, 4
SHARED_MVTEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_ad"


@dataclass
class Truth:
    """What one image of a built layout really is."""

    label: int
    defect_type: str
    source_image: Path
    source_mask: Path | None


@dataclass
class Built:
    """A dataset root in one layout and the truth about every image in it, by (category, split)."""

    root: Path
    kwargs: dict = field(default_factory=dict)
    truth: dict[tuple[str, str], dict[str, Truth]] = field(default_factory=dict)

    def add(self, category: str, split: str, image: Path, truth: Truth) -> None:
        self.truth.setdefault((category, split), {})[str(image)] = truth


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _convert(source: Path, target: Path) -> None:
    """Copy an image, re-encoded by the target's extension (png, bmp, jpg)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.save(target, format={".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG"}[target.suffix.lower()], quality=95)


def _source_images(root: Path, category: str) -> dict[str, list[tuple[Path, str, Path | None]]]:
    """The synthetic set's files, read straight from disk: split -> [(image, defect type, mask)]."""
    base = root / category
    listed: dict[str, list[tuple[Path, str, Path | None]]] = {"train": [], "test": []}
    for split in listed:
        for type_dir in sorted((base / split).iterdir()):
            for image in sorted(type_dir.glob("*.png")):
                masks = base / "ground_truth" / type_dir.name
                mask = None if type_dir.name == "good" else masks / f"{image.stem}_mask.png"
                listed[split].append((image, type_dir.name, mask))
    return listed


def _build_mvtec_like(source: Path, root: Path) -> Built:
    """MVTec AD and MPDD share one layout: a plain copy."""
    shutil.copytree(source, root)
    built = Built(root)
    for category in ("disc", "weave"):
        for split, items in _source_images(source, category).items():
            for image, defect_type, mask in items:
                built.add(category, split, root / image.relative_to(source),
                          Truth(int(defect_type != "good"), defect_type, image, mask))
    return built


def _build_btad(source: Path, root: Path) -> Built:
    """BTAD: ok/ko folders; 01 has bmp images and png masks, 02 png and png, 03 bmp and bmp.

    One ko image of 02 loses its mask, to check that an anomaly without a mask file reads as such.
    """
    built = Built(root)
    variants = {"01": ("weave", ".bmp", ".png"), "02": ("disc", ".png", ".png"), "03": ("weave", ".bmp", ".bmp")}
    for category, (origin, image_ext, mask_ext) in variants.items():
        for split, items in _source_images(source, origin).items():
            defects = [n for n, item in enumerate(items) if item[2] is not None]
            maskless = defects[0] if category == "02" and defects else None
            for n, (image, defect_type, mask) in enumerate(items):
                folder = "ok" if defect_type == "good" else "ko"
                target = root / category / split / folder / f"{n:04d}{image_ext}"
                _convert(image, target)
                if mask is not None and n != maskless:
                    _convert(mask, root / category / "ground_truth" / "ko" / f"{n:04d}{mask_ext}")
                else:
                    mask = None
                defect_type = "good" if folder == "ok" else "ko"
                built.add(category, split, target, Truth(int(folder == "ko"), defect_type, image, mask))
    return built


def _build_visa(source: Path, root: Path) -> Built:
    """VisA: JPEG images, masks stored 0/255 (candle) or 0/1 (pcb1), a split CSV listing everything."""
    built = Built(root, {"split_csv": str(root / "split_csv" / "1cls.csv")})
    rows = []
    for category, origin, mask_value in (("candle", "weave", 255), ("pcb1", "disc", 1)):
        for split, items in _source_images(source, origin).items():
            for n, (image, defect_type, mask) in enumerate(items):
                kind = "Normal" if defect_type == "good" else "Anomaly"
                relative = f"{category}/Data/Images/{kind}/{split}{n:03d}.JPG"
                _convert(image, root / relative)
                mask_relative = ""
                if mask is not None:
                    mask_relative = f"{category}/Data/Masks/Anomaly/{split}{n:03d}.png"
                    (root / mask_relative).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(((_pixels(mask) > 0) * mask_value).astype(np.uint8)).save(root / mask_relative)
                rows.append([category, split, "normal" if mask is None else "anomaly", relative, mask_relative])
                built.add(category, split, root / relative,
                          Truth(int(mask is not None), "good" if mask is None else "anomaly", image, mask))
    (root / "split_csv").mkdir()
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["object", "split", "label", "image", "mask"], *rows])
    return built


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Built]:
    base = tmp_path_factory.mktemp("layouts")
    source = base / "synthetic"
    generate_dataset(str(source), categories=["weave", "disc"], n_train=N_TRAIN, n_test_good=N_GOOD,
                     n_test_defect=N_DEFECT, image_size=SIZE, seed=1)
    return {
        "mvtec": _build_mvtec_like(source, base / "mvtec"),
        "mpdd": _build_mvtec_like(source, base / "mpdd"),
        "btad": _build_btad(source, base / "btad"),
        "visa": _build_visa(source, base / "visa"),
    }


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_split_finds_every_image_with_its_truth(layouts, layout):
    built = layouts[layout]
    categories = sorted({category for category, _ in built.truth})
    assert list_categories(str(built.root), layout, **built.kwargs) == categories
    for (category, split), truth in built.truth.items():
        samples = read_split(str(built.root), layout, category, split, **built.kwargs)
        assert len(samples) == (N_TRAIN if split == "train" else N_GOOD + N_DEFECT)
        assert sorted(s.image_path for s in samples) == sorted(truth)
        assert samples == sorted(samples, key=lambda s: (s.defect_type, s.image_path))
        assert samples == read_split(str(built.root), layout, category, split, **built.kwargs)
        assert sum(s.label for s in samples) == (0 if split == "train" else N_DEFECT)
        for sample in samples:
            expected = truth[sample.image_path]
            assert sample.category == category
            assert (sample.label, sample.defect_type) == (expected.label, expected.defect_type)
            assert (sample.mask_path is None) == (expected.source_mask is None)
            mask = load_mask(sample)
            assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
            if expected.source_mask is None:
                assert not mask.any()
            else:
                assert Path(sample.mask_path).is_file()
                np.testing.assert_array_equal(mask, _pixels(expected.source_mask) > 0)


def test_defect_types_of_the_folder_layouts(layouts):
    samples = read_split(str(layouts["mvtec"].root), "mvtec", "disc")
    assert [s.defect_type for s in samples] == ["extra_part", "good", "good", "good", "missing_part",
                                                "scratch", "scratch"]
    assert all(s.mask_path.endswith(f"ground_truth/{s.defect_type}/{Path(s.image_path).stem}_mask.png")
               for s in samples if s.label)
    btad = {c: read_split(str(layouts["btad"].root), "btad", c) for c in ("01", "02", "03")}
    assert {Path(s.mask_path).suffix for s in btad["01"] if s.label} == {".png"}
    assert {Path(s.mask_path).suffix for s in btad["03"] if s.label} == {".bmp"}
    assert [s.mask_path is None for s in btad["02"] if s.label] == [True, False, False, False]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_image_and_resized_mask(layouts, layout):
    built = layouts[layout]
    category = sorted({c for c, _ in built.truth})[0]
    for sample in read_split(str(built.root), layout, category, "test", **built.kwargs):
        truth = built.truth[(category, "test")][sample.image_path]
        image = load_image(sample.image_path)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        error = np.abs(image.astype(int) - _pixels(truth.source_image).astype(int)).mean()
        assert error < (6 if layout == "visa" else 1e-9)  # JPEG is lossy, png and bmp are not
        assert load_image(sample.image_path, 32).shape == (32, 32, 3)
        small = load_mask(sample, 32)
        assert small.shape == (32, 32) and small.dtype == bool
        assert small.any() == (truth.source_mask is not None)


def _save_with_orientation(array: np.ndarray, path: Path, orientation: int) -> None:
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


def test_image_modes_load_as_rgb_uint8(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(load_image(str(tmp_path / "grey.png")), np.repeat(grey[..., None], 3, axis=-1))

    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(str(tmp_path / "rgba.png")), rgba[..., :3])

    deep = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(3, axis=0)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as reopened:
        assert reopened.mode.startswith("I")
    loaded = load_image(str(tmp_path / "deep.png"))
    assert loaded.dtype == np.uint8 and loaded.shape == (3, 4, 3)
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 1, 128, 255])

    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as palette:
        expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(load_image(str(tmp_path / "palette.png")), expected)

    Image.fromarray(rgb).save(tmp_path / "upper.TIFF")
    np.testing.assert_array_equal(load_image(str(tmp_path / "upper.TIFF")), rgb)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:5, :5] = (255, 0, 0)  # red top-left corner as stored
    array[-5:, -5:] = (0, 0, 255)
    _save_with_orientation(array, tmp_path / "rotated.png", 6)  # 6: display rotated 90 degrees clockwise
    upright = load_image(str(tmp_path / "rotated.png"))
    np.testing.assert_array_equal(upright, np.rot90(array, k=-1))
    assert upright.shape == (40, 20, 3) and tuple(upright[0, -1]) == (255, 0, 0)
    assert load_image(str(tmp_path / "rotated.png"), 16).shape == (16, 16, 3)
    normal = Sample(str(tmp_path / "rotated.png"), "c", 0, "good", None)
    assert load_mask(normal).shape == (40, 20)  # the upright image's shape, read from the header
    assert load_mask(normal, shape=(7, 9)).shape == (7, 9)
    assert load_mask(normal, size=12).shape == (12, 12)


def test_mask_values_and_shape_check(tmp_path):
    values = np.zeros((8, 8), dtype=np.uint8)
    values[2:4, 3:6] = 1
    Image.fromarray(values).save(tmp_path / "m01.png")
    Image.fromarray(np.stack([values * 200] * 3 + [np.full_like(values, 255)], axis=-1)).save(tmp_path / "rgba.png")
    for name in ("m01.png", "rgba.png"):
        sample = Sample("unused.png", "c", 1, "x", str(tmp_path / name))
        np.testing.assert_array_equal(load_mask(sample), values > 0)
        assert load_mask(sample, size=16).sum() == 4 * 6  # nearest neighbour doubles each side
    with pytest.raises(ValueError, match=r"m01\.png is 8x8, but the image shape was given as 10x8"):
        load_mask(Sample("unused.png", "c", 1, "x", str(tmp_path / "m01.png")), shape=(10, 8))


def test_errors_name_what_is_wrong(layouts, tmp_path):
    mvtec = str(layouts["mvtec"].root)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"dataset root {missing} does not exist"):
        read_split(str(missing), "mvtec", "disc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_categories(str(missing), "btad")
    expected_layouts = r"\('mvtec', 'visa', 'btad', 'mpdd'\)"
    with pytest.raises(ValueError, match=rf"unknown layout 'kolektor'; expected one of {expected_layouts}"):
        list_categories(mvtec, "kolektor")
    with pytest.raises(ValueError, match=r"unknown category 'bottle' in .*available: \['disc', 'weave'\]"):
        read_split(mvtec, "mvtec", "bottle")
    with pytest.raises(ValueError, match=r"unknown split 'val'"):
        read_split(mvtec, "mvtec", "disc", "val")
    with pytest.raises(ValueError, match="split_csv is only used by the 'visa' layout"):
        read_split(mvtec, "mvtec", "disc", split_csv="x.csv")

    empty = tmp_path / "empty"
    (empty / "cable" / "test" / "good").mkdir(parents=True)
    (empty / "cable" / "test" / "good" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"no images in .*cable/test: expected .*<defect_type>/\*"):
        read_split(str(empty), "mvtec", "cable")
    with pytest.raises(FileNotFoundError, match=r"no mvtec categories found in"):
        list_categories(str(tmp_path / "empty" / "cable" / "test"), "mvtec")


def test_visa_errors(layouts, tmp_path):
    visa = layouts["visa"]
    with pytest.raises(FileNotFoundError, match=r"VisA split CSV .*1cls\.csv not found"):
        list_categories(str(tmp_path), "visa")
    assert list_categories(str(visa.root), "visa") == ["candle", "pcb1"]  # the default CSV location
    with pytest.raises(ValueError, match=r"unknown category 'capsules' .*available: \['candle', 'pcb1'\]"):
        read_split(str(visa.root), "visa", "capsules")
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("object,split,image\ncandle,test,a.JPG\n")
    with pytest.raises(ValueError, match=r"lacks columns \['label', 'mask'\]"):
        read_split(str(visa.root), "visa", "candle", split_csv=str(bad_header))
    dangling = tmp_path / "dangling.csv"
    dangling.write_text("object,split,label,image,mask\ncandle,test,anomaly,candle/gone.JPG,candle/gone.png\n")
    with pytest.raises(FileNotFoundError, match=r"2 files listed in .*dangling\.csv for 'candle' do not exist"):
        read_split(str(visa.root), "visa", "candle", split_csv=str(dangling))
    bad_label = tmp_path / "label.csv"
    bad_label.write_text("object,split,label,image,mask\ncandle,test,defect,a.JPG,\n")
    with pytest.raises(ValueError, match=r"line 2: label 'defect' is not one of \['normal', 'anomaly'\]"):
        read_split(str(visa.root), "visa", "candle", split_csv=str(bad_label))


def test_real_mvtec_bottle():
    root = SHARED_MVTEC
    if not (root / "bottle" / "test").is_dir():
        pytest.skip(f"MVTec AD bottle absent: {root}")
    assert "bottle" in list_categories(str(root), "mvtec")
    samples = read_split(str(root), "mvtec", "bottle")
    assert len(samples) == 83
    assert sum(s.label == 0 for s in samples) == 20
    anomalous = [s for s in samples if s.label]
    assert len(anomalous) == 63
    assert all(s.mask_path is not None and Path(s.mask_path).is_file() for s in anomalous)
    assert {s.defect_type for s in anomalous} == {"broken_large", "broken_small", "contamination"}
    assert all(s.mask_path is None for s in samples if s.label == 0)
    train = read_split(str(root), "mvtec", "bottle", "train")
    assert train and all(s.label == 0 and s.defect_type == "good" for s in train)
    image = load_image(anomalous[0].image_path)
    assert image.shape == (900, 900, 3) and image.dtype == np.uint8
    assert load_image(anomalous[0].image_path, 224).shape == (224, 224, 3)
    full = load_mask(anomalous[0])
    assert full.shape == (900, 900) and full.any()
    small = load_mask(anomalous[0], 224)
    assert small.shape == (224, 224) and abs(small.mean() - full.mean()) < 0.01


def test_deep_tiffs_are_scaled_or_refused_never_black_or_white(tmp_path):
    """32-bit float and integer TIFFs used to decode as all black / all white and be scored 'ok'."""
    ramp = np.linspace(0.0, 1.0, 4, dtype=np.float32)[None].repeat(3, axis=0)
    Image.fromarray(ramp).save(tmp_path / "float.tif")
    np.testing.assert_array_equal(load_image(str(tmp_path / "float.tif"))[0, :, 0], [0, 85, 170, 255])
    wide = np.array([[0, 257, 32896, 65535]], dtype=np.int32).repeat(3, axis=0)
    Image.fromarray(wide).save(tmp_path / "int32.tif")
    with Image.open(tmp_path / "int32.tif") as reopened:
        assert reopened.mode == "I"
    np.testing.assert_array_equal(load_image(str(tmp_path / "int32.tif"))[0, :, 0], [0, 1, 128, 255])

    Image.fromarray(ramp * 1000).save(tmp_path / "float-wide.tif")
    Image.fromarray(wide * 100).save(tmp_path / "int32-wide.tif")
    for name, words in (("float-wide.tif", "32-bit float image with values in [0, 1000]"),
                        ("int32-wide.tif", "32-bit integer image with values in [0, 6553500]")):
        with pytest.raises(UnreadableImage, match=re.escape(f"ValueError: {words}")):
            fetch_image(str(tmp_path / name), 16)


def test_a_huge_16_bit_image_is_converted_at_the_model_size(tmp_path):
    """A 16-bit PNG was converted to float64 at full size (13000 px square: 4.6 GB); numbers are now
    converted after resizing, so numpy holds well under one byte per source pixel."""
    import tracemalloc

    side = 3000
    deep = (np.arange(side, dtype=np.uint32)[None].repeat(side, axis=0) * 21).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "huge.png")
    tracemalloc.start()
    image = load_image(str(tmp_path / "huge.png"), 64)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert image.shape == (64, 64, 3) and peak < side * side // 8, peak
    assert image[0, 0, 0] < 10 and image[0, -1, 0] > 240  # scaled from 16 bits, not clipped


def test_decode_errors_read_the_same_on_every_run(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    messages = set()
    for _ in range(2):
        with pytest.raises(UnreadableImage) as info:
            fetch_image(str(tmp_path / "text.png"), 16)
        messages.add(str(info.value))
    assert messages == {"UnidentifiedImageError: cannot identify image file"}
    with pytest.raises(UnreadableImage, match="FileNotFoundError"):
        fetch_image(str(tmp_path / "absent.png"), 16)
