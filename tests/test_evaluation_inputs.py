"""The evaluation says what it did with odd inputs: a one-line refusal naming the file and the fix
before anything is scored, or a counted and reported skip. One test per case of issue 17."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

import pipeline.evaluation.benchmark as benchmark
from pipeline.data.benchmarks import load_mask, read_split
from pipeline.data.checks import check_split
from pipeline.data.images import load_image
from pipeline.data.synthetic import generate_dataset
from pipeline.evaluation.metrics import pixel_metrics
from pipeline.settings import ConfigError, EvalConfig, config_from_dict

SIZE = 64


@pytest.fixture
def root(tmp_path) -> Path:
    generate_dataset(str(tmp_path / "data"), ["plate", "weave"], n_train=0, n_test_good=3, n_test_defect=3,
                     image_size=SIZE)
    return tmp_path / "data"


def config(root: Path, tmp_path: Path, **extra) -> EvalConfig:
    data = {"dataset": {"root": str(root), "layout": "mvtec", "categories": ["plate", "weave"]},
            "backbone": {"family": "timm_cnn", "name": "resnet18", "random_init": True, "image_size": SIZE},
            "output_dir": str(tmp_path / "out"), **extra}
    return config_from_dict(EvalConfig, data)


def refused_before_scoring(cfg: EvalConfig, monkeypatch, match: str) -> str:
    """Run the evaluation; it must refuse with ``match`` before the backbone (any scoring) is built."""
    def no_scoring(*_):
        raise AssertionError("scoring started before the refusal")

    monkeypatch.setattr(benchmark, "build_backbone", no_scoring)
    with pytest.raises(ValueError, match=match) as err:
        benchmark.run_evaluation(cfg)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_defective_image_without_a_mask_is_left_out_of_the_pixel_metrics_and_reported(root, tmp_path, capsys):
    missing = sorted((root / "weave" / "ground_truth").rglob("*_mask.png"))[0]
    missing.unlink()
    cfg = config(root, tmp_path, scorer="patchead")
    result = benchmark.run_evaluation(cfg)["weave"]
    image = next(s.image_path for s in result.samples if s.label and s.mask_path is None)
    assert result.split.unmasked == (image,)
    keep = [s.image_path != image for s in result.samples]
    masks = np.stack([load_mask(s, SIZE) for s in result.samples])
    expected = pixel_metrics(result.maps[keep], masks[keep])  # without it, as if its pixels were never seen
    assert result.metrics["pixel_auroc"] == pytest.approx(expected["pixel_auroc"])
    assert result.metrics["pixel_auroc"] != pytest.approx(pixel_metrics(result.maps, masks)["pixel_auroc"])
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["skipped"]["weave"] == {"defective_without_mask": 1, "files": [image]}
    assert summary["skipped"]["plate"]["defective_without_mask"] == 0
    assert f"pixel metrics leave out 1 defective images without a mask file, e.g. {image}" in capsys.readouterr().err


def test_masks_named_like_their_images_are_refused_with_the_rename(root, tmp_path, monkeypatch):
    for mask in (root / "plate" / "ground_truth").rglob("*_mask.png"):
        mask.rename(mask.with_name(mask.name.replace("_mask", "")))
    message = refused_before_scoring(config(root, tmp_path), monkeypatch, "looks like the mask of")
    assert "rename it to 000_mask.png" in message and "mvtec masks are named <stem>_mask<ext>" in message


def test_a_mask_of_another_aspect_than_its_image_is_refused(root, tmp_path, monkeypatch):
    mask = sorted((root / "weave" / "ground_truth").rglob("*_mask.png"))[0]
    Image.new("L", (SIZE, SIZE // 2)).save(mask)
    message = refused_before_scoring(config(root, tmp_path), monkeypatch, "a mask of another aspect ratio")
    assert f"mask {mask} is {SIZE}x{SIZE // 2}" in message
    Image.new("L", (2 * SIZE, 2 * SIZE)).save(mask)  # the image's aspect at another resolution: resized, fine
    samples = read_split(str(root), "mvtec", "weave")
    assert check_split("weave", samples).unmasked == ()


def test_a_truncated_png_is_refused_by_name(root, tmp_path, monkeypatch):
    image = sorted((root / "plate" / "test" / "good").glob("*.png"))[1]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    message = refused_before_scoring(config(root, tmp_path), monkeypatch, "does not decode")
    assert message.startswith(f"{image} does not decode (OSError: Truncated File Read)")
    assert "replace the file or remove it" in message


def test_images_of_very_different_aspect_ratios_are_refused_when_asked(root, tmp_path, monkeypatch):
    image = sorted((root / "weave" / "test" / "good").glob("*.png"))[0]
    Image.open(image).resize((2 * SIZE, SIZE)).save(image)
    refuse = {"root": str(root), "layout": "mvtec", "categories": ["plate", "weave"], "resize": "refuse"}
    message = refused_before_scoring(config(root, tmp_path, dataset=refuse), monkeypatch, "range in aspect ratio")
    assert "from 1.00" in message and f"to 2.00 ({image.name}, {2 * SIZE}x{SIZE})" in message
    assert "crop them to one aspect ratio or evaluate them as separate categories" in message
    Image.open(image).resize((round(1.2 * SIZE), SIZE)).save(image)  # within MAX_ASPECT_SPREAD: scored
    assert check_split("weave", read_split(str(root), "mvtec", "weave")).unmasked == ()


GREY, DEFECT = 96, 255


def mixed_aspect_dataset(root: Path) -> Path:
    """One category of grey parts, 2:1, 1:2 and square, each defective one with a white square at a
    place that differs per image and its mask marking exactly that square."""
    rng = np.random.default_rng(0)
    shapes = [(128, 64), (64, 128), (64, 64), (96, 48)]  # (width, height)
    for i in range(8):
        width, height = shapes[i % len(shapes)]
        image = np.full((height, width, 3), GREY, np.uint8) + rng.integers(0, 8, (height, width, 3), dtype=np.uint8)
        kind = "good" if i < 4 else "spot"
        (root / "part" / "test" / kind).mkdir(parents=True, exist_ok=True)
        if kind == "spot":
            x, y = (width - 16) * (i % 3) // 2, (height - 16) * (i % 2)
            image[y:y + 16, x:x + 16] = DEFECT
            mask = np.zeros((height, width), np.uint8)
            mask[y:y + 16, x:x + 16] = 255
            (root / "part" / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "part" / "ground_truth" / kind / f"{i:03d}_mask.png")
        Image.fromarray(image).save(root / "part" / "test" / kind / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("fit", ["squash", "pad"])
def test_a_mask_stays_on_its_defect_when_images_are_squashed_or_padded(tmp_path, fit):
    from pipeline.data.images import padding_free

    root = mixed_aspect_dataset(tmp_path / "mixed")
    for sample in (s for s in read_split(str(root), "mvtec", "part", "test") if s.label):
        image = load_image(sample.image_path, SIZE, fit=fit).mean(axis=-1)
        mask = load_mask(sample, SIZE, fit=fit)
        assert mask.any() and image[mask].min() > 200  # every mask pixel on the white square
        assert (image[~mask] > 200).sum() <= 2 * SIZE  # and the square under the mask, up to a resampled rim
        if fit == "pad":
            width, height = Image.open(sample.image_path).size
            photo = padding_free(width, height, SIZE)
            near = ndimage.binary_dilation(photo, iterations=2)  # bicubic resizing blurs the photo's edge
            assert photo.mean() == pytest.approx(min(width, height) / max(width, height), abs=0.02)
            assert (image[~near] == 0).all()  # black padding, where padding_free says
            assert image[photo & ~mask].mean() == pytest.approx(GREY + 3.5, abs=8)


@pytest.mark.parametrize("policy", ["squash", "pad"])
def test_mixed_aspect_ratios_are_scored_under_squash_and_pad(tmp_path, policy, capsys):
    """Magnetic-tile-like test images (aspect 0.5 to 2) are scored, not refused; under 'pad' the pixel
    metrics leave the padding out (sklearn over the photo's pixels only); the policy is in metrics.json
    and the report."""
    from pipeline.data.images import padding_free

    root = mixed_aspect_dataset(tmp_path / "mixed")
    dataset = {"root": str(root), "layout": "mvtec", "categories": ["part"], "resize": policy}
    result = benchmark.run_evaluation(config(root, tmp_path, dataset=dataset, scorer="patchead"))["part"]
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["resize"] == {"policy": policy, "aspect_ratio_range": {"part": [0.5, 2.0]}}
    assert f"{policy} (dataset.resize), test images of aspect ratio (width / height) 0.50 to 2.00" in (
        tmp_path / "out" / "report.html").read_text()
    masks = np.stack([load_mask(s, SIZE, fit=policy) for s in result.samples])
    photo = np.ones_like(masks) if policy == "squash" else np.stack(
        [padding_free(*Image.open(s.image_path).size, SIZE) for s in result.samples])
    expected = roc_auc_score(masks[photo], result.maps[photo])
    assert result.metrics["pixel_auroc"] == pytest.approx(expected, abs=2e-3)
    if policy == "pad":
        assert not photo.all() and expected != pytest.approx(roc_auc_score(masks.ravel(), result.maps.ravel()),
                                                             abs=2e-3)


def test_foreground_with_a_cnn_is_refused_when_the_config_is_read(root, tmp_path):
    with pytest.raises(ConfigError, match="'patchead.foreground.enabled': the foreground mask is a ViT's CLS"):
        config(root, tmp_path, scorer="patchead", patchead={"foreground": {"enabled": True}})


@pytest.mark.parametrize("remove, missing", [("defects", "anomalous"), ("good", "normal")])
def test_a_category_without_anomalous_or_normal_images_is_refused(root, tmp_path, monkeypatch, remove, missing):
    for folder in (root / "weave" / "test").iterdir():
        if (folder.name == "good") == (remove == "good"):
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    message = refused_before_scoring(config(root, tmp_path), monkeypatch, f"'weave' has no {missing} test images")
    assert "leave 'weave' out of dataset.categories" in message



def test_what_alignment_did_is_printed_and_written(root, tmp_path, capsys):
    cfg = config(root, tmp_path, scorer="patchead", patchead={"align": True}, divide_num=2)
    results = benchmark.run_evaluation(cfg)
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    err = capsys.readouterr().err
    for category, result in results.items():
        counts = summary["alignment"][category]
        # every image but each subset's reference was fitted: aligned, rejected or skipped
        assert counts["aligned"] + counts["rejected"] + counts["skipped"] == len(result.samples) - 2
        assert counts["rejected"] == sum(counts["rejected_by"].values())
        assert sum(counts["angle_histogram"].values()) == counts["aligned"]
        assert f"  {result.alignment.line()}" in err
    assert "alignment" not in json.loads(json.dumps(summary["stage_seconds"]))  # counts are not times
