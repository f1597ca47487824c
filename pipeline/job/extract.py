"""The zero-shot scorers' first stage: feature extraction in a Ray Data actor pool, written as feature shards.

Each ``ShardFeatureExtractor`` actor loads the backbone once and writes each shard whole as one
Parquet object with tensor columns (patch tokens fp16; the small image embedding fp32, because RsCIN
picks nearest neighbours by it and fp16 rounding can swap near-tied neighbours): a killed worker
leaves no partial shard, and a re-run skips shards whose object exists.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..engine.backbones import Backbone, build_backbone
from ..engine.features import Features
from ..settings import BackboneConfig, ExtractionConfig
from ..storage import read_bytes, write_parquet
from .codec import decode_stage, encode_stage, tensor_column, tensor_values
from .faults import crash_point
from .layout import shard_uri
from .shards import ShardActor, records_table, run_shard_actors


def shard_table(records: list[dict[str, Any]], errors: list[str], features: Features, backbone: str,
                feature_dtype: str = "fp16") -> pa.Table:
    """One shard as an Arrow table: the record columns, status/error, and the feature tensor columns
    (patch tokens encoded as ``feature_dtype``, see ``codec``).

    Failed images keep their row (status != ok) with zero features so every input stays visible.
    """
    table = records_table(records, errors, backbone)
    table = table.append_column("embedding", tensor_column(features.embedding.numpy().astype(np.float32)))
    for i, stage in enumerate(features.stages):
        for suffix, values in encode_stage(stage.numpy(), feature_dtype).items():
            table = table.append_column(f"stage_{i}{suffix}", tensor_column(values))
    if features.attention is not None:  # ViTs: CLS attention for foreground masks
        table = table.append_column("attention", tensor_column(features.attention.numpy().astype(np.float32)))
    return table.replace_schema_metadata({"backbone": backbone})


def read_feature_shard(uri: str, storage_options: dict[str, Any] | None = None,
                       rows: Sequence[int] | None = None) -> tuple[pa.Table, Features]:
    """The shard's record columns and its features as fp32 tensors: all rows, or ``rows`` in that order.

    Selecting rows before the fp32 conversion keeps memory to what the caller asked for.
    """
    table = pq.read_table(io.BytesIO(read_bytes(uri, storage_options)))
    if rows is not None:
        table = table.take(pa.array(rows, pa.int64()))
    def array(name: str) -> np.ndarray:
        return tensor_values(table.column(name))

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(array(name).astype(np.float32))

    stage_names = sorted((n for n in table.column_names if re.fullmatch(r"stage_\d+", n)), key=lambda n: int(n[6:]))
    stages = [torch.from_numpy(decode_stage(array(n), array(f"{n}_scale") if f"{n}_scale" in table.column_names
                                            else None)) for n in stage_names]
    has_attention = "attention" in table.column_names
    features = Features(stages, tensor("embedding"), tensor("attention") if has_attention else None)
    feature_columns = [n for n in table.column_names if n.startswith("stage_") or n in ("embedding", "attention")]
    return table.drop_columns(feature_columns), features


class ShardFeatureExtractor(ShardActor):
    """Ray Data actor: loads the backbone once, extracts a shard's features, writes the shard object."""

    def __init__(self, backbone_cfg: BackboneConfig, features_prefix: str,
                 storage_options: dict[str, Any] | None = None, num_threads: int = 1,
                 feature_dtype: str = "fp16") -> None:
        torch.set_num_threads(num_threads)
        torch.manual_seed(0)  # a random-init backbone is the same in every actor
        self.backbone: Backbone = build_backbone(backbone_cfg, storage_options)
        self.features_prefix, self.feature_dtype = features_prefix, feature_dtype
        self.storage_options = storage_options

    def process_shard(self, shard_id: int, records: list[dict[str, Any]], images: np.ndarray,
                      errors: list[str]) -> None:
        feats = self.backbone.extract_all(images)
        failed = torch.tensor([bool(e) for e in errors])
        for tensor in (*feats.stages, feats.embedding):
            tensor[failed] = 0.0
        crash_point("extract_shard")
        table = shard_table(records, errors, feats, self.backbone.description, self.feature_dtype)
        write_parquet(shard_uri(self.features_prefix, shard_id), table, self.storage_options)


def run_feature_stage(shards: list[dict[str, Any]], backbone_cfg: BackboneConfig, features_prefix: str,
                      extraction: ExtractionConfig | None = None,
                      storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Extract and write every shard not written yet; returns counts and timings of this run."""
    ex = extraction or ExtractionConfig()
    return run_shard_actors(
        shards, features_prefix, {"image_size": backbone_cfg.image_size}, ShardFeatureExtractor,
        {"backbone_cfg": backbone_cfg, "features_prefix": features_prefix, "num_threads": ex.threads_per_actor(),
         "feature_dtype": ex.feature_dtype},
        ex, storage_options)
