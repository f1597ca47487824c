"""Weights from object storage over the S3 protocol, against a local S3 server."""

import pytest
import s3fs
import torch
from safetensors.torch import save_file

from pipeline.engine.backbones import build_backbone
from pipeline.settings import BackboneConfig
from pipeline.storage import fetch_to_local, is_remote


def test_is_remote():
    assert is_remote("s3://bucket/key") and is_remote("gs://b/k")
    assert not is_remote("/tmp/x") and not is_remote("relative/path") and not is_remote("file:///tmp/x")


def test_backbone_weights_from_s3_uri(s3_bucket, tmp_path):
    torch.manual_seed(0)
    cfg = BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=64, layers=[1, 2])
    source = build_backbone(cfg)
    local = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(local))
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(str(local), f"{s3_bucket}/models/resnet18.safetensors")

    uri = f"s3://{s3_bucket}/models/resnet18.safetensors"
    loaded = build_backbone(BackboneConfig(family="timm_cnn", name="resnet18", weights=uri, image_size=64,
                                           layers=[1, 2], cache_dir=str(tmp_path / "cache")))
    x = source.preprocess(torch.randint(0, 255, (1, 64, 64, 3), dtype=torch.uint8).numpy())
    with torch.inference_mode():
        for a, b in zip(source(x).stages, loaded(x).stages):
            assert torch.equal(a, b)
    # cached: a second fetch does not download again
    cached = fetch_to_local(uri, tmp_path / "cache")
    fs.rm(f"{s3_bucket}/models/resnet18.safetensors")
    assert fetch_to_local(uri, tmp_path / "cache") == cached


def test_missing_object_and_bucket_are_named(s3_bucket, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        fetch_to_local(f"s3://{s3_bucket}/nothing-here.safetensors", tmp_path)
    with pytest.raises((FileNotFoundError, PermissionError), match="no-such-bucket"):
        fetch_to_local("s3://no-such-bucket-xyz/w.safetensors", tmp_path)


def test_local_write_is_atomic_and_leaves_no_temporaries(tmp_path):
    from pipeline.storage import exists, join_uri, read_bytes, write_bytes

    uri = join_uri(str(tmp_path), "runs/r1/", "/scores.parquet")
    assert uri == f"{tmp_path}/runs/r1/scores.parquet"
    write_bytes(uri, b"first")
    write_bytes(uri, b"second")
    assert read_bytes(uri) == b"second" and exists(uri)
    assert [p.name for p in (tmp_path / "runs" / "r1").iterdir()] == ["scores.parquet"]


def test_s3_write_read_exists(s3_bucket):
    from pipeline.storage import exists, read_bytes, write_bytes

    uri = f"s3://{s3_bucket}/runs/r1/_SUCCESS"
    assert not exists(uri)
    write_bytes(uri, b"{}")
    assert exists(uri) and read_bytes(uri) == b"{}"


def test_transient_read_failures_are_retried_and_then_raised(flaky_storage):
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from pipeline.storage import READ_ATTEMPTS, read_bytes

    write, fail, reads = flaky_storage
    uri = write("a.png", b"data")
    fail(uri, ConnectionResetError("reset by peer"), EndpointConnectionError(endpoint_url="http://s3"))
    assert read_bytes(uri) == b"data" and reads(uri) == 3
    fail(uri, *[TimeoutError("read timed out")] * READ_ATTEMPTS)
    with pytest.raises(TimeoutError):
        read_bytes(uri)
    assert reads(uri) == 3 + READ_ATTEMPTS
    for permanent in (NoCredentialsError(), PermissionError("Access Denied"), FileNotFoundError(uri)):
        fail(uri, permanent)
        with pytest.raises(type(permanent)):
            read_bytes(uri)
    assert reads(uri) == 3 + READ_ATTEMPTS + 3  # never retried
