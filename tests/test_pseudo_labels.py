"""Pseudo-normal training sets from a MuSc run's scores table."""

from datetime import datetime, timezone

import numpy as np
import pytest

from pipeline.data.images import load_images
from pipeline.data.synthetic import generate_dataset
from pipeline.job.layout import RunLayout
from pipeline.job.scores_table import write_group_scores
from pipeline.settings import SweepConfig, config_from_dict
from pipeline.tuning.pseudo_labels import most_normal_uris
from pipeline.tuning.sweep import _prepare_data


def scores_row(uri: str, score: float | None, run_id: str, status: str = "ok") -> dict:
    return {"uri": uri, "score": score, "score_raw": score, "run_id": run_id, "status": status,
            "scored_at": datetime.now(timezone.utc)}


def write_run(prefix: str, uris_by_group: dict[str, list[str]], run_id: str, storage_options=None) -> None:
    """Scores that rise with the position of the image in its list; one decode error per group."""
    for group, uris in uris_by_group.items():
        rows = [scores_row(u, float(i), run_id) for i, u in enumerate(uris)]
        rows.append(scores_row(f"{group}/broken.png", None, run_id, "decode_error"))
        write_group_scores(RunLayout(prefix, run_id, "2026-11-22").scores(group), rows, storage_options)


def test_the_lowest_scoring_fraction_of_each_group_of_one_run(tmp_path, s3_bucket):
    groups = {"line1/capA": [f"a{i}.png" for i in range(6)], "line2": [f"b{i}.png" for i in range(3)]}
    for prefix in (str(tmp_path / "out"), f"s3://{s3_bucket}/musc"):
        write_run(prefix, groups, "night-1")
        write_run(prefix, {"line1/capA": ["other.png", "x.png"]}, "night-2")  # another run: ignored
        chosen = most_normal_uris(f"{prefix}/scores", "night-1", 0.5)
        assert chosen == {"line1/capA": ["a0.png", "a1.png", "a2.png"], "line2": ["b0.png"]}
        assert most_normal_uris(f"{prefix}/scores", "night-1", 0.01)["line2"] == ["b0.png"]  # at least one
    with pytest.raises(ValueError, match="no scored images of run 'night-9'"):
        most_normal_uris(str(tmp_path / "out" / "scores"), "night-9", 0.5)


def test_sweep_trains_on_pseudo_normals_of_a_run(tmp_path):
    root = tmp_path / "data"
    generate_dataset(str(root), categories=["weave"], n_train=0, n_test_good=4, n_test_defect=2, image_size=64)
    images = sorted(str(p) for p in (root / "weave" / "test").rglob("*.png"))
    write_run(str(tmp_path / "out"), {"weave": images}, "night-1")
    cfg = config_from_dict(SweepConfig, {
        "detector": {"vitad": {"encoder": {"name": "vit_tiny_patch16_224", "image_size": 64, "random_init": True}}},
        "dataset": {"root": str(root)},
        "pseudo_labels": {"scores_prefix": str(tmp_path / "out" / "scores"), "run_id": "night-1",
                          "normal_fraction": 0.5}})
    train, validation, references = _prepare_data(cfg)
    assert train.images.shape == (3, 64, 64, 3) and len(validation.labels) == 6 and references is None
    assert not train.labels.any() and not train.masks.any()
    np.testing.assert_array_equal(train.images, load_images(images[:3], 64))
    assert load_images(images[:1], 48, resize=64).shape == (1, 48, 48, 3)  # resize, then centre crop
