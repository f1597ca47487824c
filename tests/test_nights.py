"""The per-group nightly table (group_nights): the shift statistics against naive computations and scipy,
the alert rule, which earlier nights are compared, and docs/nights.md's worked example run as three real
nights of the job."""

import json
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
import pytest
from scipy.stats import ks_2samp

from pipeline.job.drift import EmbeddingMoments, Shift, embedding_shift, score_shift
from pipeline.job.layout import RunLayout
from pipeline.job.manifest import format_summary
from pipeline.job.nights import NIGHTS_SCHEMA, previous_nights, write_group_nights
from pipeline.job.run import run_job
from pipeline.settings import ConfigError, JobConfig, TrendsConfig, load_config
from pipeline.storage import write_bytes, write_parquet

REPO = Path(__file__).resolve().parents[1]


# ---- the statistics (no Ray) ----

def test_pooled_moments_are_the_moments_of_all_images_together():
    rng = np.random.default_rng(0)
    nights = [rng.normal(i, 1 + i, (n, 5)) for i, n in enumerate((3, 7, 12))]
    pooled = EmbeddingMoments.pooled([EmbeddingMoments.of(e) for e in nights])
    direct = EmbeddingMoments.of(np.concatenate(nights))
    assert pooled.n == direct.n == 22
    assert np.allclose(pooled.mean, direct.mean) and pooled.spread == pytest.approx(direct.spread)
    again = EmbeddingMoments.from_dict(pooled.as_dict())
    assert again.n == 22 and np.allclose(again.mean, pooled.mean) and again.spread == pooled.spread
    assert EmbeddingMoments.of(np.zeros((0, 5))) is None and EmbeddingMoments.pooled([]) is None


def naive_shift(tonight: np.ndarray, before: np.ndarray) -> float:
    """The statistic written out on the raw embeddings."""
    variance = before.var(axis=0, ddof=1).sum()
    squared = np.sum((tonight.mean(0) - before.mean(0)) ** 2) / variance - 1 / len(tonight) - 1 / len(before)
    return float(np.sqrt(max(0.0, squared)))


def test_embedding_shift_is_the_naive_statistic_and_reads_in_per_image_spreads():
    rng = np.random.default_rng(1)
    dims = 64
    sigma = 1 / np.sqrt(dims)  # an image's RMS distance to the mean is 1
    before = [rng.normal(0, sigma, (200, dims)) for _ in range(3)]
    direction = np.eye(dims)[0]
    moments = EmbeddingMoments.pooled([EmbeddingMoments.of(e) for e in before])
    for delta in (0.0, 0.5, 1.0, 2.0):  # every image of tonight moved alike by delta spreads
        tonight = rng.normal(0, sigma, (200, dims)) + delta * direction
        value = embedding_shift(EmbeddingMoments.of(tonight), moments)
        assert value == pytest.approx(naive_shift(tonight, np.concatenate(before)), abs=1e-9)
        assert value == pytest.approx(delta, abs=0.15)
    smalls = [rng.normal(0, sigma, (6, dims)) for _ in range(200)]  # normal nights of 6 parts
    raw = np.mean([np.sum((e.mean(0) - moments.mean) ** 2) for e in smalls])  # their means' noise: about 1/6
    corrected = np.mean([embedding_shift(EmbeddingMoments.of(e), moments) ** 2 for e in smalls])
    assert raw == pytest.approx(1 / 6 + 1 / 600, rel=0.15) and corrected < 0.03
    small = smalls[0]
    assert embedding_shift(None, moments) is None
    assert embedding_shift(EmbeddingMoments.of(small), EmbeddingMoments.of(small[:1])) is None  # one image before
    assert embedding_shift(EmbeddingMoments.of(small[:, :8]), moments) is None  # another backbone's size


def test_score_shift_is_scipys_two_sample_ks_on_the_pooled_nights():
    rng = np.random.default_rng(2)
    tonight, before = rng.normal(0.5, 0.1, 40), [rng.normal(0.4, 0.1, n) for n in (30, 50)]
    expected = ks_2samp(tonight, np.concatenate(before))
    assert score_shift(tonight, np.concatenate(before)) == (pytest.approx(expected.statistic),
                                                            pytest.approx(expected.pvalue))
    assert score_shift(tonight, np.zeros(0)) == (None, None)


