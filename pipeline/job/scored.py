"""Scored batches: what the scoring stage hands the group stage, whichever detector scored.

A zero-shot scorer writes one object per subset; a trained detector writes one per shard (with the
shard's records, failed images included). Both hold, per scored image, its URI,
the raw and final image scores and the low-resolution patch-score grid; the group stage reads them
back as ``ScoredBatch`` and never needs to know who scored. A subset scored with references also
keeps their leave-one-out scores and which of them were used (schema metadata, JSON), never as rows.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..storage import read_bytes, write_parquet
from .codec import tensor_column, tensor_values
from .scores_table import STATUS_OK


@dataclass(frozen=True)
class ReferenceUse:
    """What became of a group's listed references: used, or left out (not decoded; a copy of an input)."""

    listed: int
    used: list[str]
    undecodable: dict[str, str]  # uri -> why it did not decode
    copies: dict[str, str]  # uri -> the input of the group with the same bytes

    def counts(self) -> dict[str, int]:
        """The manifest's per-group record: how many were listed, used, and left out for each reason."""
        return {"listed": self.listed, "used": len(self.used), "undecodable": len(self.undecodable),
                "copies_of_inputs": len(self.copies)}

    def warnings(self) -> list[str]:
        """One line per reason that left references out, naming the files."""
        lines = []
        if self.undecodable:
            named = "; ".join(f"{uri} ({why})" for uri, why in sorted(self.undecodable.items()))
            lines.append(f"{len(self.undecodable)} of {self.listed} references not used, they did not decode: {named}")
        if self.copies:
            named = "; ".join(f"{uri} = {inp}" for uri, inp in sorted(self.copies.items()))
            lines.append(f"{len(self.copies)} of {self.listed} references not used, byte-identical to an input "
                         f"tonight (it would hide that input's defects): {named}")
        return lines


@dataclass
class ScoredBatch:
    """Images scored together (a subset) or one by one (a trained detector: ``subset_id`` None)."""

    subset_id: int | None
    uris: list[str]
    score_raw: np.ndarray  # (n,)
    score: np.ndarray  # (n,) the final score (MuSc: RsCIN on the raw scale)
    patch_scores: np.ndarray  # (n, h, w) float32
    scored_at: datetime
    reference_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the references' own (leave-one-out)
    references: ReferenceUse | None = None  # which of the group's references took part
    matching: dict[str, Any] | None = None  # MuSc: the subset's matching (MatchChoice.as_dict); None otherwise


def scored_columns(uris: list[str], score_raw: np.ndarray, score: np.ndarray,
                   patch_scores: np.ndarray) -> dict[str, pa.Array]:
    """The scored-batch columns, in the order every scored object stores them."""
    return {
        "uri": pa.array(uris, pa.string()),
        "score_raw": pa.array(np.asarray(score_raw, dtype=np.float64)),
        "score": pa.array(np.asarray(score, dtype=np.float64)),
        "patch_scores": tensor_column(np.asarray(patch_scores, np.float32)),
    }


def write_scored_batch(uri: str, group: str, subset_id: int, batch: dict[str, pa.Array],
                       storage_options: dict[str, Any] | None = None,
                       reference_scores: np.ndarray | None = None, references: ReferenceUse | None = None,
                       matching: dict[str, Any] | None = None) -> None:
    """One subset's scores (``scored_columns``) as one Parquet object, written whole, with the
    references' leave-one-out scores when it was scored with references, which were used, and MuSc's
    ``matching``."""
    meta = {"group": group, "subset_id": str(subset_id), "scored_at": datetime.now(timezone.utc).isoformat()}
    if reference_scores is not None:
        meta["reference_scores"] = json.dumps([float(v) for v in reference_scores])
    if references is not None:
        meta["references"] = json.dumps(asdict(references))
    if matching is not None:
        meta["matching"] = json.dumps(matching)
    table = pa.table(batch).replace_schema_metadata(meta)
    write_parquet(uri, table, storage_options, compression="zstd")


def read_scored_batch(uri: str, storage_options: dict[str, Any] | None = None) -> ScoredBatch:
    """A batch as the group stage reads it; the rows of images that were not scored (a detector
    shard keeps every input's row) are left out."""
    table = pq.read_table(io.BytesIO(read_bytes(uri, storage_options)))
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "status" in table.column_names:
        table = table.filter(pc.equal(table.column("status"), STATUS_OK))
    return ScoredBatch(
        subset_id=int(meta["subset_id"]) if meta.get("subset_id") else None,
        uris=table.column("uri").to_pylist(),
        score_raw=table.column("score_raw").to_numpy(),
        score=table.column("score").to_numpy(),
        patch_scores=np.array(tensor_values(table.column("patch_scores"))),  # writable copy
        scored_at=datetime.fromisoformat(meta["scored_at"]),
        reference_scores=np.asarray(json.loads(meta.get("reference_scores", "[]")), dtype=np.float64),
        references=ReferenceUse(**json.loads(meta["references"])) if "references" in meta else None,
        matching=json.loads(meta["matching"]) if "matching" in meta else None,
    )
