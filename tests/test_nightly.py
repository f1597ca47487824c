"""The nightly job: planning and run identity without Ray, then whole runs on an in-process Ray
cluster against the local S3 server, checked row by row and against the engine called directly."""

import json
import time

import numpy as np
import pyarrow.dataset as pds
import pyarrow.fs
import pytest
import s3fs
import torch
from conftest import CORRUPT_FILES

from pipeline.data.benchmarks import load_mask, read_split
from pipeline.data.images import load_image
from pipeline.data.inputs import InputRecord
from pipeline.engine.backbones import build_backbone
from pipeline.engine.maps import anomaly_maps
from pipeline.engine.scorers import score_features
from pipeline.evaluation.metrics import category_metrics
from pipeline.job.identity import config_hash
from pipeline.job.lease import RunLease
from pipeline.job.manifest import format_summary, redact
from pipeline.job.plan import plan_run
from pipeline.job.preflight import JobError
from pipeline.job.run import main, run_job
from pipeline.settings import ConfigError, JobConfig, config_from_dict, load_config

BACKBONE = {"family": "timm_cnn", "name": "resnet18", "random_init": True, "image_size": 64, "layers": [1, 2],
            "batch_size": 8}


def job_config(**sections) -> JobConfig:
    """The job's defaults, but RsCIN: these tests check the job's scores against the engine's on features
    extracted apart, and RsCon re-scores by each image's highest-scoring patch, which the int8 shards
    can move among near-equal patches of random-init features (on bottle's real features int8 leaves
    its AUROC unchanged, Spearman 0.9998: docs/scoring.md). test_snamd_rscon.py pins RsCon itself."""
    data = {"backbone": BACKBONE, "extraction": {"shard_size": 5}, "scoring": {"max_subset_size": 200},
            "flagging": {"policy": "top_fraction", "value": 0.25}, "output": {"heatmaps": "flagged"},
            "musc": {"rescoring": "rscin"}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(JobConfig, data)


# ---- planning and run identity (no Ray) ----

def test_subsets_are_seeded_per_group_and_bounded():
    records = [InputRecord(f"{g}/{i:03d}.png", g) for g, n in (("a", 10), ("b", 7), ("c", 1)) for i in range(n)]
    plan = plan_run(records, shard_size=2, max_subset_size=4, seed=0)
    assert [p.size for p in plan.subsets["a"]] == [4, 3, 3] and len(plan.subsets["b"]) == 2
    assert plan.subsets["c"] == [] and len(plan.shards_of_group["c"]) == 1  # one image: extracted, not compared
    shards = {s.shard_id: s for s in plan.shards}
    for g in "ab":  # every image in exactly one subset, URI order inside
        members = [[r.uri for s in p.shard_ids for r in shards[s].records] for p in plan.subsets[g]]
        assert sorted(u for m in members for u in m) == [r.uri for r in records if r.group == g]
        assert all(m == sorted(m) for m in members)
    again = plan_run([r for r in records if r.group == "a"], shard_size=2, max_subset_size=4, seed=0)
    assert [[r.uri for r in s.records] for s in again.shards] == [
        [r.uri for r in shards[s].records] for s in plan.shards_of_group["a"]]  # other groups reshuffle nothing
    assert plan_run(records, 2, 4, seed=1).subsets != plan.subsets


def test_references_get_shards_of_their_own_and_are_never_inputs(tmp_path):
    from PIL import Image

    from pipeline.job.preflight import JobError
    from pipeline.job.references import resolve_references

    records = [InputRecord(f"{g}/{i:03d}.png", g) for g, n in (("a", 10), ("c", 1)) for i in range(n)]
    plan = plan_run(records, shard_size=2, max_subset_size=4, seed=0, references={"a": ["r/2.png", "r/1.png"]})
    (reference_shard,) = {p.reference_shard_ids for p in plan.subsets["a"]}  # one set, shared by every subset
    assert [r.uri for s in reference_shard for r in plan.shards[s].records] == ["r/1.png", "r/2.png"]
    assert not set(reference_shard) & {s for ids in plan.shards_of_group.values() for s in ids}  # never rows
    assert [s.records for s in plan.shards if s.shard_id not in reference_shard] == [
        s.records for s in plan_run(records, 2, 4, seed=0).shards]  # the inputs' shards as without references
    folder = tmp_path / "in" / "g"
    folder.mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(folder / f"{name}.png")
    tonight = [InputRecord(str(folder / f"{name}.png"), "g") for name in ("a", "b")]
    cfg = job_config(inputs={"manifest": "m.csv"}, references=str(tmp_path / "in"), reference_images=5)
    assert resolve_references(cfg, tonight, "run")["per_group"] == {"g": [str(folder / "c.png")]}
    with pytest.raises(JobError, match="no known-good images for 1 input group"):
        resolve_references(cfg, [*tonight, InputRecord(str(folder / "c.png"), "g")], "run")


def test_config_hash_covers_results_not_execution_and_secrets_are_redacted():
    base = job_config(inputs={"uris": ["s3://b/x/"]})
    same = job_config(inputs={"uris": ["s3://b/x/"]}, extraction={"actors": {"min": 1, "max": 4}, "shard_size": 5},
                      run_date="2026-11-22", storage_options={"key": "AKIA", "secret": "s"})
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(job_config(inputs={"uris": ["s3://b/x/"]}, musc={"topmin_max": 0.2}))
    assert config_hash(base) != config_hash(job_config(inputs={"uris": ["s3://b/x/"]}, extraction={"shard_size": 6}))
    shown = redact({"storage_options": {"key": "AKIA", "secret": "s", "endpoint_url": "http://h",
                                        "client_kwargs": {"aws_session_token": "t"}}})
    assert "AKIA" not in json.dumps(shown) and shown["storage_options"]["endpoint_url"] == "http://h"
    assert shown["storage_options"]["client_kwargs"]["aws_session_token"] == "<redacted>"


def test_manifest_config_keeps_only_harmless_storage_options():
    """Secrets whose names no pattern guesses (connection_string, passwd, headers.Authorization) never
    reach manifest.json: storage options are redacted by allow-list, nested mappings included."""
    secrets = ["DefaultEndpointsProtocol=https;AccountKey=abc", "hunter2", "Bearer eyJhbGciOi", "AKIA123", "s3cr3t"]
    cfg = job_config(inputs={"uris": ["https://reader:s3cr3t@images.example.com/night/"]}, storage_options={
        "connection_string": secrets[0], "passwd": secrets[1], "headers": {"Authorization": secrets[2]},
        "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1",
                          "aws_access_key_id": secrets[3]},
        "anon": False})
    from pipeline.settings import config_to_dict

    shown = redact(config_to_dict(cfg))
    text = json.dumps(shown)
    assert not [s for s in secrets if s in text]
    options = shown["storage_options"]
    assert options["client_kwargs"]["endpoint_url"] == "http://minio:9000" and options["anon"] is False
    assert options["client_kwargs"]["region_name"] == "eu-west-1"
    assert options["headers"]["Authorization"] == "<redacted>"
    assert shown["inputs"]["uris"] == ["https://<redacted>@images.example.com/night/"]