def test_the_alert_rule_bands_and_the_nights_it_needs():
    cfg = TrendsConfig(min_nights=2, flag_rate_band=[0.0, 0.3], max_embedding_shift=0.5, max_score_shift=0.5,
                       score_shift_p=0.01)
    assert Shift(2, 0.1, 0.2, 0.5, 0.1).alert(cfg) == (False, None)
    assert Shift(1, 0.1, 0.9, 1e-6, 3.0).alert(cfg) == (
        False, "drift not checked: 1 previous night(s), trends.min_nights is 2")
    alert, why = Shift(0, 0.4, None, None, None).alert(cfg)  # the flag rate needs no history
    assert alert and why == "flag rate 0.4 outside [0, 0.3]"
    assert Shift(2, 0.1, 0.2, 0.5, 0.8).alert(cfg) == (True, "embedding shift 0.8 > 0.5")
    assert Shift(2, 0.1, 0.8, 0.05, 0.1).alert(cfg) == (False, None)  # a large KS by chance: p too big
    assert Shift(2, 0.1, 0.8, 0.001, 0.1).alert(cfg) == (True, "score shift (KS) 0.8 > 0.5, p 0.001 < 0.01")
    default = TrendsConfig(min_nights=2, max_embedding_shift=None)  # the score band by detector
    assert Shift(5, 0.1, 0.8, 0.001, 9.0).alert(default, zero_shot=True) == (False, None)
    assert Shift(5, 0.1, 0.8, 0.001, None).alert(default, zero_shot=False) == (
        True, "score shift (KS) 0.8 > 0.5, p 0.001 < 0.01")
    assert Shift(5, 0.1, 1.0, 0.0, None).alert(TrendsConfig(max_score_shift=1.0), zero_shot=False) == (False, None)


@pytest.mark.parametrize("override, words", [
    ("trends.flag_rate_band=[0.3, 0.1]", "'trends.flag_rate_band': must be [low, high]"),
    ("trends.flag_rate_band=[0.1]", "'trends.flag_rate_band': must be [low, high]"),
    ("trends.min_nights=9", "'trends.min_nights': 9 is more than trends.nights (7)"),
    ("trends.max_score_shift=2", "'trends.max_score_shift': must be in (0, 1]"),
    ("demo.brightness={weave: 0}", "'demo.brightness': weave: a factor > 0"),
])
def test_trends_and_brightness_settings_are_checked_next_to_them(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "conf" / "nights_demo.yaml", JobConfig, [override])
    assert words in str(err.value)


def test_previous_nights_are_the_latest_successful_run_of_each_earlier_night(tmp_path):
    out = str(tmp_path / "out")
    runs = [("a", "2026-11-20", 1, True), ("b", "2026-11-21", 1, True), ("c", "2026-11-21", 2, True),
            ("d", "2026-11-22", 3, False), ("e", "2026-11-23", 1, True), ("f", "2026-11-25", 1, True)]
    for run_id, night, hour, succeeded in runs:
        layout = RunLayout(out, run_id, night)
        row = dict.fromkeys(NIGHTS_SCHEMA.names) | {"group_name": "g", "run_id": run_id,
                                                    "written_at": datetime(2026, 11, 26, hour, tzinfo=timezone.utc)}
        write_parquet(layout.group_nights, pa.Table.from_pylist([row], schema=NIGHTS_SCHEMA))
        if succeeded:
            write_bytes(layout.success, b"")
    corrupt = RunLayout(out, "z", "2026-11-20")  # a part that does not read: left out with a warning
    write_bytes(corrupt.group_nights, b"not parquet")
    write_bytes(corrupt.success, b"")
    tonight = RunLayout(out, "t", "2026-11-24")
    assert [(r["run_date"], r["run_id"]) for r in previous_nights(tonight, 2)] == [
        ("2026-11-23", "e"), ("2026-11-21", "c")]  # d failed: its night does not count; f is later
    assert [r["run_id"] for r in previous_nights(tonight, 7)] == ["e", "c", "a"]
    assert previous_nights(RunLayout(str(tmp_path / "none"), "t", "2026-11-24"), 7) == []


# ---- docs/nights.md's worked example: three nights of the real job ----

def worked_example_overrides() -> list[list[str]]:
    """The overrides of each command of docs/nights.md's worked example, as written there."""
    text = (REPO / "docs" / "nights.md").read_text()
    block = re.search(r"run by tests/test_nights\.py::test_the_worked_example\w*.*?-->\s*```bash\n(.*?)```",
                      text, re.S)[1]
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith(".venv/bin/python jobs/musc.py")]
    assert len(commands) == 3 and all(c[2:4] == ["--config", "conf/nights_demo.yaml"] for c in commands)
    return [c[4:] for c in commands]


