"""Everything the job checks before it starts work: any problem is one line and exit code 2.

Config errors are raised while loading; here the storage is reached (every bucket, with the real
reason when it cannot be used; a local output location must be writable and must not lie where the
inputs are listed), the inputs are listed, the weights (a trained detector's encoder weights too)
are opened far enough to know they are whole, the backbone's layers and image size must fit its
network, and a configured Ray address must answer (the references are resolved in ``references``).
Demo data is generated first when asked for (a dry run names it from the generator's config instead).
"""

from __future__ import annotations

import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import numpy as np
from fsspec.utils import glob_translate

from ..data.demo import ensure_dataset, planned_records
from ..data.inputs import (
    InputError,
    InputRecord,
    list_images,
    read_manifest,
    records_from_dataset,
    refuse_duplicates,
    static_root,
    write_manifest,
)
from ..detectors.checkpoint import META_NAME, WEIGHTS_NAME, read_checkpoint_config
from ..engine.stages import check_backbone
from ..engine.weights import WeightsError, check_weights, check_weights_file
from ..errors import UserError
from ..settings import MISSING_SAMPLE, ZERO_SHOT_DETECTORS, DetectorConfig, JobConfig
from ..storage import check_bucket, check_outlives_working_dir, check_writable, exists, is_remote, join_uri
from .layout import RunLayout

RAY_CONNECT_TIMEOUT_S = 5.0  # a Ray address that does not accept a connection by then is unreachable


class JobError(UserError, RuntimeError):
    """The job cannot start as configured; the message is one line that names the problem."""


def demo_to_generate(cfg: JobConfig) -> str | None:
    """The folder the demo dataset would be generated into (beside ``inputs.manifest``), or None when
    the demo is off or its manifest exists; only on local disk."""
    if not cfg.demo.enabled or cfg.inputs.manifest is None or exists(cfg.inputs.manifest, cfg.storage_options):
        return None
    if is_remote(cfg.inputs.manifest):
        raise JobError(f"demo data is generated on local disk only; inputs.manifest is {cfg.inputs.manifest}")
    return str(Path(cfg.inputs.manifest).parent / "images")


def list_inputs(cfg: JobConfig, demo_root: str | None = None) -> list[InputRecord]:
    """The night's images with their groups (and labels and masks from a manifest); ``demo_root``: the
    demo dataset that would be generated there, named without writing it (a dry run)."""
    so = cfg.storage_options
    check_bucket(cfg.output.prefix, so, "output.prefix")
    check_writable(cfg.output.prefix, "output.prefix")
    if demo_root is not None:
        return planned_records(demo_root, cfg.demo)
    if cfg.inputs.manifest is not None:
        check_bucket(cfg.inputs.manifest, so, "inputs.manifest")
        return read_manifest(cfg.inputs.manifest, so)
    records = []
    for uri in cfg.inputs.uris or []:
        check_bucket(uri, so, "inputs.uris")
        if lists_outputs(uri, cfg.output.prefix, so):
            raise JobError(f"output.prefix {cfg.output.prefix} lies where inputs.uris {uri} lists images: the "
                           "next run would score this run's heat maps; put the outputs outside the inputs")
        records.extend(list_images(uri, cfg.inputs.group_template, so))
    refuse_duplicates([r.uri for r in records], "inputs.uris")
    return records