@pytest.mark.parametrize("override, key", [
    ("bogus=1", "bogus"),
    ("scoring.max_subset_size=abc", "scoring.max_subset_size"),
    ("scoring.max_subset_size=1", "scoring.max_subset_size"),
    ("flagging.policy=threshold", "flagging.value"),
    ("run_date=22-11-2026", "run_date"),
    ("inputs.uris=null", "inputs.uris"),
])
def test_bad_config_is_one_line_naming_the_key_before_any_work(tmp_path, capsys, override, key):
    conf = tmp_path / "job.yaml"
    conf.write_text(f"inputs: {{manifest: {tmp_path}/m.csv}}\noutput: {{prefix: {tmp_path}/out}}\n")
    if override == "inputs.uris=null":
        override = f"inputs.uris=[{tmp_path}]"  # both uris and manifest
    assert main(["--config", str(conf), override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, words", [
    ("inputs: !!python/object/apply:os.system ['touch {marker}']\n", "could not determine a constructor"),
    ("inputs: {{uris: [{marker}\n", "line 2"),
    ("output: {{prefix: x}}\nrun_id: [\n", "not valid YAML"),
])
def test_unsafe_or_broken_yaml_is_one_line_and_runs_nothing(tmp_path, capsys, text, words):
    conf = tmp_path / "job.yaml"
    conf.write_text(text.format(marker=tmp_path / "executed"))
    assert main(["--config", str(conf)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(conf) in err and words in err, err
    assert not (tmp_path / "executed").exists()
    assert main(["--config", str(conf), "run_id=[oops"]) == 2  # an override value is parsed the same way
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_date_values_from_yaml_are_accepted(tmp_path):
    conf = tmp_path / "job.yaml"
    conf.write_text("inputs: {manifest: m.csv}\nrun_date: 2026-11-22\n")  # unquoted: YAML would read a date
    assert load_config(conf, JobConfig).run_date == "2026-11-22"
    with pytest.raises(ConfigError, match="exactly one of"):
        config_from_dict(JobConfig, {})


def test_missing_bucket_and_missing_credentials_fail_in_one_line(s3_bucket, tmp_path, capsys, monkeypatch):
    conf = tmp_path / "job.yaml"
    conf.write_text(f"inputs: {{uris: ['s3://{s3_bucket}/night/']}}\noutput: {{prefix: 's3://no-such-bucket/musc'}}\n"
                    "backbone: {family: timm_cnn, name: resnet18, random_init: true}\n")
    assert main(["--config", str(conf)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-bucket" in err and "does not exist" in err

    assert main(["--config", str(conf), f"output.prefix=s3://{s3_bucket}/musc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "night" in err and "not found" in err

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()  # a fresh process: no client made with the old credentials
    assert main(["--config", str(conf), f"output.prefix=s3://{s3_bucket}/musc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no credentials" in err and s3_bucket in err
    monkeypatch.undo()
    s3fs.S3FileSystem.clear_instance_cache()
    assert s3fs.S3FileSystem(skip_instance_cache=True).ls(s3_bucket) == []  # nothing was written


# ---- whole runs on an in-process Ray cluster ----

def read_scores(prefix: str) -> "pyarrow.Table":
    """The scores table with plain pyarrow (its own S3 client, Hive partitions), as a BI tool would."""
    import os

    fs = pyarrow.fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], scheme="http",
                                 access_key="testing", secret_key="testing", region="us-east-1")
    return pds.dataset(prefix.removeprefix("s3://") + "/scores", filesystem=fs, format="parquet",
                       partitioning="hive").to_table()


def engine_reference(root, category: str, cfg: JobConfig):
    """The engine called directly on the local copy: features, MuSc (or PatchEAD) on the whole group,
    metrics."""
    samples = [s for s in read_split(str(root), "mvtec", category, "test")
               if s.image_path.rsplit("/", 1)[-1] not in CORRUPT_FILES]
    size = cfg.backbone.image_size
    torch.manual_seed(0)  # the same random init as every extraction actor
    backbone = build_backbone(cfg.backbone)
    feats = backbone.extract(np.stack([load_image(s.image_path, size) for s in samples]))
    result = score_features(feats, cfg.scorer_settings(), "cpu")
    maps = anomaly_maps(result.patch_scores, size, cfg.scorer_settings().gaussian_sigma).numpy()
    masks = np.stack([load_mask(s, size) for s in samples])
    metrics = category_metrics(result.image_scores.numpy(), np.array([s.label for s in samples]), maps, masks)
    rel = {s.image_path[len(str(root)):]: float(v) for s, v in zip(samples, result.image_scores)}
    return rel, metrics


def test_in_process_run_on_s3_one_row_per_input_and_engine_agreement(ray_local, s3_batch, capsys):
    out = s3_batch["prefix"].rsplit("/", 1)[0] + "/musc"
    cfg = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out}, run_id="night-1")
    report = run_job(cfg)
    assert report.exit_code == 0, report.failures

    table = read_scores(out)
    rows = table.to_pylist()
    inputs = [r.uri for r in s3_batch["records"]]
    assert sorted(r["uri"] for r in rows) == sorted(inputs)  # one row per input, none twice
    by_name = {r["uri"][len(s3_batch["prefix"]):]: r for r in rows}
    for name in CORRUPT_FILES:
        row = by_name[f"/weave/test/good/{name}"]
        assert row["status"] == "decode_error" and row["error"] and row["score"] is None
    solo = by_name["/solo/test/good/000.png"]
    assert solo["status"] == "group_too_small" and "needs at least 2" in solo["error"]
    scored = [r for r in rows if r["status"] == "ok"]
    assert len(scored) == 14 and all(r["group_name"] in ("weave", "disc") for r in scored)
    assert {r["run_date"] for r in rows} == {report.manifest["run_date"]}

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for group in ("weave", "disc"):
        group_rows = [r for r in scored if r["group_name"] == group]
        assert sorted(r["rank_in_group"] for r in group_rows) == list(range(1, 8))
        assert sum(r["is_anomaly"] for r in group_rows) == 2  # top 25% of 7
        for r in group_rows:
            assert (r["map_uri"] is not None) == r["is_anomaly"]
            if r["map_uri"]:
                assert fs.cat_file(r["map_uri"])[:8] == b"\x89PNG\r\n\x1a\n"
        engine_scores, engine_metrics = engine_reference(s3_batch["root"], group, cfg)
        for name, score in engine_scores.items():
            assert by_name[name]["score"] == pytest.approx(score, rel=2e-2, abs=2e-3)
        job_metrics = report.manifest["metrics"]["per_group"][group]
        for key in ("image_auroc", "pixel_auroc", "au_pro"):
            assert job_metrics[key] == pytest.approx(engine_metrics[key], abs=0.03), key

    run = f"{out}/runs/night-1"
    manifest = json.loads(fs.cat_file(f"{run}/manifest.json"))
    assert manifest["status"] == "succeeded" and fs.exists(f"{run}/_SUCCESS")
    assert manifest["counts"]["inputs"] == manifest["counts"]["rows_written"] == len(inputs) == 18
    assert manifest["counts"]["statuses"] == {"ok": 14, "decode_error": 3, "group_too_small": 1}
    assert not fs.exists(f"{run}/features")  # large intermediates are removed after success
    assert fs.exists(f"{out}/metrics/run_date={manifest['run_date']}/part-night-1.parquet")
    summary = capsys.readouterr()
    assert "mutual scoring" in summary.err  # progress output
    report = fs.cat_file(manifest["outputs"]["report"]).decode()  # one page, images inside, every group
    assert manifest["outputs"]["report"] == f"{run}/report.html"
    assert all(f"Group {g}" in report for g in ("weave", "disc", "solo")) and "decode_error" in report
    assert report.count("data:image/png;base64,") == 2 and report.count("data:image/jpeg;base64,") == 4
    assert "random: these scores show that the pipeline works" in report and "image_auroc" in report

    again = run_job(cfg)  # a finished run is not redone
    assert again.exit_code == 0 and again.manifest["finished_at"] == manifest["finished_at"]
    assert read_scores(out).num_rows == len(inputs)


def upload_golden(tmp_path, base: str, count: int = 3):
    """Known-good images, one folder per group of ``s3_batch`` (new renders, not inputs), on local disk
    and under ``base``/golden/; returns the local folder."""
    from pipeline.data.synthetic import generate_dataset

    golden = tmp_path / "golden"
    generate_dataset(str(tmp_path / "normals"), categories=["weave", "disc"], n_train=count, n_test_good=0,
                     n_test_defect=0, image_size=64, seed=7)
    for group, source in (("weave", "weave"), ("disc", "disc"), ("solo", "weave")):
        (golden / group).mkdir(parents=True)
        for i in range(count):
            (golden / group / f"{i:03d}.png").write_bytes((tmp_path / "normals" / source / "train" / "good" /
                                                           f"{i:03d}.png").read_bytes())
    s3fs.S3FileSystem(skip_instance_cache=True).put(str(golden) + "/", f"{base}/golden/", recursive=True)
    return golden


def test_sowa_few_shot_scores_each_group_against_its_own_references(ray_local, s3_batch, tmp_path):
    from pipeline.detectors.checkpoint import save_checkpoint
    from pipeline.detectors.registry import build_detector
    from pipeline.job.preflight import JobError
    from pipeline.settings import DetectorConfig

    det_cfg = config_from_dict(DetectorConfig, TRAINED_DETECTORS["sowa"])
    detector = build_detector(det_cfg)
    base = s3_batch["prefix"].rsplit("/", 1)[0]
    save_checkpoint(detector, det_cfg, f"{base}/models/sowa")
    golden = upload_golden(tmp_path, base)
    s3fs.S3FileSystem(skip_instance_cache=True).put(str(golden / "weave"), f"{base}/golden-partial/weave",
                                                    recursive=True)

    out = str(tmp_path / "out")
    common = dict(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out}, detector="sowa",
                  detector_checkpoint=f"{base}/models/sowa", reference_images=2)
    with pytest.raises(JobError, match=r"no known-good images for 2 input group\(s\), e.g. \['disc', 'solo'\]"):
        run_job(job_config(**common, references=f"{base}/golden-partial/"))
    assert not (tmp_path / "out").exists()  # refused before any work

    report = run_job(job_config(**common, references=f"{base}/golden/", run_id="sowa-fewshot"))
    assert report.exit_code == 0, report.failures
    rows = {r["uri"][len(s3_batch["prefix"]):]: r
            for r in pds.dataset(f"{out}/scores", partitioning="hive").to_table().to_pylist()}
    assert sum(r["status"] == "ok" for r in rows.values()) == 15
    for name, group in (("/disc/test/good/000.png", "disc"), ("/weave/test/good/001.png", "weave")):
        x = detector.preprocess(load_image(str(s3_batch["root"]) + name, 64)[None])
        _, zero_shot = detector.predict(x)
        references = np.stack([load_image(str(golden / group / f"{i:03d}.png"), 64) for i in range(2)])
        detector.set_references(detector.preprocess(references))
        _, few_shot = detector.predict(x)
        detector.set_references(None)
        assert rows[name]["score"] == pytest.approx(float(few_shot[0]), rel=1e-4)
        assert abs(float(few_shot[0]) - float(zero_shot[0])) > 1e-3  # the memory bank changed the score
    with pytest.raises(ConfigError, match="'references'.*for detectors musc, patchead and sowa, not 'vitad'"):
        job_config(inputs={"manifest": "m.csv"}, detector="vitad", detector_checkpoint="x", references="s3://b/g/")


def test_musc_with_references_from_a_prefix_scores_as_the_engine_and_flags_on_them(ray_local, s3_batch, tmp_path):
    """References join every subset as reference-only members: scores equal the engine's with the same
    references, they never become rows, the manifest names them, and 'reference_fpr' flags exactly the
    scores above the references' own leave-one-out scores (value 0: above their maximum). A group of
    one image is scored against its references; a reference that does not decode or is a byte copy of
    an input is left out with a warning naming it, and the manifest counts listed vs used."""
    base = s3_batch["prefix"].rsplit("/", 1)[0]
    golden = upload_golden(tmp_path, base)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    copy, broken = f"{base}/golden/disc/003.png", f"{base}/golden/disc/004.png"
    fs.pipe(copy, (s3_batch["root"] / "disc" / "test" / "good" / "000.png").read_bytes())  # an input's bytes
    fs.pipe(broken, b"not an image")
    out = str(tmp_path / "out")
    cfg = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out}, run_id="musc-refs",
                     references=f"{base}/golden/", reference_images=5, scoring={"max_subset_size": 4},
                     flagging={"policy": "reference_fpr", "value": 0.0}, musc={"match_radius": "auto"})
    report = run_job(cfg)
    assert report.exit_code == 0, report.failures
    rows = {r["uri"]: r for r in pds.dataset(f"{out}/scores", partitioning="hive").to_table().to_pylist()}
    assert sorted(rows) == sorted(r.uri for r in s3_batch["records"])  # one row per input, no reference
    assert report.manifest["counts"]["statuses"] == {"ok": 15, "decode_error": 3}  # solo: scored on its references
    listed = {g: [f"{base}/golden/{g}/{i:03d}.png" for i in range(5 if g == "disc" else 3)]
              for g in ("disc", "solo", "weave")}
    assert report.manifest["references"] == {
        "source": f"{base}/golden/", "run_of": {}, "per_group": listed,
        "use_per_group": {"disc": {"listed": 5, "used": 3, "undecodable": 1, "copies_of_inputs": 1},
                          **{g: {"listed": 3, "used": 3, "undecodable": 0, "copies_of_inputs": 0}
                             for g in ("solo", "weave")}}}
    warnings = [w for w in report.manifest["warnings"] if "references not used" in w]
    assert len(warnings) == 2 and all(w.startswith("group 'disc': 1 of 5 references") for w in warnings)
    assert broken in warnings[0] and "did not decode" in warnings[0]
    assert f"{copy} = {s3_batch['prefix']}/disc/test/good/000.png" in warnings[1]
    size = cfg.backbone.image_size
    torch.manual_seed(0)  # the same random init as every extraction actor
    backbone = build_backbone(cfg.backbone)
    for group in ("weave", "disc", "solo"):  # each subset against the group's usable references
        refs = backbone.extract(np.stack([load_image(str(golden / group / f"{i:03d}.png"), size) for i in range(3)]))
        summary = json.loads((tmp_path / "out" / "runs" / "musc-refs" / "groups" / f"{group}.json").read_text())
        for subset in pds.dataset(f"{out}/runs/musc-refs/subsets/{group}").files:
            uris = pds.dataset(subset).to_table().column("uri").to_pylist()
            feats = backbone.extract(np.stack([load_image(str(s3_batch["root"]) + u[len(s3_batch["prefix"]):], size)
                                               for u in uris]))
            result = score_features(feats, cfg.scorer_settings(), "cpu", refs)
            for uri, score in zip(uris, result.image_scores.tolist()):
                assert rows[uri]["score"] == pytest.approx(score, rel=2e-2, abs=2e-3)
                assert rows[uri]["match_radius"] == result.matching.radius  # auto chose per subset, as the engine
            (chosen,) = [m for m in summary["matching"] if m["subset_id"] == rows[uris[0]]["subset_id"]]
            assert (chosen["radius"], chosen["sampled_images"]) == (result.matching.radius, result.matching.sampled)
            assert chosen["aligned_fraction"] == pytest.approx(result.matching.as_dict()["aligned_fraction"], abs=0.01)
            if len(uris) > 1:
                plain = score_features(feats, cfg.scorer_settings(), "cpu")
                assert all(abs(a - b) > 1e-3 for a, b in zip(result.image_scores, plain.image_scores))  # refs took part
    for group in ("weave", "disc"):
        summary = json.loads((tmp_path / "out" / "runs" / "musc-refs" / "groups" / f"{group}.json").read_text())
        assert len(summary["reference_scores"]) == 3 * summary["subsets"]  # every usable reference, every subset
        for row in (r for r in rows.values() if r["group_name"] == group and r["status"] == "ok"):
            assert row["is_anomaly"] == (row["score"] > max(summary["reference_scores"]))
            assert row["flag_policy"] == "reference_fpr=0"
    with pytest.raises(ConfigError, match="'flagging.policy'.*needs references"):
        job_config(inputs={"manifest": "m.csv"}, flagging={"policy": "reference_fpr"})


def write_verdicts(fs, folder: str, earlier: list[dict]) -> dict[str, str]:
    """Reviewers' verdicts on night a (CSV for weave, Parquet for disc, plus a URI no night scored): weave's
    highest-scoring unflagged image good (reference_runs alone would not take it), its lowest-scoring
    unflagged image defect, its flagged images defect then good; disc's flagged images defect."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def ok(group, flagged):
        return sorted((r for r in earlier if r["group_name"] == group and r["status"] == "ok"
                       and r["is_anomaly"] is flagged), key=lambda r: r["score"])

    weave = {ok("weave", False)[-1]["uri"]: "good", ok("weave", False)[0]["uri"]: "defect",
             **{r["uri"]: ("defect", "good")[i % 2] for i, r in enumerate(ok("weave", True))}}
    disc = {r["uri"]: "defect" for r in ok("disc", True)}
    lines = [f"{uri},{verdict},ann,2026-11-23T08:00:00" for uri, verdict in weave.items()]
    fs.pipe(f"{folder}/weave.csv", "\n".join(["uri,verdict,reviewer,reviewed_at", *lines]).encode())
    uris = [*disc, f"{folder}/nowhere.png"]
    sink = io.BytesIO()
    pq.write_table(pa.table({"uri": uris, "verdict": [*disc.values(), "good"], "reviewer": ["bo"] * len(uris),
                             "reviewed_at": pa.array([time.time_ns() // 1000] * len(uris), pa.timestamp("us"))}), sink)
    fs.pipe(f"{folder}/disc.parquet", sink.getvalue())
    return {**weave, **disc}


def test_references_kept_up_from_earlier_runs(ray_local, s3_batch):
    """reference_runs: each group's lowest-scoring unflagged images of its last successful runs, never
    tonight's inputs, named in the manifest with their run; the key leaves earlier run ids alone. With
    reviewers' verdicts on the first night, its confirmed-good images come first and no image judged
    defect is a reference, and the first night's flag precision is what a hand count gives."""
    from pipeline.data.inputs import write_manifest

    base = s3_batch["prefix"].rsplit("/", 1)[0]
    out = f"{base}/musc"
    night_a = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out}, run_id="night-a")
    assert run_job(night_a).exit_code == 0
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.copy(s3_batch["prefix"] + "/", f"{base}/tonight/", recursive=True)  # tonight's parts: other URIs
    tonight = [InputRecord(r.uri.replace("/batch/", "/tonight/"), r.group, r.label,
                           r.mask_uri and r.mask_uri.replace("/batch/", "/tonight/")) for r in s3_batch["records"]]
    for record in tonight:  # and other bytes: a byte copy of an input is never a reference
        if record.uri.rsplit("/", 1)[-1] not in CORRUPT_FILES:
            fs.pipe(record.uri, fs.cat_file(record.uri) + b"night b")  # PNG readers ignore bytes after IEND
    write_manifest(tonight, f"{base}/tonight.parquet")
    earlier = [r for r in read_scores(out).to_pylist() if r["run_id"] == "night-a"]
    verdicts = write_verdicts(fs, f"{base}/verdicts", earlier)
    night_b = job_config(inputs={"manifest": f"{base}/tonight.parquet"}, output={"prefix": out}, run_id="night-b",
                         reference_runs=2, reference_images=3, verdicts=f"{base}/verdicts")
    assert config_hash(night_b) != config_hash(job_config(inputs={"manifest": f"{base}/tonight.parquet"},
                                                          output={"prefix": out}, reference_runs=0))
    report = run_job(night_b)
    assert report.exit_code == 0, report.failures
    expected, precision = {}, {}
    for group in ("disc", "weave"):
        rows = [r for r in earlier if r["group_name"] == group]
        confirmed = sorted(r["uri"] for r in rows if r["status"] == "ok" and verdicts.get(r["uri"]) == "good")
        good = sorted((r for r in rows if r["status"] == "ok" and not r["is_anomaly"] and r["uri"] not in verdicts),
                      key=lambda r: r["score"])
        expected[group] = sorted(confirmed + [r["uri"] for r in good[:3 - len(confirmed)]])
        flagged = [verdicts[r["uri"]] for r in rows if r["is_anomaly"] and r["uri"] in verdicts]
        unflagged = [verdicts[r["uri"]] for r in rows if r["is_anomaly"] is False and r["uri"] in verdicts]
        precision[group] = {"run_date": str(rows[0]["run_date"]), "reviewed_flags": len(flagged),
                            "confirmed_defects": flagged.count("defect"),
                            "flag_precision": flagged.count("defect") / len(flagged),
                            "reviewed_unflagged": len(unflagged), "missed_defects": unflagged.count("defect")}
    weave_unflagged = sorted((r for r in earlier if r["group_name"] == "weave" and r["status"] == "ok"
                              and not r["is_anomaly"]), key=lambda r: r["score"])
    assert weave_unflagged[-1]["uri"] in expected["weave"] and weave_unflagged[0]["uri"] not in expected["weave"]
    assert len(weave_unflagged) > 3 and precision["weave"]["missed_defects"] == 1  # the setup shows the point
    references = report.manifest["references"]
    assert references["source"] == "earlier runs" and references["per_group"] == expected  # solo: none scored
    assert references["run_of"] == {uri: "night-a" for uris in expected.values() for uri in uris}
    confirmed_counts = {g: sum(verdicts.get(u) == "good" for u in expected.get(g, []))
                        for g in ("disc", "solo", "weave")}
    assert json.loads(fs.cat_file(f"{out}/runs/night-b/run.json"))["references"]["from_verdicts"] == \
        references["from_verdicts"] == confirmed_counts
    assert report.manifest["verdicts"]["flag_precision"] == {g: {"night-a": p} for g, p in precision.items()}
    warnings = report.manifest["verdicts"]["warnings"]
    assert len(warnings) == 1 and "nowhere.png was not scored" in warnings[0]
    assert warnings[0] in report.manifest["warnings"]
    assert "flag precision weave: " in format_summary(report)
    rows = [r for r in read_scores(out).to_pylist() if r["run_id"] == "night-b"]
    assert sorted(r["uri"] for r in rows) == sorted(r.uri for r in tonight)  # one row per input, no reference
    summary = json.loads(fs.cat_file(f"{out}/runs/night-b/groups/weave.json"))
    assert len(summary["reference_scores"]) == 3
    assert summary["references"] == {"listed": 3, "used": 3, "undecodable": 0, "copies_of_inputs": 0}