@pytest.fixture(scope="module")
def three_nights(ray_local, tmp_path_factory):
    """The worked example's three nights under one output prefix; returns it with each night's report.
    After night 1 a reviewer judges weave's parts (``review_night``); nights 2 and 3 read those verdicts."""
    base = tmp_path_factory.mktemp("nights")
    out, verdicts = base / "out", base / "verdicts"
    reports = []
    for night, overrides in enumerate(worked_example_overrides(), start=1):
        manifest = next(o for o in overrides if o.startswith("inputs.manifest=")).split("=", 1)[1]
        reviewed = [f"verdicts={verdicts}"] if night > 1 else []
        cfg = load_config(REPO / "conf" / "nights_demo.yaml", JobConfig,
                          [*overrides, f"inputs.manifest={base / manifest}", f"output.prefix={out}", *reviewed])
        report = run_job(cfg)
        assert report.exit_code == 0, report.failures
        reports.append((cfg, report))
        if night == 1:
            review_night(out, verdicts)
    return out, reports


def review_night(out: Path, verdicts: Path) -> None:
    """A reviewer's verdicts on night 1's weave: flagged parts defect, unflagged parts good except the
    lowest-scoring one, a defect the rule missed (never to become a reference)."""
    rows = sorted((r for r in read_table(out / "scores") if r["group_name"] == "weave" and r["status"] == "ok"),
                  key=lambda r: r["score"])
    judged = [(r["uri"], "defect" if r["is_anomaly"] or i == 0 else "good") for i, r in enumerate(rows)]
    verdicts.mkdir()
    (verdicts / "review-1.csv").write_text("uri,verdict,reviewer,reviewed_at\n" + "".join(
        f"{uri},{verdict},ana,{datetime.now(timezone.utc).isoformat()}\n" for uri, verdict in judged))


def read_table(root: Path, **kwargs) -> list[dict]:
    return pds.dataset(str(root), partitioning="hive", **kwargs).to_table().to_pylist()


def test_the_worked_example_alerts_on_the_drifted_night_and_group_only(three_nights):
    out, reports = three_nights
    rows = read_table(out / "group_nights")
    alerts = {(str(r["run_date"]), r["group_name"]): r for r in rows}
    assert len(rows) == 6 and sorted(alerts) == [(n, g) for n in ("2026-11-21", "2026-11-22", "2026-11-23")
                                                 for g in ("disc", "weave")]
    fired = {key for key, r in alerts.items() if r["alert"]}
    assert fired == {("2026-11-23", "weave")}
    drifted = alerts[("2026-11-23", "weave")]
    assert drifted["previous_nights"] == 2 and "embedding shift" in drifted["alert_reason"]
    assert drifted["embedding_shift"] > 0.5 > alerts[("2026-11-23", "disc")]["embedding_shift"]
    assert [alerts[(n, "weave")]["previous_nights"] for n in ("2026-11-21", "2026-11-22")] == [0, 1]
    assert alerts[("2026-11-22", "disc")]["alert_reason"].startswith("drift not checked: 1 previous night")
    night3 = reports[2][1]
    assert night3.manifest["alerts"] == {"weave": drifted["alert_reason"]}
    assert f"ALERT group 'weave': {drifted['alert_reason']}" in format_summary(night3)
    assert not reports[0][1].manifest["alerts"] and "ALERT" not in format_summary(reports[1][1])
    page = Path(night3.manifest["outputs"]["report"]).read_text()
    assert page.count("<h3>Trend over the last nights") == 2 and "tonight shaded; ALERT: embedding shift" in page


def test_the_reviewers_verdicts_choose_the_next_nights_references_and_give_precision(three_nights):
    out, reports = three_nights
    scores = [r for r in read_table(out / "scores") if r["group_name"] == "weave" and r["status"] == "ok"]
    night1 = sorted((r for r in scores if r["run_id"] == reports[0][1].manifest["run_id"]), key=lambda r: r["score"])
    good = {r["uri"] for r in night1[1:] if not r["is_anomaly"]}
    cfg2, night2 = reports[1]
    used = night2.manifest["references"]["per_group"]["weave"]
    assert used and set(used) <= good and night1[0]["uri"] not in used  # the missed defect is never one
    assert len(used) == min(len(good), cfg2.reference_images)
    assert "disc" not in night2.manifest["references"]["per_group"]  # nobody reviewed disc
    flagged = sum(bool(r["is_anomaly"]) for r in night1)
    rows = {(str(r["run_date"]), r["group_name"]): r for r in read_table(out / "group_nights")}
    for night in ("2026-11-22", "2026-11-23"):  # both report night 1, the last night reviewed
        weave = rows[(night, "weave")]
        assert weave["reviewed_run_id"] == reports[0][1].manifest["run_id"]
        assert (weave["reviewed_flags"], weave["confirmed_defects"]) == (flagged, flagged)
        assert weave["flag_precision"] == (1.0 if flagged else None)
        assert (weave["reviewed_unflagged"], weave["missed_defects"]) == (len(night1) - flagged, 1)
        assert rows[(night, "disc")]["reviewed_run_id"] is None
    assert rows[("2026-11-21", "weave")]["reviewed_run_id"] is None
    assert "flag precision weave" in format_summary(night2)