def spread_sample(count: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` of ``count`` items, evenly spread from the first to the last (all of
    a smaller list): what preflight looks up of a long manifest, and the dry run sizes."""
    return sorted({round(i) for i in np.linspace(0, count - 1, min(count, limit))})


def check_present(records: list[InputRecord], cfg: JobConfig) -> None:
    """A manifest whose images are (nearly) all missing is refused before any work: looked up in an evenly
    spread sample (``MISSING_SAMPLE``), 16 at a time, it would otherwise be a night of decode_error rows.
    Listed inputs exist by construction. Checked once the run is known not to be finished (its images may
    be archived since)."""
    if cfg.inputs.manifest is None:
        return
    picks = spread_sample(len(records), MISSING_SAMPLE)
    so = cfg.storage_options
    with ThreadPoolExecutor(max_workers=16) as pool:
        found = list(pool.map(lambda i: exists(records[i].uri, so), picks))
    missing = [records[i].uri for i, ok in zip(picks, found) if not ok]
    if len(missing) > cfg.inputs.max_missing_fraction * len(picks):
        hint = "; delete it to generate the demo data again" if cfg.demo.enabled else ""
        raise InputError(f"inputs.manifest {cfg.inputs.manifest}: {len(missing)} of {len(picks)} images looked up "
                         f"are missing (e.g. {missing[0]}; relative entries name files beside the manifest): "
                         f"restore them or correct the manifest{hint} (inputs.max_missing_fraction "
                         f"{cfg.inputs.max_missing_fraction})")


def lists_outputs(source: str, output_prefix: str, storage_options: dict | None = None) -> bool:
    """Whether listing ``source`` (a prefix or glob of inputs.uris) would find the heat maps written
    under ``output_prefix``: the output lies below the prefix, or a heat map's name matches the glob.
    Local paths are compared resolved (symbolic links, ``..``): ``in/x -> in`` puts ``in/x/out`` in ``in``."""
    fs, pattern = fsspec.core.url_to_fs(source, **(storage_options or {}))
    out_fs, out = fsspec.core.url_to_fs(output_prefix, **(storage_options or {}))
    if fs.protocol != out_fs.protocol:
        return False
    if not is_remote(source):
        root = static_root(pattern)
        pattern, out = os.path.realpath(root) + "/" + pattern[len(root):], os.path.realpath(out)
    pattern, out = pattern.rstrip("/"), out.rstrip("/")
    if not any(ch in pattern for ch in "*?["):
        return out == pattern or out.startswith(pattern + "/")
    heat_map = RunLayout(out, "run", "2026-01-01").heatmap("group", "image.png")
    return re.match(glob_translate(pattern), heat_map) is not None


def check_verdicts(cfg: JobConfig) -> None:
    """A configured verdicts prefix must be reachable, and a local one must exist: absent, it is probably a
    typo. An empty one is fine (no reviews yet), and so is an object-store prefix without objects, which
    storage cannot tell from an absent one."""
    if cfg.verdicts is None:
        return
    check_bucket(cfg.verdicts, cfg.storage_options, "verdicts")
    if not is_remote(cfg.verdicts) and not exists(cfg.verdicts, cfg.storage_options):
        raise JobError(f"verdicts {cfg.verdicts}: no such folder; correct the key, or create the folder where the "
                       "review tool writes its verdicts")


def check_ray_address(address: str | None) -> None:
    """A Ray address given as ``host:port`` or ``ray://host:port`` must accept a connection: ray.init
    would otherwise retry for half a minute and fail with a traceback. Other forms ('auto', none)
    are left to ray.init."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address or "")
    if match is None:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise JobError(f"ray_address {address}: nothing answers there ({err.strerror or err}); start the "
                       "cluster or correct the address") from None


def preflight(cfg: JobConfig, generate_demo: bool = True) -> tuple[list[InputRecord], DetectorConfig | None]:
    """Everything that can be checked before work starts; returns the inputs and, for a trained
    detector, its checkpoint's config. Raises one-line errors. Without ``generate_demo`` (a dry run)
    demo data still to generate is not written: its inputs are named from the generator's config."""
    written = [("output.prefix", cfg.output.prefix)]
    if cfg.demo.enabled and cfg.inputs.manifest is not None:
        written.append(("inputs.manifest", cfg.inputs.manifest))  # where demo data is generated
    check_outlives_working_dir(written)
    if cfg.detector in ZERO_SHOT_DETECTORS:  # weights first: a refusal writes nothing, not even demo data
        check_weights(cfg.backbone, "backbone.weights", cfg.storage_options)
        check_backbone(cfg.backbone)
        detector_cfg = None
    else:
        detector_cfg = trained_detector_config(cfg)
    check_verdicts(cfg)
    demo_root = demo_to_generate(cfg)
    if demo_root is not None and generate_demo:
        ensure_dataset(demo_root, cfg.demo, overwrite=True)
        write_manifest(records_from_dataset(demo_root), cfg.inputs.manifest)
        demo_root = None
    records = list_inputs(cfg, demo_root)
    check_ray_address(cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    return records, detector_cfg


def trained_detector_config(cfg: JobConfig) -> DetectorConfig:
    """The checkpoint's detector config, checked against the job's ``detector``, with its trained
    weights and its encoder's weights checked as ``check_weights`` does."""
    uri = cfg.detector_checkpoint or ""
    so = cfg.storage_options
    check_bucket(uri, so, "detector_checkpoint")
    if not exists(join_uri(uri, META_NAME), so):
        raise WeightsError(f"detector_checkpoint {uri}: no {META_NAME} there (not a detector checkpoint)")
    detector_cfg, _ = read_checkpoint_config(uri, so)
    if detector_cfg.kind != cfg.detector:
        raise JobError(f"detector is '{cfg.detector}' but detector_checkpoint {uri} holds a '{detector_cfg.kind}'")
    check_weights_file(join_uri(uri, WEIGHTS_NAME), "detector_checkpoint", so)
    try:
        check_weights(detector_cfg.chosen().encoder, "encoder weights", so)
    except WeightsError as err:
        raise WeightsError(f"detector_checkpoint {uri}: {err}") from None
    return detector_cfg