def test_patchead_scores_each_group_as_the_engine_does(ray_local, s3_batch, tmp_path):
    out = str(tmp_path / "out")
    cfg = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out}, run_id="patchead-1",
                     detector="patchead")
    report = run_job(cfg)
    assert report.exit_code == 0, report.failures
    assert report.manifest["counts"]["statuses"] == {"ok": 14, "decode_error": 3, "group_too_small": 1}
    rows = {r["uri"][len(s3_batch["prefix"]):]: r
            for r in pds.dataset(f"{out}/scores", partitioning="hive").to_table().to_pylist()}
    for group in ("weave", "disc"):
        engine_scores, engine_metrics = engine_reference(s3_batch["root"], group, cfg)
        for name, score in engine_scores.items():
            assert rows[name]["score"] == pytest.approx(score, rel=2e-2, abs=2e-3)
        for key in ("image_auroc", "pixel_auroc"):
            assert report.manifest["metrics"]["per_group"][group][key] == pytest.approx(engine_metrics[key], abs=0.03)
    with pytest.raises(ConfigError, match="'patchead'.*batch mode without alignment"):
        job_config(inputs={"manifest": "m.csv"}, detector="patchead", patchead={"align": True})
    with pytest.raises(ConfigError, match="'musc.align'.*for evaluation"):
        job_config(inputs={"manifest": "m.csv"}, musc={"align": True})


