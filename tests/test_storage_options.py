"""S3 reached only through ``storage_options``: no AWS variables, profile or instance role in the
driver's or the Ray workers' environment (every other S3 test goes through AWS_ENDPOINT_URL)."""

import json
import uuid

import pytest
import s3fs
import torch
from safetensors.torch import save_file

from pipeline.data.synthetic import generate_dataset
from pipeline.engine.backbones import build_backbone
from pipeline.job.run import run_job
from pipeline.settings import BackboneConfig, JobConfig, config_from_dict

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_DEFAULT_REGION", "AWS_PROFILE")


@pytest.fixture(scope="module")
def storage_options(s3_server, tmp_path_factory):
    """The local S3 server's credentials as storage options, with an in-process Ray cluster started
    after every AWS variable was removed, so its workers cannot find credentials anywhere else."""
    ray = pytest.importorskip("ray")
    none = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as env:
        for name in AWS_VARIABLES:
            env.delenv(name, raising=False)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", none)
        env.setenv("AWS_CONFIG_FILE", none)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        s3fs.S3FileSystem.clear_instance_cache()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": s3_server}}
        finally:
            ray.shutdown()
            s3fs.S3FileSystem.clear_instance_cache()


def test_weights_in_s3_with_credentials_only_in_storage_options(storage_options, tmp_path):
    """Preflight reached the weights with storage_options but the actors fetched them without:
    ActorDiedError (NoCredentialsError), exit 1."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options)
    with pytest.raises(Exception, match="credentials"):  # nothing in the environment would do
        s3fs.S3FileSystem(skip_instance_cache=True).ls("any-bucket")
    bucket = f"weights-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    backbone = {"family": "timm_cnn", "name": "resnet18", "image_size": 64, "layers": [1, 2]}
    torch.manual_seed(0)
    source = build_backbone(BackboneConfig(**backbone, random_init=True))
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    fs.put(str(tmp_path / "w.safetensors"), f"{bucket}/models/resnet18.safetensors")
    generate_dataset(str(tmp_path / "in"), categories=["disc"], n_train=0, n_test_good=3, n_test_defect=1,
                     image_size=64)
    cfg = config_from_dict(JobConfig, {
        "inputs": {"uris": [str(tmp_path / "in" / "disc" / "test")], "group_template": "{_kind}/{name}"},
        "output": {"prefix": str(tmp_path / "out")}, "run_id": "options-only", "storage_options": storage_options,
        "backbone": {**backbone, "weights": f"s3://{bucket}/models/resnet18.safetensors",
                     "cache_dir": str(tmp_path / "cache")}})
    report = run_job(cfg)
    assert report.exit_code == 0, report.failures
    assert report.manifest["counts"]["statuses"] == {"ok": 4} and "RANDOM" not in report.manifest["backbone"]
    options = json.loads((tmp_path / "out" / "runs" / "options-only" / "manifest.json").read_text())["config"][
        "storage_options"]
    assert options["key"] == options["secret"] == "<redacted>"
    assert options["client_kwargs"] == storage_options["client_kwargs"]


def test_credentials_in_allowed_keys_and_uris_never_reach_the_manifest(tmp_path):
    """endpoint_url is allow-listed, so `https://user:SECRET@host` there (or under client_kwargs) was
    written to manifest.json verbatim; the outputs and references sections kept URIs unredacted too."""
    from datetime import datetime, timezone

    from pipeline.job.layout import RunLayout
    from pipeline.job.manifest import JobReport, RunFacts, build_manifest, format_summary

    secret = "p@ss:W0rd"  # an @ inside the password must not leave its tail behind
    cfg = config_from_dict(JobConfig, {
        "inputs": {"uris": [f"s3://reader:{secret}@in/night/"]}, "output": {"prefix": f"s3://w:{secret}@out/musc"},
        "storage_options": {"endpoint_url": f"https://minio:{secret}@minio.example:9000", "anon": False,
                            "client_kwargs": {"endpoint_url": f"http://user:{secret}@h:9000/x@y",
                                              "region_name": "eu-west-1"}},
        "backbone": {"random_init": True}})
    layout = RunLayout(cfg.output.prefix, "r1", "2026-11-22")
    facts = RunFacts(1, "extraction", {}, {}, {}, {}, {}, [], "b", False, datetime.now(timezone.utc), 1.0,
                     {"source": f"s3://g:{secret}@good/", "per_group": {"g": [f"s3://g:{secret}@good/a.png"]},
                      "run_of": {}})
    manifest = build_manifest(cfg, layout, "0" * 64, facts, None)
    text = json.dumps(manifest) + format_summary(JobReport(0, manifest))
    assert "W0rd" not in text and "p@ss" not in text
    options = manifest["config"]["storage_options"]
    assert options["endpoint_url"] == "https://<redacted>@minio.example:9000" and options["anon"] is False
    assert options["client_kwargs"] == {"endpoint_url": "http://<redacted>@h:9000/x@y", "region_name": "eu-west-1"}
    assert manifest["outputs"]["scores"] == "s3://<redacted>@out/musc/scores"
    assert manifest["references"]["per_group"]["g"] == ["s3://<redacted>@good/a.png"]
