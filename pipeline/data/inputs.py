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

import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import UserError
from ..storage import canonical_uri, is_remote, write_bytes, write_parquet
from .benchmarks import list_categories, read_split
from .images import IMAGE_EXTENSIONS

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_GROUP = "default"
MANIFEST_COLUMNS = ("uri", "group", "label", "mask_uri")


@dataclass(frozen=True)
class InputRecord:
    """One image to score."""

    uri: str
    group: str
    label: int | None = None  # 1 anomalous, 0 normal, None unknown
    mask_uri: str | None = None


class InputError(UserError, ValueError):
    """The inputs cannot be listed or read; the message names the URI or column."""


def static_root(pattern: str) -> str:
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
    root = static_root(path)
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


def normalise_uri(uri: str) -> str:
    """One spelling per local file (``canonical_uri``: ``file://`` dropped, ``//`` and ``/./`` collapsed).
    Object-store keys are left as they are, because there ``a//b`` and ``a/b`` name different objects."""
    return uri if is_remote(uri) else canonical_uri(uri)


def beside(entry: str, manifest: str) -> str:
    """A manifest's entry as a URI: a relative one (no protocol, no leading '/') lies below the
    manifest's folder, as a file that lists files means, wherever the program runs (a copy of the
    working directory under ``ray job submit``); on object storage, below the manifest's prefix."""
    if "://" in entry or entry.startswith("/") or "/" not in manifest:
        return entry
    return f"{manifest.rsplit('/', 1)[0]}/{entry}"


def relative_to_manifest(path: str, manifest: str) -> str:
    """The entry ``beside`` turns back into ``path`` (relative to the working directory): a relative
    local path below a local manifest's folder is written relative to it, one elsewhere absolute,
    so that the folder of images and its manifest can move together."""
    if is_remote(path) or os.path.isabs(path) or is_remote(manifest):
        return path
    below = os.path.relpath(path, os.path.dirname(manifest) or ".")
    return os.path.abspath(path) if below.split(os.sep, 1)[0] == ".." else below


def _read_table(uri: str, storage_options: dict[str, Any] | None) -> pa.Table:
    """A manifest's table. CSV columns are read as text: type guessing turned group 007 into 7."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if not fs.exists(path):
        raise InputError(f"manifest not found: {uri}")
    as_text = pa_csv.ConvertOptions(column_types=dict.fromkeys(MANIFEST_COLUMNS, pa.string()),
                                    strings_can_be_null=True)
    try:
        with fs.open(path, "rb") as fh:
            return pq.read_table(fh) if path.endswith(".parquet") else pa_csv.read_csv(fh, convert_options=as_text)
    except pa.ArrowException as err:
        kind = "Parquet" if path.endswith(".parquet") else "CSV"
        raise InputError(f"manifest {uri} cannot be read as {kind}: {str(err).strip().splitlines()[0]}") from None


def _label(value: Any, where: str) -> int | None:
    """0, 1 or None from a manifest cell (a number, or text from a CSV)."""
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        return None
    if value in (0, 1, "0", "1"):
        return int(value)
    raise InputError(f"{where}: label must be 0, 1 or empty, got {value!r}")


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None) -> list[InputRecord]:
    """Records from a Parquet or CSV manifest: ``uri`` required; ``group``, ``label``, ``mask_uri`` optional.
    Relative entries name files beside the manifest (``beside``).

    Local paths are normalised (``normalise_uri``); one file listed under two spellings is refused
    (``refuse_duplicates``), so it cannot be scored twice."""
    table = _read_table(uri, storage_options)
    if "uri" not in table.column_names:
        raise InputError(f"manifest {uri} has no 'uri' column (columns: {table.column_names})")
    records = []
    for i, row in enumerate(table.to_pylist()):
        if not row["uri"]:
            raise InputError(f"manifest {uri} row {i}: empty uri")
        group, mask_uri = row.get("group"), row.get("mask_uri")
        records.append(InputRecord(uri=normalise_uri(beside(str(row["uri"]), uri)),
                                   group=str(group) if group not in (None, "") else DEFAULT_GROUP,
                                   label=_label(row.get("label"), f"manifest {uri} row {i}"),
                                   mask_uri=normalise_uri(beside(str(mask_uri), uri)) if mask_uri else None))
    if not records:
        raise InputError(f"manifest {uri} lists no images")
    written = [str(row["uri"]) for row in table.to_pylist()]
    refuse_duplicates([beside(entry, uri) for entry in written], f"manifest {uri}", written)
    return sorted(records, key=lambda r: r.uri)


def refuse_duplicates(uris: list[str], where: str, spellings: list[str] | None = None) -> None:
    """One file listed under two names (``a/000.png`` and ``a/../a/000.png``, ``img//a.png``, a symbolic
    link to a listed file) would be scored against itself, which hides its defects: refused in one line
    naming both ``spellings`` (as the user wrote them; default ``uris``). Local paths are compared
    resolved; object-store keys as written (``a//b`` and ``a/b`` are two objects there)."""
    folders: dict[str, str] = {}  # resolved folders: one realpath per folder, one lstat per file
    first_name: dict[str, str] = {}
    twice = []
    for uri, spelling in zip(uris, spellings or uris):
        key = uri if is_remote(uri) else _resolved(uri, folders)
        if key in first_name:
            twice.append((first_name[key], spelling))
        else:
            first_name[key] = spelling
    if twice:
        raise InputError(f"{where} lists {len(twice)} image(s) more than once (two names of one file count as "
                         f"one: overlapping globs, '..', '//', symbolic links), e.g. {twice[0][0]} and "
                         f"{twice[0][1]}; list each image once")


def _resolved(uri: str, folders: dict[str, str]) -> str:
    """A local file's real path (``os.path.realpath``), its folder's resolution cached in ``folders``."""
    folder, name = os.path.split(uri.removeprefix("file://"))
    if folder not in folders:
        folders[folder] = os.path.realpath(folder or ".")
    path = os.path.join(folders[folder], name)
    return os.path.realpath(path) if os.path.islink(path) else path


def records_from_dataset(root: str, layout: str = "mvtec", split: str = "test") -> list[InputRecord]:
    """A benchmark split as job inputs: one group per category, with labels and mask paths."""
    return [
        InputRecord(uri=s.image_path, group=category, label=s.label, mask_uri=s.mask_path)
        for category in list_categories(root, layout)
        for s in read_split(root, layout, category, split)
    ]


def write_manifest(records: list[InputRecord], uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write records as a manifest ``read_manifest`` reads back: Parquet for ``.parquet``, else CSV.
    Relative local paths are written relative to the manifest's folder (``relative_to_manifest``)."""
    records = [replace(r, uri=relative_to_manifest(r.uri, uri),
                       mask_uri=r.mask_uri and relative_to_manifest(r.mask_uri, uri)) for r in records]
    table = pa.Table.from_pylist([asdict(r) for r in records], schema=pa.schema([
        ("uri", pa.string()), ("group", pa.string()), ("label", pa.int8()), ("mask_uri", pa.string()),
    ]))
    if uri.endswith(".parquet"):
        write_parquet(uri, table, storage_options)
        return
    buffer = pa.BufferOutputStream()
    pa_csv.write_csv(table, buffer)
    write_bytes(uri, buffer.getvalue().to_pybytes(), storage_options)