def test_resume_skips_finished_work_and_a_changed_config_is_refused(ray_local, s3_batch, tmp_path):
    out = str(tmp_path / "out")
    cfg = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out, "keep_features": True},
                     run_id="night-2", scoring={"max_subset_size": 4})
    first = run_job(cfg)
    assert first.exit_code == 0
    counts = first.manifest["counts"]
    # planned from the listing: weave's 10 files (3 corrupt) in 3 subsets, disc's 7 in 2; solo none
    assert counts["subsets"] == 5 and counts["subsets_skipped"] == 0 and counts["shards_skipped"] == 0
    # an interrupted run: one group's results and the success marker never got written
    run = tmp_path / "out" / "runs" / "night-2"
    (run / "_SUCCESS").unlink()
    (run / "groups" / "disc.json").unlink()
    (run / "subsets" / "disc" / "subset-00001.parquet").unlink()
    second = run_job(cfg)
    counts = second.manifest["counts"]
    assert second.exit_code == 0
    assert counts["shards_skipped"] == counts["shards"] == 6 and counts["images_extracted"] == 0
    assert counts["subsets_skipped"] == 4 and counts["groups_skipped"] == 2  # weave and solo
    assert counts["rows_written"] == 18
    assert pds.dataset(f"{out}/scores", partitioning="hive").to_table().num_rows == 18

    changed = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out}, run_id="night-2",
                         scoring={"max_subset_size": 5})
    with pytest.raises(Exception, match="different config"):
        run_job(changed)


