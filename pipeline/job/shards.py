"""The generic first stage of the job: input shards through Ray Data, decoded on CPU tasks, then a
pool of actors that process whole shards.

The shards come from the run's plan (``plan``: inside subsets, URI order, the same on a re-run).
Decoding runs on CPU tasks (bytes from any fsspec URI, normalised to upright RGB at the model
size; a missing or undecodable image becomes an error entry, a storage failure fails the shard); the
actors (``ShardActor`` subclasses: feature extraction for the zero-shot scorers, a trained detector
otherwise) load their model once and write one object per shard, whole, with the shard's record
columns. A killed worker leaves no partial shard, and a re-run skips shards whose object exists.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.images import UnreadableImage, fetch_image_and_digest
from ..reporting.progress import Progress
from ..settings import ExtractionConfig
from ..storage import exists
from . import telemetry
from .cluster import node_id
from .layout import shard_uri
from .scores_table import STATUS_DECODE_ERROR, STATUS_OK

# the shard's per-image columns besides the features (sha256: of the image's bytes, None when unreadable)
RECORD_COLUMNS = ("uri", "group", "label", "mask_uri", "status", "error", "sha256")


def decode_shard(shard: dict[str, Any], image_size: int, storage_options: dict[str, Any] | None = None,
                 resize: int | None = None) -> dict:
    """Read and decode a shard's images (resized to ``image_size``, or to ``resize`` and centre-cropped
    to ``image_size``). A missing or undecodable image is recorded with its reason; a storage failure
    that persists (network, credentials) fails the shard, so that a re-run retries it. Each record
    gains the SHA-256 of its bytes (``sha256``; None when unreadable), which finds a reference that
    is a copy of an input."""
    images = np.zeros((len(shard["records"]), image_size, image_size, 3), dtype=np.uint8)
    errors, records = [], []
    with telemetry.moved("decode", shard.get("run_id", "")):
        for i, record in enumerate(shard["records"]):
            digest = None
            try:
                images[i], digest = fetch_image_and_digest(record["uri"], image_size, resize, storage_options)
                errors.append("")
            except UnreadableImage as err:
                errors.append(str(err)[:500])
            records.append({**record, "sha256": digest})
    return {**shard, "records": records, "images": images, "errors": errors}


def records_table(records: list[dict[str, Any]], errors: list[str], backbone: str) -> pa.Table:
    """A shard's record columns with each image's status and error; ``backbone`` names the model."""
    return pa.table({
        "uri": pa.array([r["uri"] for r in records], pa.string()),
        "group": pa.array([r["group"] for r in records], pa.string()),
        "label": pa.array([r["label"] for r in records], pa.int8()),
        "mask_uri": pa.array([r["mask_uri"] for r in records], pa.string()),
        "status": pa.array([STATUS_OK if not e else STATUS_DECODE_ERROR for e in errors], pa.string()),
        "error": pa.array([e or None for e in errors], pa.string()),
        "sha256": pa.array([r.get("sha256") for r in records], pa.string()),
    }).replace_schema_metadata({"backbone": backbone})


def read_shard_records(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[list[dict], str]:
    """The shard's record columns (no features are transferred) and the model that wrote it."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    with fs.open(path, "rb") as fh:
        parquet = pq.ParquetFile(fh)
        backbone = (parquet.schema_arrow.metadata or {}).get(b"backbone", b"").decode()
        columns = [c for c in RECORD_COLUMNS if c in parquet.schema_arrow.names]  # sha256: not in older shards
        return parquet.read(columns=columns).to_pylist(), backbone


def read_records(uris: list[str], storage_options: dict[str, Any] | None = None) -> list[dict]:
    """The record rows of several shards (a group's), in shard order."""
    return [row for uri in uris for row in read_shard_records(uri, storage_options)[0]]


