"""A run's identity: one night is one run id whatever the spelling of its locations, and a second run
of the same night and inputs is said aloud (BI would count its images twice)."""

import logging

from pipeline.data.inputs import InputRecord
from pipeline.job.identity import config_hash, inputs_fingerprint, warn_same_night_runs, write_run_record
from pipeline.job.layout import RunLayout
from pipeline.job.scores_table import write_text_group_marker
from pipeline.settings import JobConfig, config_from_dict


def test_spellings_of_one_location_are_one_run_identity():
    """inputs.uris [.../in] and [.../in/] were two nights (the trailing slash changed the config hash): the
    same night run twice wrote two part files per group and BI counted every row twice."""
    def chash(**keys) -> str:
        return config_hash(config_from_dict(JobConfig, {"backbone": {"random_init": True}, **keys}))

    folder = ["/data/in", "/data/in/", "/data//in", "/data/./in/", "file:///data/in"]
    assert len({chash(inputs={"uris": [uri]}) for uri in folder}) == 1
    assert chash(inputs={"uris": ["s3://b/in"]}) == chash(inputs={"uris": ["s3://b/in/"]})
    assert chash(inputs={"uris": ["s3://b/in"]}) != chash(inputs={"uris": ["s3://b//in"]})  # two keys on S3
    assert chash(inputs={"uris": ["/data/in"]}) != chash(inputs={"uris": ["/data/in2"]})
    assert chash(inputs={"manifest": "m/night.csv"}) == chash(inputs={"manifest": "./m//night.csv"})
    night = {"inputs": {"uris": ["s3://b/in"]}}
    assert chash(**night, references="s3://g/ok/") == chash(**night, references="s3://g/ok")
    assert chash(**night, references="s3://g/ok/") != chash(**night, references="s3://g/other/")
    weights = {"random_init": False, "weights": "/w//clip.bin"}
    assert chash(**night, backbone=weights) == chash(**night, backbone={**weights, "weights": "/w/clip.bin"})


def test_a_second_run_of_the_same_night_and_inputs_is_one_warning_line(tmp_path, caplog):
    out = str(tmp_path / "musc")
    tonight = [InputRecord(f"/in/g/{i}.png", "g") for i in range(3)]
    other = [InputRecord("/in/g/9.png", "g")]
    for run_id, night, records in (("a", "2026-11-22", tonight), ("b", "2026-11-22", other),
                                   ("c", "2026-11-21", tonight)):
        layout = RunLayout(out, run_id, night)
        write_run_record(layout, {"run_id": run_id, "run_date": night, "config_hash": run_id,
                                  "inputs": {"count": len(records), "fingerprint": inputs_fingerprint(records)}})
        write_text_group_marker(layout)
    with caplog.at_level(logging.WARNING):
        warn_same_night_runs(RunLayout(out, "d", "2026-11-22"), tonight)
        warn_same_night_runs(RunLayout(out, "a", "2026-11-22"), tonight)  # a run never warns about itself
        warn_same_night_runs(RunLayout(out, "e", "2026-11-20"), tonight)  # a night nobody scored yet
    assert [r.getMessage().split(": ")[0] for r in caplog.records] == [
        "run_date 2026-11-22 was already scored with the same inputs by run a under this output.prefix"]
    assert "musc.scores_latest" in caplog.records[0].getMessage()