TRAINED_DETECTORS = {
    "vitad": {"kind": "vitad", "vitad": {"encoder": {"name": "vit_tiny_patch16_224", "image_size": 64,
                                                     "random_init": True}}},
    "sowa": {"kind": "sowa", "sowa": {"clip": {"name": "ViT-S-16", "image_size": 64, "random_init": True},
                                      "windows": [2, 2, 4, 4]}},
}


@pytest.mark.parametrize("kind", list(TRAINED_DETECTORS))
def test_a_trained_detector_writes_the_same_tables(kind, ray_local, s3_batch, tmp_path):
    from pipeline.data.synthetic import generate_dataset
    from pipeline.detectors.checkpoint import save_checkpoint
    from pipeline.detectors.registry import build_detector
    from pipeline.detectors.training import load_split, train_detector
    from pipeline.job.preflight import JobError
    from pipeline.settings import DetectorConfig

    generate_dataset(str(tmp_path / "normals"), categories=["weave", "disc"], n_train=8, n_test_good=0,
                     n_test_defect=0, image_size=64)
    normals = load_split(str(tmp_path / "normals"), "mvtec", ["weave", "disc"], "train", 64, normal_only=True)
    det_cfg = config_from_dict(DetectorConfig, {**TRAINED_DETECTORS[kind], "training": {"iterations": 10,
                                                                                         "batch_size": 4}})
    detector = build_detector(det_cfg)
    train_detector(detector, normals, det_cfg, device="cpu")  # the job's plumbing, not the model, is tested
    checkpoint = s3_batch["prefix"].rsplit("/", 1)[0] + f"/models/{kind}"
    save_checkpoint(detector, det_cfg, checkpoint)

    out = str(tmp_path / "out")
    cfg = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out, "heatmaps": "all"},
                     run_id=f"{kind}-1", detector=kind, detector_checkpoint=checkpoint)
    report = run_job(cfg)
    assert report.exit_code == 0, report.failures
    rows = pds.dataset(f"{out}/scores", partitioning="hive").to_table().to_pylist()
    assert sorted(r["uri"] for r in rows) == sorted(r.uri for r in s3_batch["records"])
    statuses = [r["status"] for r in rows]
    assert statuses.count("decode_error") == 3 and statuses.count("ok") == 15  # one image alone is scored too
    scored = {r["uri"][len(s3_batch["prefix"]):]: r for r in rows if r["status"] == "ok"}
    assert all(r["subset_id"] is None and r["map_uri"] for r in scored.values())
    for name in ("/disc/test/good/000.png", "/weave/test/good/001.png", "/solo/test/good/000.png"):
        image = load_image(str(s3_batch["root"]) + name, 64)
        _, direct = detector.predict(detector.preprocess(image[None]))
        assert scored[name]["score"] == pytest.approx(float(direct[0]), rel=1e-4)
    from sklearn.metrics import roc_auc_score

    for group in ("weave", "disc"):  # the table's image AUROC is the one of the rows written
        group_rows = [r for r in rows if r["group_name"] == group and r["status"] == "ok"]
        expected = roc_auc_score([r["label"] for r in group_rows], [r["score"] for r in group_rows])
        assert report.manifest["metrics"]["per_group"][group]["image_auroc"] == pytest.approx(expected)

    wrong = job_config(inputs={"manifest": s3_batch["manifest"]}, output={"prefix": out}, detector="dinomaly",
                       detector_checkpoint=checkpoint)
    with pytest.raises(JobError, match=f"holds a '{kind}'"):
        run_job(wrong)


