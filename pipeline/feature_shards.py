"""Feature extraction on Ray Data, written as Parquet feature shards (the nightly job's first stage).

Inputs are cut into fixed shards of images (sorted by group, then URI, so the plan is the same on a
re-run). Ray Data runs two stages over the shards: decoding on CPU tasks (bytes from any fsspec URI,
normalised to upright RGB at the model size; an unreadable image becomes an error entry, never a
crash) and feature extraction in an actor pool of ``ShardFeatureExtractor`` callables (one backbone
load per actor, GPUs per actor from config). Each actor writes its shard whole as one Parquet object
with tensor columns (patch tokens fp16; the small image embedding fp32, because RsCIN picks nearest
neighbours by it and fp16 rounding can swap near-tied neighbours): a killed worker leaves no
partial shard, and a re-run skips shards whose object exists.
"""

from __future__ import annotations

import io
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .backbones import Backbone, Features, build_backbone
from .config import BackboneConfig, ExtractionConfig
from .datasets import load_image
from .faults import crash_point
from .inputs import InputRecord
from .results import STATUS_DECODE_ERROR, STATUS_OK
from .storage import exists, join_uri, read_bytes, write_parquet

# the shard's per-image columns besides the features
RECORD_COLUMNS = ("uri", "group", "label", "mask_uri", "status", "error")


def shard_uri(features_prefix: str, shard_id: int) -> str:
    return join_uri(features_prefix, f"shard-{shard_id:05d}.parquet")


def plan_shards(records: Sequence[InputRecord], shard_size: int) -> list[dict[str, Any]]:
    """Deterministic shards of at most ``shard_size`` images, each a plain dict Ray Data can carry."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    ordered = sorted(records, key=lambda r: (r.group, r.uri))
    return [
        {"shard_id": i // shard_size, "records": [asdict(r) for r in ordered[i:i + shard_size]]}
        for i in range(0, len(ordered), shard_size)
    ]


def decode_shard(shard: dict[str, Any], image_size: int, storage_options: dict[str, Any] | None = None,
                 resize: int | None = None) -> dict:
    """Read and decode a shard's images (resized to ``image_size``, or to ``resize`` and centre-cropped
    to ``image_size``); failures are recorded per image with their reason."""
    images = np.zeros((len(shard["records"]), image_size, image_size, 3), dtype=np.uint8)
    errors = []
    for i, record in enumerate(shard["records"]):
        try:
            images[i] = load_image(io.BytesIO(read_bytes(record["uri"], storage_options)), image_size, resize)
            errors.append("")
        except Exception as err:  # noqa: BLE001 - any unreadable input becomes an error row
            errors.append(f"{type(err).__name__}: {err}"[:500])
    return {**shard, "images": images, "errors": errors}


def _tensor_column(values: np.ndarray) -> pa.ExtensionArray:
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))


def records_table(records: list[dict[str, Any]], errors: list[str], backbone: str) -> pa.Table:
    """A shard's record columns with each image's status and error; ``backbone`` names the model."""
    return pa.table({
        "uri": pa.array([r["uri"] for r in records], pa.string()),
        "group": pa.array([r["group"] for r in records], pa.string()),
        "label": pa.array([r["label"] for r in records], pa.int8()),
        "mask_uri": pa.array([r["mask_uri"] for r in records], pa.string()),
        "status": pa.array([STATUS_OK if not e else STATUS_DECODE_ERROR for e in errors], pa.string()),
        "error": pa.array([e or None for e in errors], pa.string()),
    }).replace_schema_metadata({"backbone": backbone})


def shard_table(records: list[dict[str, Any]], errors: list[str], features: Features, backbone: str) -> pa.Table:
    """One shard as an Arrow table: the record columns, status/error, and the feature tensor columns.

    Failed images keep their row (status != ok) with zero features so every input stays visible.
    """
    table = records_table(records, errors, backbone)
    table = table.append_column("embedding", _tensor_column(features.embedding.numpy().astype(np.float32)))
    for i, stage in enumerate(features.stages):
        table = table.append_column(f"stage_{i}", _tensor_column(stage.numpy().astype(np.float16)))
    if features.attention is not None:  # ViTs: CLS attention for foreground masks
        table = table.append_column("attention", _tensor_column(features.attention.numpy().astype(np.float32)))
    return table.replace_schema_metadata({"backbone": backbone})


def read_shard_records(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[list[dict], str]:
    """The shard's record columns (no features are transferred) and the backbone that wrote it."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    with fs.open(path, "rb") as fh:
        parquet = pq.ParquetFile(fh)
        backbone = (parquet.schema_arrow.metadata or {}).get(b"backbone", b"").decode()
        return parquet.read(columns=list(RECORD_COLUMNS)).to_pylist(), backbone


