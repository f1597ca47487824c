"""The nightly job's inputs: which images to score and which group each belongs to.

Inputs come either from a glob or prefix of image URIs (``s3://bucket/2026-11-22/**/*.png``, a local
folder, any fsspec URI) or from a manifest table (Parquet or CSV) with a ``uri`` column and optional
``group``, ``label`` and ``mask_uri`` columns. MuSc scores images only against images of the same
group (product, camera, line); for listed files the group comes from a path template such as
``{line}/{product}/{name}`` applied to the path below the listing root: every field but ``{name}``
(the file name) and fields named with a leading underscore (``{_day}``: a folder to match but not
to group by) is part of the group key. Without a template the group is the parent folder.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..storage import is_remote, write_bytes, write_parquet
from .benchmarks import list_categories, read_split
from .images import IMAGE_EXTENSIONS

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class InputRecord:
    """One image to score."""

    uri: str
    group: str
    label: int | None = None  # 1 anomalous, 0 normal, None unknown
    mask_uri: str | None = None


class InputError(ValueError):
    """The inputs cannot be listed or read; the message names the URI or column."""


def _static_root(pattern: str) -> str:
    """The part of a glob before its first wildcard, cut back to a whole path segment."""
    first = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    return pattern[: pattern.rfind("/", 0, first) + 1] if first < len(pattern) else pattern.rstrip("/") + "/"


class GroupTemplate:
    """``{a}/{b}/{name}`` matched against a relative path; the group is the non-name fields joined by '/'."""

    def __init__(self, template: str) -> None:
        fields = _FIELD.findall(template)
        if not fields or "name" not in fields or len(set(fields)) != len(fields):
            raise InputError(f"group template {template!r} needs distinct {{field}}s including {{name}}")
        pattern = ""
        for literal, field in zip(_FIELD.split(template)[0::2], [*fields, None]):
            pattern += re.escape(literal)
            if field is not None:
                pattern += f"(?P<{field}>[^/]+)"
        self.template = template
        self.fields = [f for f in fields if f != "name" and not f.startswith("_")]
        self.regex = re.compile(pattern + "$")

    def group_of(self, relative_path: str) -> str:
        match = self.regex.match(relative_path)
        if match is None:
            raise InputError(f"path {relative_path!r} does not match the group template {self.template!r}")
        return "/".join(match[f] for f in self.fields) or DEFAULT_GROUP


def list_images(source: str, group_template: str | None = None,
                storage_options: dict[str, Any] | None = None) -> list[InputRecord]:
    """Every image under a prefix or matching a glob, sorted by URI, with its group."""
    fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    has_wildcard = any(ch in path for ch in "*?[")
    root = _static_root(path)
    if not fs.exists(root.rstrip("/") or "/"):
        raise InputError(f"input location not found: {source} (bucket or prefix {root!r} does not exist)")
    found = fs.glob(path) if has_wildcard else fs.find(path)
    files = sorted(p for p in found if p.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found at {source}")
    template = GroupTemplate(group_template) if group_template else None
    is_local = not is_remote(source)
    records = []
    for p in files:
        relative = p[len(root):] if p.startswith(root) else p.rsplit("/", 1)[-1]
        if template is not None:
            group = template.group_of(relative)
        else:
            group = relative.rsplit("/", 1)[0] if "/" in relative else DEFAULT_GROUP
        records.append(InputRecord(uri=p if is_local else fs.unstrip_protocol(p), group=group))
    return records


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None) -> list[InputRecord]:
    """Records from a Parquet or CSV manifest: ``uri`` required; ``group``, ``label``, ``mask_uri`` optional."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if not fs.exists(path):
        raise InputError(f"manifest not found: {uri}")
    with fs.open(path, "rb") as fh:
        table: pa.Table = pq.read_table(fh) if path.endswith(".parquet") else pa_csv.read_csv(fh)
    if "uri" not in table.column_names:
        raise InputError(f"manifest {uri} has no 'uri' column (columns: {table.column_names})")
    rows = table.to_pylist()
    records = []
    for i, row in enumerate(rows):
        if not row["uri"]:
            raise InputError(f"manifest {uri} row {i}: empty uri")
        label = row.get("label")
        if label is not None and label not in (0, 1):
            raise InputError(f"manifest {uri} row {i}: label must be 0, 1 or empty, got {label!r}")
        group = row.get("group")
        records.append(InputRecord(uri=str(row["uri"]), group=str(group) if group not in (None, "") else DEFAULT_GROUP,
                                   label=label, mask_uri=row.get("mask_uri") or None))
    if not records:
        raise InputError(f"manifest {uri} lists no images")
    if len({r.uri for r in records}) != len(records):
        raise InputError(f"manifest {uri} lists some uri more than once")
    return sorted(records, key=lambda r: r.uri)


def records_from_dataset(root: str, layout: str = "mvtec", split: str = "test") -> list[InputRecord]:
    """A benchmark split as job inputs: one group per category, with labels and mask paths."""
    return [
        InputRecord(uri=s.image_path, group=category, label=s.label, mask_uri=s.mask_path)
        for category in list_categories(root, layout)
        for s in read_split(root, layout, category, split)
    ]


def write_manifest(records: list[InputRecord], uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write records as a manifest ``read_manifest`` reads back: Parquet for ``.parquet``, else CSV."""
    table = pa.Table.from_pylist([asdict(r) for r in records], schema=pa.schema([
        ("uri", pa.string()), ("group", pa.string()), ("label", pa.int8()), ("mask_uri", pa.string()),
    ]))
    if uri.endswith(".parquet"):
        write_parquet(uri, table, storage_options)
        return
    buffer = pa.BufferOutputStream()
    pa_csv.write_csv(table, buffer)
    write_bytes(uri, buffer.getvalue().to_pybytes(), storage_options)
