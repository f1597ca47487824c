"""Reviewers' verdicts without Ray: the reader (bad files and rows are warnings, nothing else is lost, one
URI under several spellings is one image), flag precision against a hand count, and the references they
give next night, over earlier runs written as the job writes them. The whole job with verdicts:
tests/test_nightly.py::test_references_kept_up_from_earlier_runs."""

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.inputs import InputRecord
from pipeline.job.identity import config_hash
from pipeline.job.layout import RunLayout
from pipeline.job.preflight import JobError, check_verdicts
from pipeline.job.references import resolve_references
from pipeline.job.verdicts import (
    flag_precision,
    precision_lines,
    read_verdicts,
    review_nights,
    review_record,
    verdict_key,
)
from pipeline.settings import ConfigError, JobConfig, config_from_dict
from pipeline.storage import write_bytes, write_parquet


def write_csv(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["uri,verdict,reviewer,reviewed_at", *lines]) + "\n")


def write_verdicts_parquet(path, rows):
    table = pa.table({"uri": [r[0] for r in rows], "verdict": [r[1] for r in rows], "reviewer": ["ann"] * len(rows),
                      "reviewed_at": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC"))})
    pq.write_table(table, path)


def at(day: int) -> datetime:
    return datetime(2026, 11, day, 8, 0, tzinfo=timezone.utc)


def test_bad_files_rows_and_contradictions_are_one_warning_each_and_the_rest_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "out" / "x.png"  # the job knows it as this absolute path
    table = tmp_path / "verdicts"
    write_csv(table / "2026-11-20" / "a.csv", [
        "./out/x.png,good,ann,2026-11-20T08:00:00",           # relative, from the working folder
        "s3://b/in/y.png/,Good,ann,2026-11-20T09:00:00+01:00",  # a trailing slash, capitals
        "s3://b/in/z.png,maybe,ann,2026-11-20T08:00:00",       # row 3: not a verdict
        "s3://b/in/w.png,defect,ann,yesterday",                # row 4: not a timestamp
        ",defect,ann,2026-11-20T08:00:00",                     # row 5: no uri
    ])
    write_verdicts_parquet(table / "b.parquet", [
        (f"file://{image}", "defect", at(21)),   # contradicts ./out/x.png: later, so it counts
        ("s3://b/in/y.png", "good", at(21)),     # the same verdict again: no contradiction
        ("s3://b/in/v.png", "defect", at(21)),
    ])
    (table / "broken.parquet").write_bytes(b"PAR1 not really")
    (table / "short.csv").write_text("uri,verdict\ns3://b/in/u.png,good\n")
    (table / "notes.txt").write_text("read me")
    (table / "_SUCCESS").write_text("")  # a writer's marker and temporary file: not verdicts
    (table / ".c.csv.part-1").write_text("half")

    verdicts = read_verdicts(str(table))
    assert verdicts.latest == {str(image): "defect", "s3://b/in/y.png": "good", "s3://b/in/v.png": "defect"}
    assert verdicts.contradicted == {str(image)} and verdicts.rows == 5 and verdicts.files == 5
    assert not verdicts.confirmed_good(str(image)) and verdicts.never_reference(f"file://{image}")
    assert verdicts.confirmed_good("s3://b/in/y.png") and not verdicts.never_reference("s3://b/in/y.png")
    warnings = list(verdicts.warnings)
    expected = [f"{table}/2026-11-20/a.csv: row 3 skipped, verdict 'maybe'",
                f"{table}/2026-11-20/a.csv: row 4 skipped, Invalid isoformat",
                f"{table}/2026-11-20/a.csv: row 5 skipped, no uri",
                f"{table}/broken.parquet: skipped, unreadable",
                f"{table}/notes.txt: skipped, not a .parquet or .csv file",
                f"{table}/short.csv: skipped, no column(s) reviewer, reviewed_at",
                f"{image} is contradicted (good by ann at 2026-11-20T08:00:00+00:00"]
    assert len(warnings) == len(expected)
    for text, warning in zip(expected, warnings):
        assert text in warning, (text, warning)
    assert "its latest, defect, counts for flag precision; it is never a reference" in warnings[-1]


def test_an_empty_table_is_fine_and_a_missing_one_is_refused_in_one_line(tmp_path):
    (tmp_path / "verdicts").mkdir()
    assert read_verdicts(str(tmp_path / "verdicts")).warnings == (f"verdicts {tmp_path}/verdicts: no files yet",)
    cfg = config_from_dict(JobConfig, {"inputs": {"uris": ["in"]}, "verdicts": str(tmp_path / "verdict")})
    with pytest.raises(JobError, match=r"^verdicts .*/verdict: no such folder; correct the key"):
        check_verdicts(cfg)
    with pytest.raises(ConfigError, match="'verdicts'.*instead of \\(not with\\) a references prefix"):
        config_from_dict(JobConfig, {"inputs": {"uris": ["in"]}, "verdicts": "v", "references": "r"})


def test_verdicts_are_part_of_a_runs_identity_only_when_set():
    def cfg(**keys):
        return config_hash(config_from_dict(JobConfig, {"inputs": {"uris": ["in"]}, **keys}))

    assert cfg(verdicts="v") != cfg() == cfg(verdict_runs=30)  # configs without verdicts keep their run ids
    assert cfg(verdicts="v/") == cfg(verdicts="./v") == cfg(verdicts="v") != cfg(verdicts="v", verdict_runs=5)


def write_run(prefix: str, run_id: str, finished: int, groups: dict[str, list[tuple[str, float, bool]]]) -> None:
    """An earlier successful run as the job leaves it: per group its rows (uri, score, flagged), a manifest,
    _SUCCESS."""
    layout = RunLayout(prefix, run_id, f"2026-11-{finished:02d}")
    for group, rows in groups.items():
        write_parquet(layout.scores(group), pa.table({
            "uri": [r[0] for r in rows], "score": [r[1] for r in rows], "status": ["ok"] * len(rows),
            "is_anomaly": [r[2] for r in rows]}))
    write_bytes(layout.manifest, json.dumps({"run_id": run_id, "run_date": layout.run_date, "status": "succeeded",
                                             "started_at": at(finished).replace(hour=0).isoformat(),
                                             "finished_at": at(finished).isoformat()}).encode())
    write_bytes(layout.success, b"")


def test_confirmed_good_first_then_the_lowest_unflagged_never_a_defect_and_precision_by_hand(tmp_path):
    out = str(tmp_path / "out")
    img = {name: f"s3://b/line/{name}.png" for name in "abcdefghij"}
    old = "s3://b/line/old.png"
    # night 1 (older) and night 2 of group "line/cap"; tonight scores c again (never its own reference)
    write_run(out, "n1", 20, {"line/cap": [(img["a"], 0.1, False), (img["b"], 0.2, False), (img["c"], 0.3, False),
                                           (img["d"], 0.9, True), (img["e"], 0.8, True), (img["f"], 0.7, False)]})
    write_run(out, "n2", 21, {"line/cap": [(img["g"], 0.15, False), (img["h"], 0.95, True), (img["i"], 0.6, False)],
                              "other": [(img["j"], 0.5, True)]})
    table = tmp_path / "verdicts"
    write_csv(table / "mon.csv", [
        f"{img['f']},good,ann,2026-11-21T08:00:00",    # unflagged, high: reference_runs would not take it
        f"{img['a']},defect,ann,2026-11-21T08:00:00",  # unflagged and lowest: a defect, never a reference
        f"{img['d']},defect,ann,2026-11-21T08:00:00",  # flagged, confirmed
        f"{img['e']},good,ann,2026-11-21T08:00:00",    # flagged, a false alarm
        f"{img['b']},good,ann,2026-11-21T08:00:00",
        f"{img['c']},good,ann,2026-11-21T08:00:00",    # good, but tonight's input
        "s3://b/elsewhere/x.png,good,ann,2026-11-21T08:00:00",  # no run scored it
        "s3://b/line/old.png,good,ann,2026-11-19T08:00:00",     # nor this one, reviewed before n1 and n2 ran
    ])
    write_verdicts_parquet(table / "tue.parquet", [
        (img["b"], "defect", at(22)),  # contradicts: never a reference
        (img["h"], "defect", at(22)), (img["i"], "good", at(22)), (img["j"], "good", at(22)),
    ])
    verdicts = read_verdicts(str(table))
    tonight = [InputRecord(img["c"], "line/cap"), InputRecord("s3://b/line/new.png", "line/cap")]
    review = review_nights(verdicts, out, "tonight", 30, ["line/cap"])
    assert review.warnings == tuple(f"verdicts: {uri} was not scored by the last 2 successful run(s) under {out} "
                                    "(verdict_runs 30): left out" for uri in ("s3://b/elsewhere/x.png", old))
    latest_only = review_nights(verdicts, out, "tonight", 1, ["line/cap"])  # n2: old.png is about an older night
    assert latest_only.aged_out == 1 and not any(old in w for w in latest_only.warnings)
    assert len(latest_only.warnings) == 7  # x.png and n1's six images, reviewed after n2 started: unknown
    # by hand: n1 flagged d (defect), e (good); unflagged reviewed a (defect), b (defect, its latest), c, f (good)
    assert review.precision["line/cap"]["n1"] == {
        "run_date": "2026-11-20", "reviewed_flags": 2, "confirmed_defects": 1, "flag_precision": 0.5,
        "reviewed_unflagged": 4, "missed_defects": 2}
    assert review.precision["line/cap"]["n2"]["flag_precision"] == 1.0  # h flagged and defect; i unflagged, good
    assert review.precision["other"]["n2"]["flag_precision"] == 0.0
    assert flag_precision([{"uri": img["a"], "is_anomaly": None}], verdicts)["flag_precision"] is None  # not scored
    assert precision_lines(review_record(review, str(table)), limit=1) == [
        "  flag precision line/cap: 2026-11-21 (n2) 1/1 flags confirmed (100%), 0/1 unflagged were defects; "
        "2026-11-20 (n1) 1/2 flags confirmed (50%), 2/4 unflagged were defects",
        "  ... flag precision of 1 more groups in the manifest"]

    def references(**keys):
        cfg = config_from_dict(JobConfig, {"inputs": {"uris": ["s3://b/line/"]}, "output": {"prefix": out},
                                           "verdicts": str(table), **keys})
        return resolve_references(cfg, tonight, "tonight", review)

    # confirmed good: i (the latest run first), e (a false alarm: flagged, judged good), f; never a, b, c
    only_verdicts = references(reference_images=5)
    assert only_verdicts["per_group"] == {"line/cap": sorted([img["i"], img["e"], img["f"]])}
    assert only_verdicts["run_of"] == {img["i"]: "n2", img["e"]: "n1", img["f"]: "n1"}
    assert only_verdicts["from_verdicts"] == {"line/cap": 3}
    filled = references(reference_images=5, reference_runs=2)  # then the lowest unflagged: g; a (defect),
    assert filled["per_group"] == {"line/cap": sorted([img["i"], img["e"], img["f"], img["g"]])}  # b, c kept out
    assert filled["from_verdicts"] == {"line/cap": 3} and filled["run_of"][img["g"]] == "n2"
    assert references(reference_images=1, reference_runs=2)["per_group"] == {"line/cap": [img["i"]]}
    with pytest.raises(JobError, match=r"^verdicts .* \(flagging.policy reference_fpr\): no known-good images "
                                       r"for 1 input group\(s\), e.g. \['new line'\]"):
        resolve_references(config_from_dict(JobConfig, {
            "inputs": {"uris": ["s3://b/line/"]}, "output": {"prefix": out}, "verdicts": str(table),
            "flagging": {"policy": "reference_fpr"}}), [*tonight, InputRecord("s3://b/n/1.png", "new line")],
            "tonight", review)
    without = resolve_references(config_from_dict(JobConfig, {"inputs": {"uris": ["s3://b/line/"]}, "output": {
        "prefix": out}, "reference_runs": 2, "reference_images": 2}), tonight, "tonight")  # as before verdicts
    assert without["per_group"] == {"line/cap": sorted([img["a"], img["g"]])} and "from_verdicts" not in without


def test_one_image_under_its_spellings_is_one_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len({verdict_key(u) for u in ("in/x.png", "./in/x.png", "file://in/x.png", f"{tmp_path}/in//x.png",
                                         f"file://{tmp_path}/in/x.png")}) == 1
    assert verdict_key("s3://b/in/x.png/") == "s3://b/in/x.png" != verdict_key("s3://b/in//x.png")