def test_the_tables_counts_and_quantiles_are_the_scores_tables(three_nights):
    out, _ = three_nights
    nights = read_table(out / "group_nights")
    scores = read_table(out / "scores")
    for row in nights:
        mine = [s for s in scores if s["run_id"] == row["run_id"] and s["group_name"] == row["group_name"]]
        statuses = {k[len("images_"):]: v for k, v in row.items() if k.startswith("images_") and v}
        assert statuses == {s: sum(r["status"] == s for r in mine) for s in {r["status"] for r in mine}}
        assert row["images"] == len(mine) and row["flagged"] == sum(bool(r["is_anomaly"]) for r in mine)
        values = np.array([r["score"] for r in mine if r["score"] is not None])
        assert row["scored"] == len(values) and row["flag_rate"] == row["flagged"] / len(values)
        assert [row[k] for k in ("score_p05", "score_p50", "score_p95", "score_max")] == pytest.approx(
            [*np.quantile(values, [0.05, 0.5, 0.95]), values.max()])
        assert row["flag_policy"] == mine[0]["flag_policy"] and row["embedding_images"] == len(values)
        flagged = values[[r["is_anomaly"] for r in mine if r["score"] is not None]]
        assert flagged.min() > row["flag_line"]  # robust_z: above the line


def test_the_table_reads_in_duckdb_with_the_documented_types(three_nights):
    duckdb = pytest.importorskip("duckdb")
    from test_bi import athena_tables

    out, _ = three_nights
    columns, partitions = athena_tables()["musc.group_nights"]
    duck = {"string": "VARCHAR", "int": "INTEGER", "double": "DOUBLE", "boolean": "BOOLEAN", "date": "DATE",
            "timestamp": "TIMESTAMP WITH TIME ZONE", "array<float>": "FLOAT[]"}
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{out}/group_nights/**/*.parquet', "
                           "hive_partitioning = true, hive_types = {'run_date': DATE})").fetchall()
    assert [(name, kind) for name, kind, *_ in described] == [(n, duck[t]) for n, t in [*columns, *partitions]]
    text = (REPO / "docs" / "nights.md").read_text()
    (query,) = [b for b in re.findall(r"```sql\n(.*?)```", text, re.S) if b.startswith("-- DuckDB")]
    result = duckdb.sql(query.replace("'outputs/nights/", f"'{out}/"))
    trend = [dict(zip(result.columns, row)) for row in result.fetchall()]
    print(result)  # the table docs/nights.md shows
    assert [(str(r["run_date"]), r["group_name"], r["alert"]) for r in trend] == [
        (n, g, n == "2026-11-23" and g == "weave") for n in ("2026-11-21", "2026-11-22", "2026-11-23")
        for g in ("disc", "weave")]


def test_a_rerun_rewrites_the_nights_table_whole(three_nights):
    out, reports = three_nights
    cfg, report = reports[2]
    layout = RunLayout(str(out), report.manifest["run_id"], report.manifest["run_date"])
    summaries = {g: json.loads((out / "runs" / layout.run_id / "groups" / f"{g}.json").read_text())
                 for g in ("disc", "weave")}
    before = read_table(out / "group_nights" / "run_date=2026-11-23")
    again = write_group_nights(cfg, layout, summaries, before[0]["backbone"], before[0]["config_hash"],
                               report.manifest["verdicts"])
    assert sorted(p.name for p in (out / "group_nights" / "run_date=2026-11-23").iterdir()) == [
        f"part-{layout.run_id}.parquet"]
    after = read_table(out / "group_nights" / "run_date=2026-11-23")
    assert [{k: v for k, v in r.items() if k != "written_at"} for r in after] == [
        {k: v for k, v in r.items() if k != "written_at"} for r in before]
    assert again.alerts == {"weave": before[1]["alert_reason"]}
