"""The scores table reads back with plain pyarrow, partitions decoded, re-runs not duplicated."""

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from pipeline.job.layout import RunLayout, partition_path
from pipeline.job.scores_table import SCORES_SCHEMA, write_group_scores


def row(uri, score, status="ok", error=None):
    return {"uri": uri, "subset_id": 0, "subset_size": 2, "score_raw": score, "score": score, "rank_in_group": 1,
            "percentile_in_group": 100.0, "is_anomaly": score > 0.5, "flag_policy": "top_fraction:0.1",
            "map_uri": None, "label": None, "backbone": "timm_cnn:resnet18@64", "config_hash": "abc",
            "run_id": "r1", "scored_at": datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc), "status": status,
            "error": error}


def test_partition_path_encodes_group():
    assert partition_path("2026-11-22", "line1/capA") == "run_date=2026-11-22/group_name=line1%2FcapA"


def test_written_scores_read_back_with_plain_pyarrow(tmp_path):
    run = RunLayout(str(tmp_path), "r1", "2026-11-22")
    write_group_scores(run.scores("line1/capA"), [row("a.png", 0.9), row("b.png", 0.1)])
    write_group_scores(run.scores("capB"), [row("c.png", float("nan"), "error", "truncated")])
    # a re-run of the same run id replaces its object: no duplicate rows
    write_group_scores(run.scores("capB"), [row("c.png", float("nan"), "error", "truncated")])
    table = ds.dataset(str(tmp_path / "scores"), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 3
    assert sorted(table.column("group_name").to_pylist()) == ["capB", "line1/capA", "line1/capA"]
    assert set(table.column("run_date").to_pylist()) == {"2026-11-22"}
    for field in SCORES_SCHEMA:
        assert table.schema.field(field.name).type == field.type


def test_s3_scores(s3_bucket, s3_server):
    write_group_scores(RunLayout(f"s3://{s3_bucket}/out", "r1", "2026-11-22").scores("g"), [row("s3://x/a.png", 0.3)])
    fs = pafs.S3FileSystem(endpoint_override=s3_server, access_key="testing", secret_key="testing",
                           region="us-east-1")
    table = ds.dataset(f"{s3_bucket}/out/scores", filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert table.column("uri").to_pylist() == ["s3://x/a.png"]


def test_empty_group_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        write_group_scores(RunLayout(str(tmp_path), "r1", "2026-11-22").scores("g"), [])


def test_groups_007_and_7_read_back_apart_with_plain_readers(tmp_path):
    """Readers guess partition types: group_name=007 and group_name=7 both read back as the integer 7 unless some
    group of the date is not a number; each run's empty TEXT_GROUP object is that group."""
    import pyarrow.parquet as pq

    from pipeline.job.scores_table import write_text_group_marker

    run = RunLayout(str(tmp_path), "r1", "2026-11-22")
    write_group_scores(run.scores("007"), [row("a.png", 0.9)])
    write_group_scores(run.scores("7"), [row("b.png", 0.1), row("c.png", 0.2)])
    write_text_group_marker(run)
    for table in (ds.dataset(str(tmp_path / "scores"), format="parquet", partitioning="hive").to_table(),
                  pq.read_table(str(tmp_path / "scores"))):
        rows = sorted((r["uri"], str(r["group_name"])) for r in table.to_pylist())
        assert rows == [("a.png", "007"), ("b.png", "7"), ("c.png", "7")]
        assert table.schema.field("group_name").type in (pa.string(), pa.dictionary(pa.int32(), pa.string()))


def test_every_name_fits_and_short_names_are_unchanged(tmp_path):
    """A 240-character file name or a folder of 40 CJK characters made names over 255 bytes
    ('File name too long'): rows were lost. Long names keep a readable prefix plus a hash."""
    from pipeline.job.layout import MAX_NAME_BYTES, segment

    run = RunLayout(str(tmp_path), "2026-11-22-4eb497fd", "2026-11-22")
    cjk = "検査ライン" * 8  # 40 characters, 120 bytes, 360 once URI-encoded
    long_file = f"/in/{cjk}/" + "x" * 236 + ".png"
    names = [run.scores(cjk), run.heatmap(cjk, long_file), run.group_summary(cjk), run.subset(cjk, 0),
             run.heatmap("g", "/in/" + "y" * 300 + "/" + "z" * 236 + ".png")]
    for name in names:  # filesystems allow 255 bytes; a temporary name adds up to 14 (.<name>.part-<pid>)
        assert max(len(part.encode()) for part in name.split("/")) <= 240, name
    assert segment(cjk).startswith(segment(cjk[:10])) and segment(cjk) != segment(cjk[:-1] + "x")
    assert run.heatmap(cjk, long_file) != run.heatmap(cjk, long_file.replace("x.png", "w.png"))
    assert segment("a" * MAX_NAME_BYTES) == "a" * MAX_NAME_BYTES  # what fits is never renamed
    for name in names[:2]:  # and it is written and read back
        write_group_scores(name if name.endswith(".parquet") else name + ".parquet", [row("a.png", 0.5)])
