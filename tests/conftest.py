"""Shared fixtures: paths to the optional real data and weights next to the repository."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenetv2_100_imagenet_from_tflite.safetensors"
MVTEC_ROOT = SHARED / "data" / "mvtec_ad"


@pytest.fixture
def mobilenet_weights() -> Path:
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"real weights absent: {MOBILENET_WEIGHTS}")
    return MOBILENET_WEIGHTS


@pytest.fixture
def mvtec_root() -> Path:
    if not (MVTEC_ROOT / "bottle" / "test").is_dir():
        pytest.skip(f"MVTec AD bottle absent: {MVTEC_ROOT}")
    return MVTEC_ROOT


@pytest.fixture(scope="module")
def ray_local():
    """An in-process local Ray cluster (2 CPUs) for one test module, shut down after it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on loopback (moto's server mode); yields its URL.

    Credentials and the endpoint go through the standard AWS environment variables, which is how
    users configure s3fs too, so the code under test is not told it talks to a fake.
    """
    import logging
    import os
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the local S3 server; yields its name."""
    import uuid

    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    yield name


CORRUPT_FILES = {"truncated.png", "empty.png", "text.png"}


@pytest.fixture
def s3_batch(s3_bucket, tmp_path):
    """A night's batch in the local S3 server: two products (weave: 4 good + 3 defective + 3 corrupt
    files; disc: 4 good + 3 defective), a product with a single image, masks, and a labelled manifest.

    Returns a dict: ``root`` (the local copy), ``prefix`` (s3://bucket/batch), ``manifest`` (its URI),
    ``records`` (InputRecords with s3 URIs).
    """
    import shutil

    import s3fs

    from pipeline.data.inputs import InputRecord, records_from_dataset, write_manifest
    from pipeline.data.synthetic import generate_dataset

    root = tmp_path / "batch"
    generate_dataset(str(root), categories=["weave", "disc"], n_train=0, n_test_good=4, n_test_defect=3,
                     image_size=64)
    (root / "solo" / "test" / "good").mkdir(parents=True)
    shutil.copy(root / "weave" / "test" / "good" / "000.png", root / "solo" / "test" / "good" / "000.png")
    good = (root / "weave" / "test" / "good" / "000.png").read_bytes()
    folder = root / "weave" / "test" / "good"
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    prefix = f"s3://{s3_bucket}/batch"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(str(root) + "/", prefix + "/", recursive=True)

    def to_s3(path):
        return None if path is None else prefix + path[len(str(root)):]

    records = [InputRecord(to_s3(r.uri), r.group, r.label, to_s3(r.mask_uri)) for r in records_from_dataset(str(root))]
    manifest = f"{prefix}/manifest.parquet"
    write_manifest(records, manifest)
    return {"root": root, "prefix": prefix, "manifest": manifest, "records": records}



@pytest.fixture
def flaky_storage(monkeypatch):
    """Objects in memory under ``flaky://`` whose next reads raise queued errors, as a storage service
    with network trouble does; retry delays are zero. Yields (write(name, data) -> uri,
    fail(uri, *errors), reads(uri) -> number of reads so far)."""
    import uuid

    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from pipeline import storage

    failures: dict[str, list[BaseException]] = {}
    reads: dict[str, int] = {}

    class Flaky(MemoryFileSystem):
        protocol = "flaky"

        def cat_file(self, path, start=None, end=None, **kwargs):
            path = self._strip_protocol(path)
            reads[path] = reads.get(path, 0) + 1
            if failures.get(path):
                raise failures[path].pop(0)
            return super().cat_file(path, start, end, **kwargs)

    fsspec.register_implementation("flaky", Flaky, clobber=True)
    monkeypatch.setattr(storage, "RETRY_DELAY_S", 0.0)
    root = f"flaky://{uuid.uuid4().hex[:8]}"

    def write(name: str, data: bytes) -> str:
        Flaky().pipe_file(f"{root}/{name}", data)
        return f"{root}/{name}"

    def fail(uri: str, *errors: BaseException) -> None:
        failures[Flaky._strip_protocol(uri)] = list(errors)

    yield write, fail, lambda uri: reads.get(Flaky._strip_protocol(uri), 0)