def copy_images(tmp_path, targets: list[str]) -> None:
    """Generated images copied to the given paths under tmp/in (one source image per target)."""
    from pipeline.data.synthetic import generate_dataset

    generate_dataset(str(tmp_path / "gen"), categories=["weave"], n_train=0, n_test_good=len(targets) - 2,
                     n_test_defect=2, image_size=64)
    sources = sorted((tmp_path / "gen" / "weave" / "test").rglob("*.png"))
    for source, target in zip(sources, targets):
        (tmp_path / "in" / target).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / target).write_bytes(source.read_bytes())


def test_odd_group_and_file_names_keep_every_row_and_their_group(ray_local, tmp_path):
    """Groups 007 and 7 merged when read back (Hive type guessing), and a folder of 40 CJK characters or
    a 240-character file name failed with 'File name too long' (exit 1, rows lost)."""
    cjk = "検査ライン" * 8
    targets = [f"007/{i}.png" for i in range(3)] + [f"7/{i}.png" for i in range(3)]
    targets += [f"{cjk}/{c * 236}.png" for c in "ab"] + [f"{cjk}/c.png"]
    copy_images(tmp_path, targets)
    out = tmp_path / "out"
    report = run_job(job_config(inputs={"uris": [str(tmp_path / "in")]}, run_id="odd-names",
                                output={"prefix": str(out), "heatmaps": "all"}))
    assert report.exit_code == 0, report.failures
    rows = pds.dataset(str(out / "scores"), partitioning="hive").to_table().to_pylist()
    assert sorted(r["uri"] for r in rows) == sorted(str(tmp_path / "in" / t) for t in targets)
    assert all(r["status"] == "ok" and r["map_uri"] for r in rows)
    groups = {r["uri"].split("/")[-2]: r["group_name"] for r in rows}
    assert groups["007"] == "007" and groups["7"] == "7"
    assert groups[cjk].startswith(cjk[:10]) and len({r["subset_id"] for r in rows}) == 1
    assert report.manifest["counts"]["rows_written"] == len(targets)