def read_feature_shard(uri: str, storage_options: dict[str, Any] | None = None,
                       rows: Sequence[int] | None = None) -> tuple[pa.Table, Features]:
    """The shard's record columns and its features as fp32 tensors: all rows, or ``rows`` in that order.

    Selecting rows before the fp32 conversion keeps memory to what the caller asked for.
    """
    table = pq.read_table(io.BytesIO(read_bytes(uri, storage_options)))
    if rows is not None:
        table = table.take(pa.array(rows, pa.int64()))
    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(table.column(name).combine_chunks().to_numpy_ndarray().astype(np.float32))

    stage_names = sorted((n for n in table.column_names if n.startswith("stage_")), key=lambda n: int(n[6:]))
    has_attention = "attention" in table.column_names
    features = Features([tensor(n) for n in stage_names], tensor("embedding"),
                        tensor("attention") if has_attention else None)
    return table.drop_columns([*stage_names, "embedding", *(["attention"] if has_attention else [])]), features


class ShardActor(ABC):
    """Base of the first stage's Ray Data actors: called with decoded shards, one at a time.

    Subclasses load their model once in ``__init__`` and write a shard's objects in
    ``process_shard`` (the object under the stage's done-prefix last); the per-shard summary the
    driver reads back is the same for every actor.
    """

    @abstractmethod
    def process_shard(self, shard_id: int, records: list[dict[str, Any]], images: np.ndarray,
                      errors: list[str]) -> None:
        """Handle one shard; ``errors[i]`` is non-empty where image i could not be decoded."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries: dict[str, list] = {"shard_id": [], "images": [], "failed": [], "seconds": []}
        for shard_id, records, images, errors in zip(batch["shard_id"], batch["records"], batch["images"],
                                                     batch["errors"]):
            start = time.perf_counter()
            records, errors = list(records), list(errors)
            self.process_shard(int(shard_id), records, images, errors)
            summaries["shard_id"].append(int(shard_id))
            summaries["images"].append(len(records))
            summaries["failed"].append(sum(1 for e in errors if e))
            summaries["seconds"].append(time.perf_counter() - start)
        return {k: np.asarray(v) for k, v in summaries.items()}


class ShardFeatureExtractor(ShardActor):
    """Ray Data actor: loads the backbone once, extracts a shard's features, writes the shard object."""

    def __init__(self, backbone_cfg: BackboneConfig, features_prefix: str,
                 storage_options: dict[str, Any] | None = None, num_threads: int = 1) -> None:
        torch.set_num_threads(num_threads)
        torch.manual_seed(0)  # a random-init backbone is the same in every actor
        self.backbone: Backbone = build_backbone(backbone_cfg)
        self.features_prefix = features_prefix
        self.storage_options = storage_options

    def process_shard(self, shard_id: int, records: list[dict[str, Any]], images: np.ndarray,
                      errors: list[str]) -> None:
        feats = self.backbone.extract_all(images)
        failed = torch.tensor([bool(e) for e in errors])
        for tensor in (*feats.stages, feats.embedding):
            tensor[failed] = 0.0
        crash_point("extract_shard")
        table = shard_table(records, errors, feats, self.backbone.description)
        write_parquet(shard_uri(self.features_prefix, shard_id), table, self.storage_options)


def run_feature_stage(shards: list[dict[str, Any]], backbone_cfg: BackboneConfig, features_prefix: str,
                      extraction: ExtractionConfig | None = None,
                      storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Extract and write every shard not written yet; returns counts and timings of this run."""
    ex = extraction or ExtractionConfig()
    return run_shard_actors(
        shards, features_prefix, {"image_size": backbone_cfg.image_size}, ShardFeatureExtractor,
        {"backbone_cfg": backbone_cfg, "features_prefix": features_prefix, "num_threads": ex.num_cpus_per_actor},
        ex, storage_options)


def run_shard_actors(shards: list[dict[str, Any]], done_prefix: str, decode_kwargs: dict[str, Any],
                     actor_cls: type, actor_kwargs: dict[str, Any], extraction: ExtractionConfig,
                     storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shard pipeline of the job's first stage: shards whose object under ``done_prefix`` exists
    are skipped; the rest are decoded on CPU tasks and handed to a pool of ``actor_cls`` callables
    (which write that object last). Returns counts and timings of this run."""
    import ray

    ex = extraction
    todo = [s for s in shards if not exists(shard_uri(done_prefix, s["shard_id"]), storage_options)]
    # seconds: the stage's wall time; actor_seconds: time actors spent on shards (no startup, no waiting)
    summary = {"shards": len(shards), "skipped": len(shards) - len(todo), "images": 0, "failed": 0, "seconds": 0.0,
               "actor_seconds": 0.0}
    if not todo:
        return summary
    start = time.perf_counter()
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    ds = ds.map(decode_shard, fn_kwargs={**decode_kwargs, "storage_options": storage_options},
                num_cpus=ex.num_cpus_per_decode_task)
    ds = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs={**actor_kwargs, "storage_options": storage_options},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=ex.num_actors),
        num_cpus=ex.num_cpus_per_actor,
        num_gpus=ex.num_gpus_per_actor,
    )
    for row in ds.iter_rows():
        summary["images"] += int(row["images"])
        summary["failed"] += int(row["failed"])
        summary["actor_seconds"] += float(row["seconds"])
    summary["seconds"] = time.perf_counter() - start
    return summary
