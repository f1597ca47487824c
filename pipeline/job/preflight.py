"""Everything the job checks before it starts work: any problem is one line and exit code 2.

Config errors are raised while loading; here the storage is reached (every bucket, with the real
reason when it cannot be used), the inputs are listed, the weights or the detector checkpoint are
found, and SOWA's references are listed per group. Demo data is generated first when asked for.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..data.demo import ensure_dataset
from ..data.inputs import (
    InputError,
    InputRecord,
    list_images,
    read_manifest,
    records_from_dataset,
    write_manifest,
)
from ..detectors.checkpoint import META_NAME, read_checkpoint_config
from ..engine.weights import WeightsError, check_weights_setting
from ..settings import ZERO_SHOT_DETECTORS, DetectorConfig, JobConfig
from ..storage import check_bucket, exists, is_remote, join_uri


class JobError(RuntimeError):
    """The job cannot start as configured; the message is one line that names the problem."""


def prepare_demo_inputs(cfg: JobConfig) -> None:
    """Generate the demo dataset and its manifest beside ``inputs.manifest`` when asked and absent."""
    if not cfg.demo.enabled or cfg.inputs.manifest is None or exists(cfg.inputs.manifest, cfg.storage_options):
        return
    if is_remote(cfg.inputs.manifest):
        raise JobError(f"demo data is generated on local disk only; inputs.manifest is {cfg.inputs.manifest}")
    root = str(Path(cfg.inputs.manifest).parent / "images")
    ensure_dataset(root, cfg.demo, overwrite=True)
    write_manifest(records_from_dataset(root), cfg.inputs.manifest)


def list_inputs(cfg: JobConfig) -> list[InputRecord]:
    """The night's images with their groups (and labels and masks from a manifest)."""
    so = cfg.storage_options
    check_bucket(cfg.output.prefix, so, "output.prefix")
    if cfg.inputs.manifest is not None:
        check_bucket(cfg.inputs.manifest, so, "inputs.manifest")
        return read_manifest(cfg.inputs.manifest, so)
    records = []
    for uri in cfg.inputs.uris or []:
        check_bucket(uri, so, "inputs.uris")
        records.extend(list_images(uri, cfg.inputs.group_template, so))
    if len({r.uri for r in records}) != len(records):
        raise InputError("inputs.uris: the globs/prefixes overlap and list some images more than once")
    return records


def preflight(cfg: JobConfig) -> tuple[list[InputRecord], DetectorConfig | None]:
    """Everything that can be checked before work starts; returns the inputs and, for a trained
    detector, its checkpoint's config. Raises one-line errors."""
    records = list_inputs(cfg)
    if cfg.detector not in ZERO_SHOT_DETECTORS:
        return records, trained_detector_config(cfg)
    check_weights_setting(cfg.backbone)
    if cfg.backbone.weights is not None:
        check_bucket(cfg.backbone.weights, cfg.storage_options, "backbone.weights")
        if not exists(cfg.backbone.weights, cfg.storage_options):
            raise WeightsError(f"backbone.weights {cfg.backbone.weights}: no such file or object")
    return records, None


def trained_detector_config(cfg: JobConfig) -> DetectorConfig:
    """The checkpoint's detector config, checked against the job's ``detector``."""
    uri = cfg.detector_checkpoint or ""
    check_bucket(uri, cfg.storage_options, "detector_checkpoint")
    if not exists(join_uri(uri, META_NAME), cfg.storage_options):
        raise WeightsError(f"detector_checkpoint {uri}: no {META_NAME} there (not a detector checkpoint)")
    detector_cfg, _ = read_checkpoint_config(uri, cfg.storage_options)
    if detector_cfg.kind != cfg.detector:
        raise JobError(f"detector is '{cfg.detector}' but detector_checkpoint {uri} holds a '{detector_cfg.kind}'")
    return detector_cfg


def reference_uris(cfg: JobConfig, records: list[InputRecord]) -> dict[str, list[str]] | None:
    """SOWA few-shot: each input group's first ``reference_images`` known-good URIs, or None when no
    references are configured. A group without references is an error before any work."""
    if cfg.references is None:
        return None
    check_bucket(cfg.references, cfg.storage_options, "references")
    by_group: dict[str, list[str]] = defaultdict(list)
    for record in list_images(cfg.references, cfg.inputs.group_template, cfg.storage_options):
        by_group[record.group].append(record.uri)
    groups = sorted({r.group for r in records})
    missing = [g for g in groups if g not in by_group]
    if missing:
        raise JobError(f"references {cfg.references}: no known-good images for {len(missing)} input group(s), "
                       f"e.g. {missing[:5]} (found groups {sorted(by_group)[:5]})")
    return {g: sorted(by_group[g])[:cfg.reference_images] for g in groups}
