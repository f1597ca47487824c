"""Detector checkpoints on local disk or object storage, loadable without unpickling anything.

A checkpoint is a folder (or prefix) with ``model.safetensors`` (the trained weights only: the
frozen encoder is referenced by its config, not copied) and ``detector.json`` (the detector config,
metrics and training facts). Safetensors holds tensors and nothing else, and JSON is data, so
loading a checkpoint from an untrusted bucket cannot run code.
"""

from __future__ import annotations

import json
from typing import Any

from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..engine.weights import fetch_weights
from ..settings import DetectorConfig, config_from_dict, config_to_dict
from ..storage import join_uri, read_bytes, write_bytes
from .base import Detector
from .registry import build_detector

WEIGHTS_NAME = "model.safetensors"
META_NAME = "detector.json"


def save_checkpoint(detector: Detector, cfg: DetectorConfig, uri: str,
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    storage_options: dict[str, Any] | None = None) -> str:
    """Write weights, then metadata (its presence marks a complete checkpoint); returns ``uri``."""
    state = {k: v.detach().cpu().contiguous() for k, v in detector.trainable_state().items()}
    write_bytes(join_uri(uri, WEIGHTS_NAME), save_safetensors(state), storage_options)
    meta = {"format": 1, "config": config_to_dict(cfg), "metrics": metrics, "encoder": detector.encoder.description,
            **(extra or {})}
    write_bytes(join_uri(uri, META_NAME), json.dumps(meta, indent=2, allow_nan=True).encode(), storage_options)
    return uri


def read_checkpoint_config(uri: str, storage_options: dict[str, Any] | None = None
                           ) -> tuple[DetectorConfig, dict[str, Any]]:
    """A checkpoint's detector config and metadata, without building the model."""
    meta = json.loads(read_bytes(join_uri(uri, META_NAME), storage_options))
    return config_from_dict(DetectorConfig, meta["config"]), meta


def load_checkpoint(uri: str, storage_options: dict[str, Any] | None = None
                    ) -> tuple[Detector, DetectorConfig, dict[str, Any]]:
    """The detector (encoder from its configured weights, decoder from the checkpoint), its config
    and the checkpoint's metadata. Missing or unexpected tensors are an error, not a warning. Remote
    encoder weights are fetched with ``storage_options`` too."""
    cfg, meta = read_checkpoint_config(uri, storage_options)
    fetch_weights(cfg.chosen().encoder, storage_options)
    detector = build_detector(cfg)
    state = load_safetensors(read_bytes(join_uri(uri, WEIGHTS_NAME), storage_options))
    expected = detector.trainable_state()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint {uri} does not fit a {cfg.kind} detector: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    detector.load_state_dict(state, strict=False)
    return detector.eval(), cfg, meta