class ShardActor(ABC):
    """Base of the first stage's Ray Data actors: called with decoded shards, one at a time.

    Subclasses load their model once in ``__init__`` and write a shard's objects in
    ``process_shard`` (the object under the stage's done-prefix last); the per-shard summary the
    driver reads back is the same for every actor, and so are the progress metrics (``telemetry``:
    each shard carries its ``run_id``).
    """

    stage = "extraction"  # the progress metrics' stage
    scores_images = False  # True where the first stage scores (a trained detector): its images count as scored

    @abstractmethod
    def process_shard(self, shard_id: int, records: list[dict[str, Any]], images: np.ndarray,
                      errors: list[str]) -> None:
        """Handle one shard; ``errors[i]`` is non-empty where image i could not be decoded."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries: dict[str, list] = {"shard_id": [], "images": [], "failed": [], "seconds": [], "node_id": []}
        node = node_id()
        run_ids = batch.get("run_id", [""] * len(batch["shard_id"]))  # "": a stage run alone (tests)
        for shard_id, records, images, errors, run_id in zip(batch["shard_id"], batch["records"], batch["images"],
                                                             batch["errors"], run_ids):
            start = time.perf_counter()
            records, errors, run_id = list(records), list(errors), str(run_id)
            with telemetry.task(self.stage, run_id):
                self.process_shard(int(shard_id), records, images, errors)
            readable = sum(1 for e in errors if not e)
            telemetry.record("images_extracted", readable, run_id, stage=self.stage)
            if self.scores_images:
                telemetry.record("images_scored", readable, run_id, stage=self.stage)
            summaries["shard_id"].append(int(shard_id))
            summaries["images"].append(len(records))
            summaries["failed"].append(len(records) - readable)
            summaries["seconds"].append(time.perf_counter() - start)
            summaries["node_id"].append(node)
        return {k: np.asarray(v) for k, v in summaries.items()}


def _quiet_ray_data() -> None:
    """One progress line per stage from us instead of Ray Data's multi-line block every 10 s (half of a
    demo run's output); Ray Data's warnings and errors still show."""
    import logging

    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours


def run_shard_actors(shards: list[dict[str, Any]], done_prefix: str, decode_kwargs: dict[str, Any],
                     actor_cls: type, actor_kwargs: dict[str, Any], extraction: ExtractionConfig,
                     storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shard pipeline of the job's first stage: shards whose object under ``done_prefix`` exists
    are skipped; the rest are decoded on CPU tasks and handed to a pool of ``actor_cls`` callables
    (which write that object last). Returns counts and timings of this run."""
    import ray

    ex = extraction
    with ThreadPoolExecutor(max_workers=16) as pool:  # one request each on object storage
        done = list(pool.map(lambda s: exists(shard_uri(done_prefix, s["shard_id"]), storage_options), shards))
    todo = [s for s, is_done in zip(shards, done) if not is_done]
    # seconds: the stage's wall time; actor_seconds: time actors spent on shards (no startup, no waiting);
    # nodes: shards written per Ray node (the manifest's cluster section)
    summary = {"shards": len(shards), "skipped": len(shards) - len(todo), "images": 0, "failed": 0, "seconds": 0.0,
               "actor_seconds": 0.0, "nodes": {}}
    if not todo:
        return summary
    start = time.perf_counter()
    _quiet_ray_data()
    progress = Progress("first stage: shards", len(todo))
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    smallest, largest = ex.pool_sizes()
    ds = ds.map(decode_shard, fn_kwargs={**decode_kwargs, "storage_options": storage_options},
                num_cpus=ex.num_cpus_per_decode_task)
    ds = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs={**actor_kwargs, "storage_options": storage_options},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=smallest, max_size=largest),
        num_cpus=ex.num_cpus_per_actor,
        num_gpus=ex.num_gpus_per_actor,
    )
    for done_now, row in enumerate(ds.iter_rows(), start=1):
        progress.update(done_now)
        summary["images"] += int(row["images"])
        summary["failed"] += int(row["failed"])
        summary["actor_seconds"] += float(row["seconds"])
        summary["nodes"][str(row["node_id"])] = summary["nodes"].get(str(row["node_id"]), 0) + 1
    summary["seconds"] = time.perf_counter() - start
    return summary