def test_a_run_resumed_with_other_inputs_is_refused_and_rows_are_counted_not_assumed(ray_local, tmp_path):
    """A killed run re-run after an image was added lost one row and duplicated another ("65 in, 65 scored,
    65 rows written"): shards are positions in the input list. Now the run id refuses other inputs, and
    _SUCCESS needs the rows read back to be one per input."""
    from pipeline.job.preflight import JobError

    copy_images(tmp_path, [f"{g}/{i}.png" for g in ("a", "b") for i in range(4)])
    out = tmp_path / "out"
    cfg = job_config(inputs={"uris": [str(tmp_path / "in")]}, output={"prefix": str(out)}, run_id="night-3",
                     extraction={"shard_size": 3})
    assert run_job(cfg).exit_code == 0
    run = out / "runs" / "night-3"
    (run / "_SUCCESS").unlink()  # killed while group b was scored
    (run / "groups" / "b.json").unlink()
    (tmp_path / "in" / "a" / "0-copy.png").write_bytes((tmp_path / "in" / "a" / "0.png").read_bytes())
    record = (run / "run.json").read_text()
    with pytest.raises(JobError, match=r"run_id night-3 was started with other inputs \(8 images.*now 9"):
        run_job(cfg)
    assert (run / "run.json").read_text() == record and not (run / "_SUCCESS").exists()

    (tmp_path / "in" / "a" / "0-copy.png").unlink()  # the inputs restored: it resumes
    next(out.glob("scores/*/group_name=a/part-night-3.parquet")).unlink()  # and group a's rows went missing
    resumed = run_job(cfg)
    counts = resumed.manifest["counts"]
    assert counts["groups_skipped"] == 1  # group a is finished, group b is redone
    assert resumed.exit_code == 1 and not (run / "_SUCCESS").exists() and counts["rows_written"] == 4
    assert resumed.failures == [f"scores table: inputs without a row: 4 (e.g. {tmp_path}/in/a/0.png)"]


