"""Checkpoint loading for backbones: local files or any fsspec URI, never unpickling arbitrary objects."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import torch
from torch import nn

from ..errors import UserError
from ..settings import BackboneConfig
from ..storage import check_bucket, fetch_to_local

log = logging.getLogger(__name__)


class WeightsError(UserError, RuntimeError):
    """Weights are missing, unreadable or do not fit the model."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without unpickling arbitrary objects.

    Safetensors files are read directly; PyTorch files with ``weights_only=True``; TorchScript archives
    (OpenAI's original CLIP ``.pt`` files) through ``torch.jit.load``, which runs no pickled Python.
    A checkpoint that wraps its tensors in ``state_dict`` or ``model`` is unwrapped.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            is_torchscript = any(name.endswith("constants.pkl") for name in zf.namelist())
        if is_torchscript:
            return {k: v.detach().clone() for k, v in torch.jit.load(str(path), map_location="cpu").state_dict().items()}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise WeightsError(f"cannot read weights file {path}: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"weights file {path} does not hold a mapping of tensors")
    return data


def load_weights_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, allow_unused: bool) -> None:
    """Load ``state`` so that every parameter of ``module`` is set; name the first mismatches otherwise.

    ``allow_unused`` accepts extra tensors in the file (a classifier head the features never use).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    wrong_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} model tensors missing from the file (first: {missing[:5]})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches (first: {wrong_shape[:3]})")
    if unused and not allow_unused:
        problems.append(f"{len(unused)} tensors in the file the model does not have (first: {unused[:5]})")
    if problems:
        raise WeightsError(
            f"weights {source} do not fit {type(module).__name__}: " + "; ".join(problems)
            + ". Check backbone.name/family and that the file is a checkpoint of that model."
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def check_weights_setting(cfg: BackboneConfig) -> None:
    """Refuse a backbone with neither weights nor an explicit random init, or with both."""
    if cfg.weights is None and not cfg.random_init:
        raise WeightsError(
            f"no weights given for backbone '{cfg.name}'. Model hub downloads are unavailable here "
            "(air-gapped). Set backbone.weights to a local path or an s3:// URI of the checkpoint "
            "(e.g. open_clip_pytorch_model.bin / model.safetensors), or set backbone.random_init: true "
            "for tests and demos (scores are then not meaningful)."
        )
    if cfg.weights is not None and cfg.random_init:
        raise WeightsError("backbone.weights and backbone.random_init: true are mutually exclusive")


def check_weights_file(uri: str, role: str, storage_options: dict[str, Any] | None = None) -> None:
    """Open a weights file far enough to know it is whole, without downloading it: a safetensors
    header whose tensors end where the file ends, or a zip (PyTorch) archive whose directory reads.
    Problems are a one-line WeightsError naming ``role`` (the config key); other formats pass."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    try:
        size = fs.size(path)
        with fs.open(path, "rb") as fh:
            head = fh.read(8)
            if path.endswith(".safetensors"):
                problem = _safetensors_problem(fh, head, size)
            elif head.startswith(b"PK"):
                fh.seek(0)
                zipfile.ZipFile(fh).close()
                problem = None
            else:
                problem = None if size else "the file is empty"
    except FileNotFoundError:
        problem = "no such file or object"
    except zipfile.BadZipFile:
        problem = "not a whole zip archive (PyTorch checkpoint): truncated or corrupt"
    if problem:
        raise WeightsError(f"{role} {uri}: {problem}")


def _safetensors_problem(fh: BinaryIO, head: bytes, size: int) -> str | None:
    """Why a safetensors file is not whole, from its header alone, or None."""
    length = int.from_bytes(head, "little") if len(head) == 8 else size
    if 8 + length > size:
        return f"truncated: its header needs {8 + length} bytes, the file has {size}"
    try:
        header = json.loads(fh.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, AttributeError):
        return "not a safetensors file (unreadable header)"
    if 8 + length + end != size:
        return f"truncated or corrupt: its tensors need {8 + length + end} bytes, the file has {size}"
    return None


def fetch_weights(cfg: BackboneConfig, storage_options: dict[str, Any] | None = None) -> None:
    """Copy remote weights into the local cache with the job's storage options (credentials and
    endpoint may be given only there); ``configured_weights`` then reads the cached copy."""
    check_weights_setting(cfg)
    if cfg.weights is not None:
        fetch_to_local(cfg.weights, cfg.cache_dir, storage_options)


def configured_weights(cfg: BackboneConfig) -> dict[str, torch.Tensor] | None:
    """The checkpoint's tensors, or None for an explicitly requested random init. Remote weights are
    read from the local cache (``fetch_weights``), fetched with default credentials if not there."""
    check_weights_setting(cfg)
    if cfg.weights is None:
        log.warning("backbone %s uses RANDOM weights: scores are not meaningful", cfg.name)
        return None
    return read_state_dict(fetch_to_local(cfg.weights, cfg.cache_dir))


def check_weights(backbone: BackboneConfig, role: str, storage_options: dict | None = None) -> None:
    """Weights or an explicit random init; weights must be reachable and whole."""
    check_weights_setting(backbone)
    if backbone.weights is not None:
        check_bucket(backbone.weights, storage_options, role)
        check_weights_file(backbone.weights, role, storage_options)
