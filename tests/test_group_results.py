"""The scoring and group stages without Ray, on hand-made shards: ranks, flags, maps, rows, edge groups."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.engine.features import Features
from pipeline.engine.musc import score_features
from pipeline.job.extract import shard_table
from pipeline.job.flagging import FlagRule, rank_in_group
from pipeline.job.groups import GroupContext, finalise_group
from pipeline.job.layout import RunLayout, shard_uri
from pipeline.job.plan import SubsetPlan
from pipeline.job.scored import read_scored_batch
from pipeline.job.shards import read_shard_records
from pipeline.job.subsets import score_subset
from pipeline.settings import MuscConfig

MUSC = MuscConfig(aggregation_degrees=[1, 3], rscin_windows=[1, 2])


def context(tmp_path, **changes) -> GroupContext:
    fields = dict(layout=RunLayout(str(tmp_path / "out"), "r1", "2026-11-22"), config_hash="abc",
                  backbone="test-backbone", scores_meaningful=False, image_size=16, gaussian_sigma=1.0, heatmaps="all",
                  flag=FlagRule("top_fraction", 0.25))
    return GroupContext(**{**fields, **changes})


@pytest.fixture
def one_shard(tmp_path):
    """A shard of group 'line/a': four readable images (one with a planted outlier patch) and a corrupt one."""
    rng = np.random.default_rng(0)
    uris, errors = [], []
    for i in range(5):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
        uris.append(str(path))
        errors.append("" if i < 4 else "UnidentifiedImageError: cannot identify image file")
    base = torch.randn(1, 8, 4, 4)
    stages = [base + 0.05 * torch.randn(5, 8, 4, 4) for _ in range(2)]
    for stage in stages:
        stage[2, :, 1, 2] += 3.0  # image 2 has one patch unlike anything in the others
    embedding = torch.nn.functional.normalize(torch.randn(5, 6), dim=1)
    records = [{"uri": u, "group": "line/a", "label": int(i == 2), "mask_uri": None} for i, u in enumerate(uris)]
    features = Features(stages, embedding)
    table = shard_table(records, errors, features, "test-backbone")
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    features_prefix = str(tmp_path / "features")
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "shard-00000.parquet").write_bytes(buffer.getvalue())
    return features_prefix, features, uris


def test_subset_and_group_stages_rank_flag_draw_and_keep_every_row(tmp_path, one_shard):
    features_prefix, features, uris = one_shard
    rows, backbone = read_shard_records(shard_uri(features_prefix, 0))
    assert backbone == "test-backbone" and [r["status"] for r in rows] == ["ok"] * 4 + ["decode_error"]
    ctx = context(tmp_path)
    plan = SubsetPlan("line/a", 0, (0,), 5)  # the shard holds the subset: 4 readable images and a corrupt one
    result_uri = ctx.layout.subset("line/a", 0)
    assert "line%2Fa" in result_uri
    summary = score_subset(plan, features_prefix, result_uri, MUSC)
    assert summary["images"] == 4

    # the same as the engine on the same (fp16-stored) features, on the raw score scale
    stored = Features([s[:4].half().float() for s in features.stages], features.embedding[:4])
    expected = score_features(stored, MUSC, "cpu", keep_scale=True)
    result = read_scored_batch(result_uri)
    np.testing.assert_allclose(result.score, expected.image_scores.numpy(), rtol=1e-5)
    np.testing.assert_allclose(result.patch_scores, expected.patch_scores.numpy(), rtol=1e-5)
    assert int(np.argmax(result.score)) == 2  # the planted outlier scores highest

    group = finalise_group("line/a", [{**r, "shard_id": 0, "row": i} for i, r in enumerate(rows)], [result_uri], ctx)
    assert group["statuses"] == {"ok": 4, "decode_error": 1} and group["flagged"] == 1
    assert group["metrics"]["image_auroc"] == 1.0 and np.isnan(group["metrics"]["pixel_auroc"])  # no masks
    table = pq.read_table(group["scores_uri"]).to_pylist()
    assert [r["uri"] for r in table] == sorted(uris)
    by_uri = {r["uri"]: r for r in table}
    ranks, percentiles = rank_in_group(result.score)
    for i in range(4):
        row = by_uri[uris[i]]
        assert row["rank_in_group"] == ranks[i] and row["percentile_in_group"] == pytest.approx(percentiles[i])
        assert row["is_anomaly"] == (i == 2) and row["flag_policy"] == "top_fraction=0.25"
        assert row["subset_size"] == 4 and row["backbone"] == "test-backbone" and row["scores_meaningful"] is False and row["run_id"] == "r1"
        png = Image.open(row["map_uri"])
        assert png.size[0] > 2 * 320 and png.size[1] > 320  # photo and map side by side, drawn readably
    error_row = by_uri[uris[4]]
    assert error_row["status"] == "decode_error" and "cannot identify" in error_row["error"]
    assert error_row["score"] is None and error_row["map_uri"] is None
    assert json.loads(open(ctx.layout.group_summary("line/a")).read())["inputs"] == 5


def test_groups_with_one_readable_image_or_none_get_rows_and_a_status(tmp_path):
    ctx = context(tmp_path, heatmaps="flagged")
    ok = {"uri": "/x/only.png", "group": "solo", "label": None, "mask_uri": None, "status": "ok", "error": None}
    bad = {"uri": "/x/bad.png", "group": "solo", "label": None, "mask_uri": None, "status": "decode_error",
           "error": "OSError: truncated"}
    solo = finalise_group("solo", [ok, bad], [], ctx)
    assert solo["statuses"] == {"group_too_small": 1, "decode_error": 1} and solo["metrics"] is None
    rows = {r["uri"]: r for r in pq.read_table(solo["scores_uri"]).to_pylist()}
    assert "1 readable image" in rows["/x/only.png"]["error"] and rows["/x/bad.png"]["error"] == "OSError: truncated"

    broken = finalise_group("broken", [{**bad, "group": "broken"}], [], ctx)
    assert broken["statuses"] == {"decode_error": 1} and broken["scored"] == 0


def test_cropped_inputs_get_cropped_heat_maps_and_masks(tmp_path, one_shard, monkeypatch):
    """A detector that saw resize-then-crop inputs (Dinomaly) gets maps over the same crop."""
    from pipeline.job import groups

    drawn = {}
    real_render = groups.HeatmapRenderer.render

    def recording_render(self, image, anomaly_map, caption, mask=None):
        drawn[caption.name] = (image, mask)
        return real_render(self, image, anomaly_map, caption, mask)

    monkeypatch.setattr(groups.HeatmapRenderer, "render", recording_render)
    features_prefix, _, uris = one_shard
    rows, _ = read_shard_records(shard_uri(features_prefix, 0))
    ctx = context(tmp_path, image_size=16, resize=20)
    plan = SubsetPlan("line/a", 0, (0,), 5)  # the shard holds the subset: 4 readable images and a corrupt one
    result_uri = ctx.layout.subset("line/a", 0)
    score_subset(plan, features_prefix, result_uri, MUSC)
    mask = np.zeros((20, 20), np.uint8)
    mask[0:2, :] = 255  # an anomaly only in the rows the centre crop removes
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rows = [{**r, "shard_id": 0, "row": i, "mask_uri": str(tmp_path / "mask.png") if r["label"] else None}
            for i, r in enumerate(rows)]
    group = finalise_group("line/a", rows, [result_uri], ctx)
    assert np.isnan(group["metrics"]["pixel_auroc"])  # the cropped mask has no anomalous pixel left
    for row in pq.read_table(group["scores_uri"]).to_pylist():
        if row["map_uri"] is None:
            continue
        photo, outline = drawn[row["uri"].rsplit("/", 1)[-1]]
        source = np.asarray(Image.open(row["uri"]).convert("RGB").resize((20, 20), Image.Resampling.BICUBIC))
        assert np.array_equal(photo, source[2:18, 2:18])
        assert outline is None or not outline.any()  # the cropped-away anomaly is not outlined either


def test_an_image_deleted_before_its_heat_map_keeps_its_row_and_score(tmp_path, one_shard):
    """A resumed run re-reads images for heat maps; one deleted since extraction used to fail the group
    (FileNotFoundError) on every re-run. Its row now says why it has no map."""
    features_prefix, _, uris = one_shard
    rows, _ = read_shard_records(shard_uri(features_prefix, 0))
    ctx = context(tmp_path)  # heat maps for all images
    plan = SubsetPlan("line/a", 0, (0,), 5)
    score_subset(plan, features_prefix, ctx.layout.subset("line/a", 0), MUSC)
    Path(uris[1]).unlink()
    Path(uris[3]).write_bytes(b"no longer an image")
    group = finalise_group("line/a", [{**r, "shard_id": 0, "row": i} for i, r in enumerate(rows)],
                           [ctx.layout.subset("line/a", 0)], ctx)
    assert group["statuses"] == {"ok": 2, "heatmap_error": 2, "decode_error": 1} and group["scored"] == 4
    by_uri = {r["uri"]: r for r in pq.read_table(group["scores_uri"]).to_pylist()}
    for i, reason in ((1, "FileNotFoundError"), (3, "UnidentifiedImageError: cannot identify image file")):
        row = by_uri[uris[i]]
        assert row["status"] == "heatmap_error" and row["map_uri"] is None and reason in row["error"]
        assert row["score"] is not None and row["rank_in_group"] is not None and "0x" not in row["error"]
    assert all(by_uri[uris[i]]["map_uri"] for i in (0, 2))


def test_a_missing_mask_is_left_out_of_pixel_metrics_with_a_warning(tmp_path, one_shard):
    """A labelled image whose mask is gone used to fail its whole group (rows lost, on every re-run)."""
    features_prefix, _, uris = one_shard
    rows, _ = read_shard_records(shard_uri(features_prefix, 0))
    ctx = context(tmp_path, heatmaps="none")
    plan = SubsetPlan("line/a", 0, (0,), 5)
    score_subset(plan, features_prefix, ctx.layout.subset("line/a", 0), MUSC)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:10, 10:15] = 255
    Image.fromarray(mask).save(tmp_path / "mask-0.png")
    masks = {0: str(tmp_path / "mask-0.png"), 2: str(tmp_path / "gone.png")}  # two anomalous images
    records = [{**r, "shard_id": 0, "row": i, "label": int(i in masks), "mask_uri": masks.get(i)}
               for i, r in enumerate(rows)]
    group = finalise_group("line/a", records, [ctx.layout.subset("line/a", 0)], ctx)
    assert group["inputs"] == 5 and group["statuses"] == {"ok": 4, "decode_error": 1}
    assert group["warnings"] == [f"group 'line/a': mask {masks[2]} of {uris[2]} (FileNotFoundError: no such file "
                                 "or object): left out of the pixel metrics"]
    assert not np.isnan(group["metrics"]["pixel_auroc"])  # computed from the readable mask
    assert len(pq.read_table(group["scores_uri"])) == 5
