"""The reports in a real headless browser (Chromium from Debian's packages): every embedded image
decodes and the page renders to a non-blank screenshot. Skipped where Chromium is not installed
(the CI image has none; `apt-get install chromium` adds it)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation.benchmark import run_evaluation
from pipeline.job.run import run_job
from pipeline.settings import EvalConfig, JobConfig, config_from_dict

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
BACKBONE = {"family": "timm_cnn", "name": "resnet18", "random_init": True, "image_size": 64, "layers": [1, 2]}
# after load, the body says whether every image decoded (a broken data URI has naturalWidth 0)
PROBE = ("<script>addEventListener('load', () => document.body.dataset.images = "
         "[...document.images].map(i => i.naturalWidth > 0).join(','))</script>")

pytestmark = pytest.mark.skipif(BROWSER is None, reason="needs Chromium (apt-get install chromium)")


def browse(page: Path, tmp_path: Path) -> tuple[list[bool], np.ndarray]:
    """Open ``page`` headless: whether each image decoded, and a 1280-wide screenshot."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([BROWSER, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    decoded = dom.split('data-images="', 1)[1].split('"', 1)[0].split(",")
    shot = tmp_path / f"{page.stem}.png"
    subprocess.run([BROWSER, *flags, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return [d == "true" for d in decoded], np.asarray(Image.open(shot).convert("RGB"))


def assert_readable(decoded: list[bool], shot: np.ndarray, images: int) -> None:
    assert len(decoded) == images and all(decoded)
    assert shot.shape[:2] == (1600, 1280)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200  # text, histograms and heat maps, not a blank page


@pytest.mark.slow
def test_a_runs_report_renders_in_chromium(ray_local, tmp_path):
    from pipeline.data.synthetic import generate_dataset

    generate_dataset(str(tmp_path / "in"), categories=["weave", "disc"], n_train=0, n_test_good=6, n_test_defect=2,
                     image_size=64)
    cfg = config_from_dict(JobConfig, {"inputs": {"uris": [f"{tmp_path}/in/*/test/*/*.png"],
                                                  "group_template": "{product}/test/{_kind}/{name}"},
                                       "output": {"prefix": str(tmp_path / "out")}, "backbone": BACKBONE,
                                       "flagging": {"policy": "top_fraction", "value": 0.25}, "run_id": "shown"})
    assert run_job(cfg).exit_code == 0
    decoded, shot = browse(tmp_path / "out" / "runs" / "shown" / "report.html", tmp_path)
    assert_readable(decoded, shot, images=2 + 2 * 2)  # per group a histogram and two flagged heat maps


@pytest.mark.slow
def test_an_evaluations_report_renders_in_chromium(tmp_path):
    cfg = config_from_dict(EvalConfig, {
        "dataset": {"root": str(tmp_path / "data"), "categories": ["weave"]},
        "synthetic": {"enabled": True, "categories": ["weave"], "n_test_good": 6, "n_test_defect": 4, "image_size": 64},
        "backbone": BACKBONE, "output_dir": str(tmp_path / "out"), "save_maps": 3})
    run_evaluation(cfg)
    decoded, shot = browse(tmp_path / "out" / "report.html", tmp_path)
    assert_readable(decoded, shot, images=1 + 3)
