"""Object-storage access through fsspec: one place that knows about URIs, caching and credentials.

Credentials and endpoints come from the usual places (environment, AWS profile, or a
``storage_options`` mapping passed through) and are never logged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError

READ_ATTEMPTS = 4  # tries of a read that fails transiently
RETRY_DELAY_S = 0.5  # before the second try; doubled before each further one
RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for a submitted job's entrypoint
# bytes this process moved through read_bytes and write_bytes: the job's progress metrics
# report each task's share (the difference over the task)
_moved = {"read": 0, "written": 0}
_moved_lock = threading.Lock()


def bytes_moved() -> dict[str, int]:
    """Bytes read and written by this process so far through ``read_bytes`` and ``write_bytes``."""
    with _moved_lock:
        return dict(_moved)


def _count(direction: str, size: int) -> None:
    with _moved_lock:
        _moved[direction] += size


class StorageError(UserError, RuntimeError):
    """A location cannot be used: missing bucket, no credentials, access denied. One-line message."""


def is_remote(uri: str) -> bool:
    """True for URIs with a non-local protocol (s3://, gs://, https://, ...)."""
    protocol = fsspec.utils.get_protocol(uri)
    return protocol not in ("file", "local")


def canonical_uri(uri: str) -> str:
    """One spelling of a location, for a run's identity: ``in``, ``in/``, ``./in`` and ``file://in`` are one
    local folder (``file://``, ``//``, ``/./`` and a trailing slash dropped), ``s3://b/in`` and ``s3://b/in/``
    one prefix (a trailing slash dropped: both list the same objects). ``..`` is kept (through a symbolic
    link it may lead elsewhere), and so is a remote ``//`` (``a//b`` and ``a/b`` are two object keys)."""
    if is_remote(uri):
        scheme, _, rest = uri.partition("://")
        return f"{scheme}://{rest.rstrip('/')}" if rest.rstrip("/") else uri
    path = uri.removeprefix("file://")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def fetch_to_local(uri: str, cache_dir: str | Path, storage_options: dict[str, Any] | None = None) -> Path:
    """Return a local path for ``uri``, copying a remote object once into ``cache_dir``.

    The cache name includes a hash of the full URI so two buckets with the same key never collide;
    the copy is written to a temporary name and renamed, so an interrupted download is not reused.
    """
    if not is_remote(uri):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        return path
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    local = cache / f"{digest}-{Path(uri).name}"
    if local.is_file():
        return local
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if not fs.exists(path):
        raise FileNotFoundError(f"object not found: {uri}")
    tmp = _temporary(local)
    fs.get(path, str(tmp))
    tmp.replace(local)
    return local


def _temporary(target: Path) -> Path:
    """A temporary name beside ``target`` no other writer uses: threads of one process (a lease renewed
    while another driver thread writes it) collided on a name made of the process id alone."""
    return target.with_name(f".{target.name}.part-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with single slashes."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


def exists(uri: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs.exists(path)


def is_transient(err: BaseException) -> bool:
    """A storage failure that may pass when tried again (network, timeouts, throttling); a missing
    object, denied access or missing credentials will not."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(err, OSError) and err.errno == errno.ELOOP:  # a symbolic link loop stays one
        return False
    if isinstance(err, OSError):  # ConnectionError and TimeoutError included
        return True
    names = " ".join(cls.__name__ for cls in type(err).__mro__)  # botocore, aiohttp: not imported here
    return any(word in names for word in ("Connection", "Timeout", "Throttl", "Unavailable", "Disconnect"))


def read_bytes(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The whole object. Transient failures are retried (READ_ATTEMPTS, backing off from
    RETRY_DELAY_S) and then raised, like every other failure: callers never mistake them for data."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    for attempt in range(READ_ATTEMPTS - 1):
        try:
            data = fs.cat_file(path)
            break
        except Exception as err:
            if not is_transient(err):
                raise
        time.sleep(RETRY_DELAY_S * 2**attempt)
    else:
        data = fs.cat_file(path)  # the last try: whatever fails now is raised
    _count("read", len(data))
    return data


def write_bytes(uri: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write an object so readers see all of it or nothing.

    Local files go to a temporary name in the same folder and are renamed into place; on object
    stores a single PUT is already atomic (an object appears whole or not at all).
    """
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if is_remote(uri):
        fs.pipe_file(path, data)
    else:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(target)
        tmp.write_bytes(data)
        tmp.replace(target)
    _count("written", len(data))


def create_bytes(uri: str, data: bytes, storage_options: dict[str, Any] | None = None) -> bool:
    """Write an object whole, only where none exists; False when one does. Atomic locally (a hard link
    of a complete temporary file) and on S3 (a conditional PUT, If-None-Match); other stores are
    checked, then written."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if is_remote(uri):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(target)
    tmp.write_bytes(data)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def remove(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete an object (or a prefix with everything below it) if it exists."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_parquet(uri: str, table: pa.Table, storage_options: dict[str, Any] | None = None,
                  compression: str = "snappy") -> None:
    """A table as one Parquet object, written whole (``write_bytes``)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression=compression)
    write_bytes(uri, buffer.getvalue().to_pybytes(), storage_options)


def check_bucket(uri: str, storage_options: dict[str, Any] | None = None, role: str = "location") -> None:
    """Fail early, in one line, when the bucket of a remote ``uri`` is missing or unusable.

    ``exists()`` on s3fs answers False when there are no credentials at all, which reads like a
    missing bucket; asking for the bucket's info raises the real reason.
    """
    if not is_remote(uri):
        return
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    bucket = path.split("/", 1)[0]
    where = fs.unstrip_protocol(bucket)
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise StorageError(f"{role} {uri}: bucket {where} does not exist") from None
    except PermissionError:
        raise StorageError(f"{role} {uri}: access to bucket {where} denied for these credentials") from None
    except Exception as err:  # noqa: BLE001 - every other failure is reported by its class name
        if type(err).__name__ == "NoCredentialsError":
            raise StorageError(
                f"{role} {uri}: no credentials found for {where} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run with an instance role)") from None
        raise StorageError(f"{role} {uri}: cannot reach bucket {where}: {type(err).__name__}: {err}") from None


def check_writable(uri: str, role: str = "location") -> None:
    """Fail early, in one line, when a local ``uri`` cannot be created and written: it lies below a
    regular file, or its nearest existing folder refuses new files (permissions, a read-only mount).
    The probe is an unnamed temporary file, so nothing is left behind. Remote locations are checked
    by ``check_bucket`` and their first write."""
    if is_remote(uri):
        return
    path = Path(uri.removeprefix("file://")).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise StorageError(f"{role} {uri}: {existing} is a file, not a folder; choose a location outside it")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise StorageError(f"{role} {uri}: cannot write in {existing} ({err.strerror or err}); choose a "
                           "writable location") from None


def check_outlives_working_dir(written: list[tuple[str, str]]) -> None:
    """Under ``ray job submit --working-dir`` a program runs in Ray's temporary copy of that folder: a
    relative local path it writes (``(config key, path)`` pairs) would be lost with the copy."""
    runtime_env = json.loads(os.environ.get(RAY_JOB_CONFIG, "{}")).get("runtime_env") or {}
    if not runtime_env.get("working_dir"):
        return
    for key, path in written:
        if not is_remote(path) and not os.path.isabs(path):
            raise StorageError(f"{key} {path} is relative: under ray job submit --working-dir it would be written "
                               f"into Ray's temporary copy of the folder ({os.getcwd()}); give an absolute path, "
                               f"e.g. {key}=$PWD/{path}")
