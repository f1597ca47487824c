"""How arrays are stored in the job's Parquet objects: tensor columns of any row count (zero
included: a subset or shard in which no image decoded), and patch features as fp16, or int8 per
token with one fp16 scale each.

Patch tokens dominate the bytes of a run (ViT-L-14-336 at 518 px: 4 stages x 1,369 tokens x 1,024
channels, 11.2 MB per image in fp16). ``int8`` keeps, for every token of a stage (one image, one
grid cell), its channels as ``round(x / s)`` with ``s = max|x| / 127`` stored in fp16: 1,026 bytes
per token instead of 2,048, with an error of at most ``s / 2`` per channel. LNAMD normalises over
the whole grid and then compares unit-length tokens, so a per-token scale keeps each token's
direction to within about 0.4% of its largest channel. The measured effect on scores and metrics is
in the README ("Scaling").
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

FEATURE_DTYPES = ("fp16", "int8")


def tensor_column(values: np.ndarray) -> pa.ExtensionArray:
    """(N, ...) values as a fixed-shape tensor column; pyarrow's own conversion refuses N = 0."""
    values = np.ascontiguousarray(values)
    if len(values):
        return pa.FixedShapeTensorArray.from_numpy_ndarray(values)
    value_type = pa.from_numpy_dtype(values.dtype)
    storage = pa.array([], pa.list_(value_type, math.prod(values.shape[1:])))
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(value_type, values.shape[1:]), storage)


def tensor_values(column: pa.ChunkedArray) -> np.ndarray:
    """A tensor column's (N, ...) values; also for zero rows (a filter that kept none leaves no chunk,
    which pyarrow cannot convert)."""
    if column.num_chunks == 0 or len(column) == 0:
        return np.zeros((0, *column.type.shape), column.type.value_type.to_pandas_dtype())
    return column.combine_chunks().to_numpy_ndarray()


def quantize_tokens(stage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, h, w) float features -> int8 values (N, C, h, w) and fp16 scales (N, h, w), one per token."""
    peak = np.abs(stage).max(axis=1)
    scale = (peak / 127.0).astype(np.float16)
    safe = np.where(scale > 0, scale, np.float16(1)).astype(np.float32)  # an all-zero token stays zero
    values = np.clip(np.rint(stage / safe[:, None]), -127, 127).astype(np.int8)
    return values, scale


def dequantize_tokens(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The fp32 features that ``quantize_tokens`` stored."""
    return values.astype(np.float32) * scale.astype(np.float32)[:, None]


def encode_stage(stage: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """A stage's stored arrays by column suffix: ``""`` the values, ``"_scale"`` the int8 scales."""
    if dtype == "fp16":
        return {"": stage.astype(np.float16)}
    if dtype == "int8":
        values, scale = quantize_tokens(stage)
        return {"": values, "_scale": scale}
    raise ValueError(f"unknown feature dtype {dtype!r}; expected one of {FEATURE_DTYPES}")


def decode_stage(values: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """fp32 features from a stage's stored arrays (``scale`` None: stored as floats)."""
    return values.astype(np.float32) if scale is None else dequantize_tokens(values, scale)
