"""MuSc on real images with real ImageNet features (issue: real pretrained features in the tests).

Runs the evaluation command's own path on all 83 MVTec AD bottle test images with the shipped
mobilenetv2_100 weights (under both evaluation protocols), and the same run with a random-init
backbone, which must be far lower so the test can tell real features from noise. Skipped when
../shared/weights or ../shared/data is absent.
"""

from pathlib import Path

import pytest

from pipeline.evaluation.benchmark import run_evaluation
from pipeline.settings import EvalConfig, load_config

CONF = Path(__file__).resolve().parents[1] / "conf" / "eval_mvtec_mobilenetv2.yaml"


def bottle_config(mvtec_root, weights, tmp_path, **overrides) -> EvalConfig:
    items = [f"dataset.root={mvtec_root}", f"backbone.weights={weights}", f"output_dir={tmp_path}", "save_maps=0"]
    items += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(CONF, EvalConfig, items)


@pytest.mark.slow
@pytest.mark.parametrize("divide_num, protocol", [(1, "project"), (2, "project"), (3, "project"), (1, "paper")])
def test_bottle_with_imagenet_mobilenetv2_reaches_published_accuracy(mvtec_root, mobilenet_weights, tmp_path,
                                                                     divide_num, protocol):
    results = run_evaluation(bottle_config(mvtec_root, mobilenet_weights, tmp_path, divide_num=divide_num,
                                           protocol=protocol))
    metrics = results["bottle"].metrics
    assert len(results["bottle"].samples) == 83
    assert metrics["image_auroc"] >= 0.97
    assert metrics["pixel_auroc"] >= 0.97
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.slow
def test_bottle_with_random_init_backbone_is_far_lower(mvtec_root, mobilenet_weights, tmp_path):
    cfg = bottle_config(mvtec_root, "null", tmp_path, **{"backbone.random_init": "true"})
    metrics = run_evaluation(cfg)["bottle"].metrics
    # real features reach >= 0.97 on both; random ones must stay well below
    assert metrics["image_auroc"] < 0.85
    assert metrics["pixel_auroc"] < 0.90