def test_a_group_that_decodes_nothing_and_a_link_loop_are_rows_and_the_night_finishes(ray_local, tmp_path):
    """Issue 22 items 2 and 3: a folder of 3 corrupt files lost its group ("Expected a non-empty
    ndarray": a subset with no decoded image) and no resume ever finished; `loop.png -> loop.png`
    among the inputs was an ELOOP traceback that sank the night. Each is now a decode_error row.
    Item 4 on the same run: a finished night is never rewritten, a run id another driver holds is refused."""
    copy_images(tmp_path, [f"a/{i}.png" for i in range(4)] + ["half/0.png"])
    bad, half = tmp_path / "in" / "bad", tmp_path / "in" / "half"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    (bad / "truncated.png").write_bytes((half / "0.png").read_bytes()[:100])
    (half / "1.png").write_bytes(b"")  # one readable image left: nothing to compare it with
    (tmp_path / "in" / "a" / "loop.png").symlink_to("loop.png")
    out = tmp_path / "out"
    cfg = job_config(inputs={"uris": [str(tmp_path / "in")]}, output={"prefix": str(out), "keep_features": True},
                     run_id="corrupt")
    report = run_job(cfg)
    assert report.exit_code == 0, report.failures
    rows = pds.dataset(str(out / "scores"), partitioning="hive").to_table().to_pylist()
    statuses = {r["uri"][len(str(tmp_path / "in")) + 1:]: r["status"] for r in rows}
    assert statuses == {**{f"a/{i}.png": "ok" for i in range(4)}, "a/loop.png": "decode_error",
                        **{f"bad/{n}.png": "decode_error" for n in ("empty", "text", "truncated")},
                        "half/0.png": "group_too_small", "half/1.png": "decode_error"}

    run = out / "runs" / "corrupt"
    records = {name: (run / name).read_bytes() for name in ("manifest.json", "report.html")}
    again = run_job(cfg)  # item 4: a second driver on the finished night finds it complete and writes nothing
    assert again.exit_code == 0 and "SUCCEEDED" in format_summary(again).splitlines()[0]
    assert {name: (run / name).read_bytes() for name in records} == records and not (run / "lease.json").exists()

    # a night killed while group bad was finalised resumes and finishes, but not while a driver works on it
    for path in (run / "_SUCCESS", run / "groups" / "bad.json", *(run / "subsets" / "bad").iterdir()):
        path.unlink()
    other = RunLease(str(run / "lease.json"), "corrupt", 600.0)
    other.acquire()
    with pytest.raises(JobError, match=rf"run_id corrupt is being worked on by another driver \({other.owner}"):
        run_job(cfg)
    other.release()
    assert not (run / "groups" / "bad.json").exists()
    assert (run / "manifest.json").read_bytes() == records["manifest.json"]
    resumed = run_job(cfg)
    assert resumed.exit_code == 0, resumed.failures
    counts = resumed.manifest["counts"]
    assert counts["groups_skipped"] == 2 and counts["subsets_skipped"] == 2 and counts["rows_written"] == 10


def test_resources_held_by_another_night_are_waited_for_then_one_line(ray_local, tmp_path):
    """Issue 22 item 11: two nights on a 2-CPU cluster hung forever, each holding a CPU for its extraction
    actor. A job now waits resource_wait_s for what it asks for at once, then stops before writing anything."""
    import ray

    copy_images(tmp_path, ["a/0.png", "a/1.png", "a/2.png"])
    out = tmp_path / "out"
    cfg = job_config(inputs={"uris": [str(tmp_path / "in")]}, output={"prefix": str(out)}, resource_wait_s=1)
    other_night = ray.util.placement_group([{"CPU": 2}])  # holds both CPUs of the test cluster
    ray.get(other_night.ready(), timeout=60)
    try:
        started = time.monotonic()
        refusal = (r"did not grant the resources this job asks for within 1s \(resource_wait_s\): its first stage "
                   r".* asks for \{CPU 1\} \+ \{CPU 0.5\} at once; the cluster has CPU 2, CPU 0 of them free")
        with pytest.raises(JobError, match=refusal):
            run_job(cfg)
        assert 1 <= time.monotonic() - started < 30 and not out.exists()
    finally:
        ray.util.remove_placement_group(other_night)
