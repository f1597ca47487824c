"""The tables as BI tools read them: docs/outputs-and-bi.md's DuckDB query run as written on a job's output, and
the shipped Athena / Glue definitions checked against the Parquet the job writes."""

import re
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.data.inputs import InputRecord, records_from_dataset, write_manifest
from pipeline.data.synthetic import generate_dataset
from pipeline.job.manifest import METRICS_SCHEMA
from pipeline.job.nights import NIGHTS_SCHEMA
from pipeline.job.run import run_job
from pipeline.job.scores_table import SCORES_SCHEMA
from pipeline.settings import JobConfig, config_from_dict

REPO = Path(__file__).resolve().parents[1]
ATHENA_TYPES = {pa.string(): "string", pa.int32(): "int", pa.int8(): "tinyint", pa.float64(): "double",
                pa.bool_(): "boolean", pa.timestamp("us", tz="UTC"): "timestamp",
                pa.list_(pa.float32()): "array<float>"}


def athena_tables() -> dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """Each CREATE EXTERNAL TABLE of infra/athena/tables.sql: (columns, partition columns)."""
    text = (REPO / "infra" / "athena" / "tables.sql").read_text()
    tables = {}
    for name, columns, partitions in re.findall(
            r"CREATE EXTERNAL TABLE IF NOT EXISTS (\S+) \((.*?)\)\s*PARTITIONED BY \((.*?)\)", text, re.S):
        def pairs(block: str) -> list[tuple[str, str]]:
            return [tuple(part.split()) for part in block.replace("\n", " ").split(",") if part.strip()]
        tables[name] = (pairs(columns), pairs(partitions))
    return tables


def test_athena_definitions_match_the_parquet_schemas():
    tables = athena_tables()
    assert set(tables) == {"musc.scores", "musc.scores_all", "musc.metrics", "musc.group_nights"}
    scores = [(f.name, ATHENA_TYPES[f.type]) for f in SCORES_SCHEMA]
    for name in ("musc.scores", "musc.scores_all"):
        assert tables[name] == (scores, [("run_date", "date"), ("group_name", "string")])
    metrics = [(f.name, ATHENA_TYPES[f.type]) for f in METRICS_SCHEMA]
    assert tables["musc.metrics"] == (metrics, [("run_date", "date")])
    nights = [(f.name, ATHENA_TYPES[f.type]) for f in NIGHTS_SCHEMA]
    assert tables["musc.group_nights"] == (nights, [("run_date", "date")])


def documented_duckdb_query() -> str:
    text = (REPO / "docs" / "outputs-and-bi.md").read_text()
    blocks = [b for b in re.findall(r"```sql\n(.*?)```", text, re.S) if b.startswith("-- DuckDB")]
    assert len(blocks) == 1, "docs/outputs-and-bi.md must hold one DuckDB example"
    return blocks[0]


@pytest.mark.slow
def test_the_documented_duckdb_query_runs_on_a_jobs_output(ray_local, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    generate_dataset(str(tmp_path / "data"), categories=["weave"], n_train=0, n_test_good=9, n_test_defect=3,
                     image_size=64)
    records = records_from_dataset(str(tmp_path / "data"))
    groups = ["007", "7", "line 1/cap A"]  # a number-like pair and a name that needs encoding
    write_manifest([InputRecord(r.uri, groups[i % 3], r.label, r.mask_uri) for i, r in enumerate(records)],
                   str(tmp_path / "manifest.csv"))
    out = tmp_path / "outputs" / "nightly"
    cfg = config_from_dict(JobConfig, {
        "inputs": {"manifest": str(tmp_path / "manifest.csv")}, "output": {"prefix": str(out)},
        "backbone": {"family": "timm_cnn", "name": "resnet18", "random_init": True, "image_size": 64,
                     "layers": [1, 2]},
        "flagging": {"policy": "top_fraction", "value": 0.25}, "run_date": "2026-11-22"})
    assert run_job(cfg).exit_code == 0

    query = documented_duckdb_query().replace("'outputs/nightly/", f"'{out}/")
    result = duckdb.sql(query)
    rows = {r[1]: dict(zip(result.columns, r)) for r in result.fetchall()}
    assert set(rows) == set(groups)  # 007 and 7 apart, the encoded name decoded
    for row in rows.values():
        assert str(row["run_date"]) == "2026-11-22" and row["images"] == 4 and row["flagged"] == 1
        assert row["meaningful"] is False  # random-init weights
    metrics = duckdb.sql(f"SELECT group_name, image_auroc FROM read_parquet('{out}/metrics/**/*.parquet', "
                         "hive_partitioning = true)").fetchall()
    assert {g for g, _ in metrics} == set(groups) and all(0 <= v <= 1 for _, v in metrics if v is not None)


def test_the_athena_view_reads_one_run_per_night_and_group(tmp_path):
    """inputs.uris [.../in] and [.../in/] scored one night twice: every row counted twice. The view
    musc.scores_latest, run by DuckDB over the same files (Athena's max_by is DuckDB's too), keeps the
    rows of the run that scored each group of each night last."""
    duckdb = pytest.importorskip("duckdb")
    from datetime import datetime, timezone

    from pipeline.job.layout import RunLayout
    from pipeline.job.scores_table import write_group_scores, write_text_group_marker

    out = str(tmp_path / "musc")
    runs = (("a", "2026-11-22", ["007", "line 1/cap A"], 1), ("b", "2026-11-22", ["007"], 2),
            ("c", "2026-11-23", ["007"], 0))
    for run_id, night, groups, hour in runs:
        layout = RunLayout(out, run_id, night)
        write_text_group_marker(layout)
        scored_at = datetime(2026, 11, 23, hour, tzinfo=timezone.utc)
        for group in groups:
            rows = [dict.fromkeys(SCORES_SCHEMA.names) | {"uri": f"{group}/{i}.png", "run_id": run_id,
                                                          "status": "ok", "scored_at": scored_at} for i in range(3)]
            write_group_scores(layout.scores(group), rows)
    text = (REPO / "infra" / "athena" / "tables.sql").read_text()
    view = re.search(r"CREATE OR REPLACE VIEW musc.scores_latest AS\n(.*?);", text, re.S)[1]
    table = (f"read_parquet('{out}/scores/**/*.parquet', hive_partitioning = true, "
             "hive_types = {'run_date': DATE, 'group_name': VARCHAR})")
    query = view.replace("musc.scores_all", table)
    rows = duckdb.sql(f"SELECT CAST(run_date AS VARCHAR), group_name, run_id, count(*) FROM ({query}) "
                      "GROUP BY ALL ORDER BY ALL").fetchall()
    assert rows == [("2026-11-22", "007", "b", 3), ("2026-11-22", "line 1/cap A", "a", 3),
                    ("2026-11-23", "007", "c", 3)]
