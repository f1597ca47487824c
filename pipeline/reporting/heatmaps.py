"""Heat-map images a reviewer can open: the anomaly map in colour over the photo.

One colour scale (vmin, vmax) is passed in by the caller, so every map of a group uses the same
scale and maps compare by eye. The colour ramp is a perceptually ordered dark-blue -> red -> yellow.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

_RAMP = np.array(
    [[0, 0, 80], [40, 0, 160], [140, 0, 170], [220, 40, 90], [250, 120, 20], [255, 230, 60]], dtype=np.float64
)


def colorize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) scores -> (H, W, 3) uint8 colours on the fixed scale [vmin, vmax]."""
    span = vmax - vmin if vmax > vmin else 1.0
    t = np.clip((values - vmin) / span, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    frac = (t - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[hi] * frac).astype(np.uint8)


def overlay_png(image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5) -> bytes:
    """PNG bytes: the RGB ``image`` (H, W, 3) side by side with the map blended over it."""
    if image.shape[:2] != anomaly_map.shape:
        raise ValueError(f"image {image.shape[:2]} and map {anomaly_map.shape} sizes differ")
    heat = colorize(anomaly_map, vmin, vmax)
    blended = (image.astype(np.float64) * (1 - alpha) + heat * alpha).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate([image, blended], axis=1)).save(buffer, format="PNG")
    return buffer.getvalue()
