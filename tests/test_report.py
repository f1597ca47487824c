"""Heat maps and HTML reports: what a reviewer opens."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from pipeline.reporting.heatmaps import Caption, HeatmapRenderer, render_heatmap
from pipeline.reporting.report import (
    Figure,
    Gallery,
    GalleryItem,
    Section,
    Table,
    histogram_png,
    render_report,
    thumbnail,
)

CAPTION = Caption.flagged("line1/capA", "cam2_000123.png", 0.8123, 3, 240, True, "robust_z>3.5")


def test_a_heat_map_has_a_title_strip_a_colour_bar_and_the_ground_truth_outline():
    image = np.full((64, 64, 3), 128, np.uint8)
    amap = np.random.default_rng(0).random((64, 64)) * 0.2
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    with_mask = np.asarray(Image.open(io.BytesIO(render_heatmap(image, amap, 0.0, 1.0, CAPTION, mask))).convert("RGB"))
    without = np.asarray(Image.open(io.BytesIO(render_heatmap(image, amap, 0.0, 1.0, CAPTION))).convert("RGB"))
    height, width, _ = with_mask.shape
    assert width > 2 * 320 and height > 320  # small inputs are drawn large enough to read
    green = (with_mask[..., 1] > 200) & (with_mask[..., 0] < 120) & (with_mask[..., 2] < 120)
    assert green.sum() > 100 and not ((without[..., 1] > 200) & (without[..., 0] < 120) & (without[..., 2] < 120)).any()
    title = with_mask[: height // 8]  # the title strip holds dark text; the flagged line is red
    assert (title.sum(axis=2) < 200).sum() > 50 and ((title[..., 0] > 150) & (title[..., 1] < 60)).sum() > 20
    bar = with_mask[height // 4: 3 * height // 4, width - 80: width - 40]  # the colour bar's ramp
    assert len(np.unique(bar.reshape(-1, 3), axis=0)) > 30
    with pytest.raises(ValueError, match="sizes differ"):
        render_heatmap(image, np.zeros((10, 10)), 0, 1, CAPTION)


def test_one_renderer_draws_many_maps_of_a_group_on_the_same_scale():
    renderer = HeatmapRenderer(32, 32, 0.0, 2.0)
    low = renderer.render(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32)), CAPTION)
    high = renderer.render(np.zeros((32, 32, 3), np.uint8), np.full((32, 32), 2.0), CAPTION)
    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB")).astype(int) for x in (low, high))
    assert a.shape == b.shape and np.abs(a - b).sum() > 0  # the same layout, other pixels
    again = renderer.render(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32)), CAPTION)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(again)).convert("RGB")).astype(int), a)  # no leftovers


def test_report_is_one_escaped_page_with_its_images_inside():
    png = render_heatmap(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16)), 0, 1, CAPTION)
    hist = histogram_png(np.random.default_rng(0).normal(size=200), 1.5, "scores", np.array([0] * 190 + [1] * 10))
    page = render_report("Run <x>", [("config", "a&b")], [Section("Group <script>", [
        Table(["uri", "error"], [["s3://b/<img>.png", "OSError: <bad>"]], "Not scored"),
        Figure(hist, "histogram"),
        Gallery("Flagged", [GalleryItem(thumbnail(png), "#1 <a>", "s3://b/map.png")])])], warning="random weights")
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b" in page and "&lt;bad&gt;" in page
    images = re.findall(r'src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"', page)
    assert [kind for kind, _ in images] == ["png", "jpeg"]
    for _, data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 100
    assert 'href="s3://b/map.png"' in page and "random weights" in page


def test_code_version_names_the_image_and_its_build_commit_outside_a_checkout(monkeypatch):
    """An image holds no .git: its build arguments (infra/Dockerfile) say which code made a result."""
    from pipeline.reporting import provenance

    monkeypatch.setattr(provenance, "_git_commit", lambda repo: None)
    monkeypatch.setenv("MUSC_IMAGE", "registry/musc-pipeline:1.2")
    monkeypatch.setenv("MUSC_GIT_COMMIT", "0123abc")
    provenance.code_version.cache_clear()
    try:
        assert provenance.code_version() == {"package": "0.1.0", "git_commit": "0123abc",
                                             "image": "registry/musc-pipeline:1.2"}
    finally:
        provenance.code_version.cache_clear()
