"""The feature stage on a real (in-process) Ray cluster: shards, error rows, features, re-run skipping."""

import hashlib

import pytest
import torch

from pipeline.data.images import load_image
from pipeline.data.inputs import list_images
from pipeline.data.synthetic import generate_dataset
from pipeline.engine.backbones import build_backbone
from pipeline.job.extract import read_feature_shard, run_feature_stage
from pipeline.job.layout import shard_uri
from pipeline.job.plan import plan_run
from pipeline.settings import BackboneConfig

BACKBONE = BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=64, layers=[1, 2],
                          batch_size=4)



@pytest.fixture
def images_with_corrupt_files(tmp_path):
    root = tmp_path / "data"
    generate_dataset(str(root), categories=["weave"], n_train=0, n_test_good=3, n_test_defect=2, image_size=64)
    folder = root / "weave" / "test" / "good"
    good = (folder / "000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    return root


def test_feature_stage_writes_shards_with_error_rows_and_skips_on_rerun(ray_local, images_with_corrupt_files,
                                                                         tmp_path):
    records = list_images(str(images_with_corrupt_files / "weave" / "test"))
    assert len(records) == 8
    shards = [s.item() for s in plan_run(records, shard_size=3, max_subset_size=None, seed=0).shards]
    assert [len(s["records"]) for s in shards] == [3, 3, 1, 1]  # good (with the corrupt files), hole, spot
    prefix = str(tmp_path / "out" / "features")

    summary = run_feature_stage(shards, BACKBONE, prefix)
    assert summary == {**summary, "shards": 4, "skipped": 0, "images": 8, "failed": 3}

    torch.manual_seed(0)
    direct = build_backbone(BACKBONE)
    rows = {}
    for shard in shards:
        table, feats = read_feature_shard(shard_uri(prefix, shard["shard_id"]))
        assert table.column("uri").to_pylist() == [r["uri"] for r in shard["records"]]
        for i, row in enumerate(table.to_pylist()):
            rows[row["uri"]] = row
            if row["status"] == "ok":
                expected = direct.extract(load_image(row["uri"], 64)[None])
                assert torch.allclose(feats.stages[1][i], expected.stages[1][0], atol=2e-2, rtol=1e-2)
            else:
                assert all(float(s[i].abs().max()) == 0.0 for s in feats.stages)
    assert len(rows) == 8
    errors = {uri.rsplit("/", 1)[-1]: row["error"] for uri, row in rows.items() if row["status"] != "ok"}
    assert set(errors) == {"truncated.png", "empty.png", "text.png"}
    assert "truncated" in errors["truncated.png"]

    again = run_feature_stage(shards, BACKBONE, prefix)
    assert again["skipped"] == 4 and again["images"] == 0


def test_storage_failures_fail_the_shard_and_only_missing_or_corrupt_images_become_rows(flaky_storage, tmp_path):
    """A NoCredentialsError or a connection that stays down used to become status decode_error, and the
    shard was then done: a re-run never retried those images. Now the shard fails (nothing written)."""
    from botocore.exceptions import NoCredentialsError

    from pipeline.job.shards import decode_shard
    from pipeline.storage import READ_ATTEMPTS

    write, fail, _ = flaky_storage
    generate_dataset(str(tmp_path / "d"), categories=["weave"], n_train=0, n_test_good=1, n_test_defect=0,
                     image_size=64)
    good = write("good.png", (tmp_path / "d" / "weave" / "test" / "good" / "000.png").read_bytes())
    corrupt = write("corrupt.png", b"not an image")
    shard = {"shard_id": 0, "records": [{"uri": u, "group": "g", "label": None, "mask_uri": None}
                                        for u in (good, corrupt, good.replace("good.png", "gone.png"))]}
    decoded = decode_shard(shard, 64)
    assert decoded["errors"] == ["", "UnidentifiedImageError: cannot identify image file",
                                 "FileNotFoundError: no such file or object"]
    image_bytes = (tmp_path / "d" / "weave" / "test" / "good" / "000.png").read_bytes()
    assert [r["sha256"] for r in decoded["records"]] == [hashlib.sha256(image_bytes).hexdigest(), None, None]
    fail(good, ConnectionResetError("reset"))  # passes on a retry
    assert decode_shard(shard, 64)["errors"][0] == ""
    fail(good, *[ConnectionResetError("reset")] * READ_ATTEMPTS)
    with pytest.raises(ConnectionResetError):
        decode_shard(shard, 64)
    fail(good, NoCredentialsError())
    with pytest.raises(NoCredentialsError):
        decode_shard(shard, 64)
