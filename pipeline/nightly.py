"""The nightly MuSc job: images in object storage -> scores Parquet, heat maps, manifest, metrics.

    python jobs/musc.py --config conf/local.yaml [key.path=value ...]
    ray job submit --working-dir . -- python jobs/musc.py --config conf/nightly.yaml

Stages (DESIGN.md, "Data flow of the nightly job"):

1. preflight: validate the config, reach every bucket, list the inputs, check the weights; any
   problem is one line on stderr and exit code 2 before any work starts;
2. features (``feature_shards``): Ray Data decodes on CPU tasks and extracts in an actor pool,
   writing fp16 Parquet shards under ``runs/<run_id>/features/``;
3. mutual scoring (``subset_scoring``): one Ray task per seeded subset of a group;
4. groups (``group_results``): one Ray task per group once its subsets are done: ranks, flags,
   heat maps, metrics, the group's rows of the scores table.

The run's folder ``runs/<run_id>/`` records the run (``run.json``: config hash and run date), each
finished shard, subset and group, then ``manifest.json`` and finally ``_SUCCESS``. Re-running a run
id skips what is finished; every object is written whole, so a killed worker or job leaves nothing
that looks complete but is not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import re
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa

from .backbones import WeightsError, check_weights_setting
from .config import ConfigError, DetectorConfig, JobConfig, config_from_command_line, config_to_dict
from .detector_scoring import run_detector_stage
from .detectors.checkpoint import META_NAME, read_checkpoint_config
from .feature_shards import plan_shards, read_shard_records, run_feature_stage, shard_uri
from .group_results import GroupContext, finalise_group, group_summary_uri, read_group_summary
from .inputs import InputError, InputRecord, list_images, read_manifest, records_from_dataset, write_manifest
from .metrics import TABLE_COLUMNS, format_table, mean_row
from .progress import Progress
from .results import STATUS_OK
from .storage import (
    StorageError,
    check_bucket,
    exists,
    is_remote,
    join_uri,
    read_bytes,
    write_bytes,
    write_parquet,
)
from .subset_scoring import Member, SubsetPlan, plan_subsets, score_subset, subset_result_uri
from .synthetic import generate_dataset

log = logging.getLogger(__name__)

# keys that change how the job runs, not what it computes: they stay out of the config hash
EXECUTION_KEYS = {
    "run_id", "run_date", "ray_address", "storage_options", "demo",
    "output.prefix", "output.heatmaps", "output.keep_features",
    "backbone.device", "backbone.batch_size", "backbone.cache_dir",
    "extraction.num_actors", "extraction.num_gpus_per_actor", "extraction.num_cpus_per_actor",
    "extraction.num_cpus_per_decode_task",
    "scoring.num_gpus_per_task", "scoring.num_cpus_per_task", "scoring.max_retries",
}
_SECRET_KEY = re.compile(r"key|secret|token|password|credential|session", re.IGNORECASE)
VERSIONED_PACKAGES = ("musc-pipeline", "torch", "ray", "open_clip_torch", "timm", "numpy", "pyarrow", "s3fs")


class JobError(RuntimeError):
    """The job cannot start as configured; the message is one line that names the problem."""


@dataclass
class RunState:
    """Where a run lives and what identifies it."""

    run_id: str
    run_date: str
    config_hash: str
    run_prefix: str

    @property
    def features_prefix(self) -> str:
        return join_uri(self.run_prefix, "features")

    @property
    def success_uri(self) -> str:
        return join_uri(self.run_prefix, "_SUCCESS")

    @property
    def manifest_uri(self) -> str:
        return join_uri(self.run_prefix, "manifest.json")


@dataclass
class JobReport:
    """What the job did; ``manifest`` is what was written to ``manifest.json``."""

    exit_code: int
    manifest: dict[str, Any]

    @property
    def failures(self) -> list[str]:
        return self.manifest["failures"]


def config_hash(cfg: JobConfig) -> str:
    """SHA-256 over every key that affects the results (not over EXECUTION_KEYS)."""

    def strip(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out = {}
        for key, value in data.items():
            path = prefix + key
            if path in EXECUTION_KEYS:
                continue
            out[key] = strip(value, path + ".") if isinstance(value, dict) else value
        return out

    text = json.dumps(strip(config_to_dict(cfg)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def redact(value: Any, key: str = "") -> Any:
    """The value with anything under a secret-looking key replaced, for manifests and logs."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    return "<redacted>" if _SECRET_KEY.search(key) and value is not None else value


def prepare_demo_inputs(cfg: JobConfig) -> None:
    """Generate the demo dataset and its manifest beside ``inputs.manifest`` when asked and absent."""
    if not cfg.demo.enabled or cfg.inputs.manifest is None or exists(cfg.inputs.manifest, cfg.storage_options):
        return
    if is_remote(cfg.inputs.manifest):
        raise JobError(f"demo data is generated on local disk only; inputs.manifest is {cfg.inputs.manifest}")
    root = Path(cfg.inputs.manifest).parent / "images"
    print(f"generating demo data in {root}", file=sys.stderr)
    demo = cfg.demo
    kwargs = {"categories": demo.categories} if demo.categories else {}
    generate_dataset(str(root), n_train=0, n_test_good=demo.n_test_good, n_test_defect=demo.n_test_defect,
                     image_size=demo.image_size, seed=demo.seed, overwrite=True, **kwargs)
    write_manifest(records_from_dataset(str(root)), cfg.inputs.manifest)


def preflight(cfg: JobConfig) -> tuple[list[InputRecord], DetectorConfig | None]:
    """Everything that can be checked before work starts; returns the inputs and, for a trained
    detector, its checkpoint's config. Raises one-line errors."""
    so = cfg.storage_options
    check_bucket(cfg.output.prefix, so, "output.prefix")
    if cfg.inputs.manifest is not None:
        check_bucket(cfg.inputs.manifest, so, "inputs.manifest")
        records = read_manifest(cfg.inputs.manifest, so)
    else:
        records = []
        for uri in cfg.inputs.uris or []:
            check_bucket(uri, so, "inputs.uris")
            records.extend(list_images(uri, cfg.inputs.group_template, so))
        if len({r.uri for r in records}) != len(records):
            raise InputError("inputs.uris: the globs/prefixes overlap and list some images more than once")
    if not cfg.scores_subsets():
        return records, _trained_detector_config(cfg)
    check_weights_setting(cfg.backbone)
    if cfg.backbone.weights is not None:
        check_bucket(cfg.backbone.weights, so, "backbone.weights")
        if not exists(cfg.backbone.weights, so):
            raise WeightsError(f"backbone.weights {cfg.backbone.weights}: no such file or object")
    return records, None


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


def _trained_detector_config(cfg: JobConfig) -> DetectorConfig:
    """The checkpoint's detector config, checked against the job's ``detector``."""
    uri = cfg.detector_checkpoint or ""
    check_bucket(uri, cfg.storage_options, "detector_checkpoint")
    if not exists(join_uri(uri, META_NAME), cfg.storage_options):
        raise WeightsError(f"detector_checkpoint {uri}: no {META_NAME} there (not a detector checkpoint)")
    detector_cfg, _ = read_checkpoint_config(uri, cfg.storage_options)
    if detector_cfg.kind != cfg.detector:
        raise JobError(f"detector is '{cfg.detector}' but detector_checkpoint {uri} holds a '{detector_cfg.kind}'")
    return detector_cfg


def open_run(cfg: JobConfig, chash: str) -> RunState:
    """Start a new run or resume one: the run id's recorded config hash must match."""
    run_date = cfg.run_date or datetime.now(timezone.utc).date().isoformat()
    run_id = cfg.run_id or f"{run_date}-{chash[:8]}"
    state = RunState(run_id, run_date, chash, join_uri(cfg.output.prefix, "runs", run_id))
    record_uri = join_uri(state.run_prefix, "run.json")
    if exists(record_uri, cfg.storage_options):
        recorded = json.loads(read_bytes(record_uri, cfg.storage_options))
        if recorded["config_hash"] != chash:
            raise JobError(f"run_id {run_id} was started with a different config (hash {recorded['config_hash'][:12]},"
                           f" now {chash[:12]}); resume it with the same config or choose a new run_id")
        if cfg.run_date is not None and cfg.run_date != recorded["run_date"]:
            raise JobError(f"run_id {run_id} is the run of {recorded['run_date']}; run_date {cfg.run_date} differs")
        state.run_date = recorded["run_date"]
    else:
        write_bytes(record_uri, json.dumps({
            "run_id": run_id, "run_date": run_date, "config_hash": chash,
            "created_at": datetime.now(timezone.utc).isoformat(),
        }).encode(), cfg.storage_options)
    return state


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _init_ray(address: str | None) -> bool:
    """Connect to (or start) Ray unless already connected; True if this call started the connection."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, log_to_driver=True)
    return True


def _read_shard_index(shards: list[dict], features_prefix: str, storage_options: dict | None) -> tuple[dict, str]:
    """Per group, every input's record with its shard position; and the backbone that wrote the shards."""
    def read(shard: dict) -> tuple[int, list[dict], str]:
        rows, backbone = read_shard_records(shard_uri(features_prefix, shard["shard_id"]), storage_options)
        return shard["shard_id"], rows, backbone

    by_group: dict[str, list[dict]] = defaultdict(list)
    backbone = ""
    with ThreadPoolExecutor(max_workers=16) as pool:
        for shard_id, rows, backbone in pool.map(read, shards):
            for row_index, row in enumerate(rows):
                by_group[row["group"]].append({**row, "shard_id": shard_id, "row": row_index})
    return dict(by_group), backbone


def _score_subset_task(plan: SubsetPlan, features_prefix: str, result_uri: str, cfg: JobConfig) -> dict:
    import torch

    torch.set_num_threads(cfg.scoring.num_cpus_per_task)
    device = "cuda" if cfg.scoring.num_gpus_per_task > 0 else "cpu"
    return score_subset(plan, features_prefix, result_uri, cfg.scorer_settings(), device, cfg.storage_options)


def _finalise_group_task(group: str, records: list[dict], subset_uris: list[str], ctx: GroupContext,
                         *subsets_done: dict) -> dict:
    """Runs once every subset of the group is scored (Ray resolves ``subsets_done`` first)."""
    return finalise_group(group, records, subset_uris, ctx)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:300]


def _score_groups(cfg: JobConfig, state: RunState, by_group: dict[str, list[dict]], ctx: GroupContext,
                  failures: list[str]) -> tuple[dict[str, dict], dict[str, int]]:
    """Stages 3 and 4 as Ray tasks; returns the summary of every finished group and task counts."""
    import ray

    so = cfg.storage_options
    members = {g: [Member(r["uri"], r["shard_id"], r["row"]) for r in rows if r["status"] == STATUS_OK]
               for g, rows in by_group.items()}
    # MuSc scores seeded subsets; a trained detector already wrote one result per (group, shard)
    plans = plan_subsets(members, cfg.scoring.max_subset_size, cfg.scoring.seed) if cfg.scores_subsets() else []
    plans_by_group: dict[str, list[SubsetPlan]] = defaultdict(list)
    for plan in plans:
        plans_by_group[plan.group].append(plan)
    pieces = {g: [subset_result_uri(state.run_prefix, g, s) for s in sorted({m.shard_id for m in ms})]
              for g, ms in members.items()} if not cfg.scores_subsets() else {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        finished = dict(zip(by_group, pool.map(lambda g: exists(group_summary_uri(state.run_prefix, g), so), by_group)))
        result_uris = {(p.group, p.subset_id): subset_result_uri(state.run_prefix, p.group, p.subset_id) for p in plans}
        todo = [p for p in plans if not finished[p.group]]
        scored = dict(zip(todo, pool.map(lambda p: exists(result_uris[(p.group, p.subset_id)], so), todo)))
    score_task = ray.remote(_score_subset_task).options(
        num_cpus=cfg.scoring.num_cpus_per_task, num_gpus=cfg.scoring.num_gpus_per_task,
        max_retries=cfg.scoring.max_retries)
    group_task = ray.remote(_finalise_group_task).options(num_cpus=1, max_retries=cfg.scoring.max_retries)
    counts = {"subsets": len(plans), "subsets_skipped": sum(scored.values()) + len(plans) - len(todo),
              "groups": len(by_group), "groups_skipped": sum(finished.values())}
    subset_refs, group_refs = {}, {}
    for group in sorted(g for g, done in finished.items() if not done):
        refs = []
        for plan in plans_by_group[group]:
            if not scored[plan]:
                ref = score_task.remote(plan, state.features_prefix, result_uris[(group, plan.subset_id)], cfg)
                subset_refs[ref] = plan
                refs.append(ref)
        uris = ([result_uris[(group, p.subset_id)] for p in plans_by_group[group]] if cfg.scores_subsets()
                else pieces[group])
        group_refs[group_task.remote(group, by_group[group], uris, ctx, *refs)] = group
    summaries = {g: read_group_summary(state.run_prefix, g, so) for g, done in finished.items() if done}
    subset_progress = Progress("mutual scoring: subsets", len(subset_refs))
    group_progress = Progress("groups finalised", len(group_refs))
    pending = [*subset_refs, *group_refs]
    subsets_done = groups_done = 0
    counts["images_scored"] = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ref = ready[0]
        try:
            value = ray.get(ref)
        except ray.exceptions.RayError as err:
            what = (f"group {group_refs[ref]!r}" if ref in group_refs
                    else f"group {subset_refs[ref].group!r} subset {subset_refs[ref].subset_id}")
            failures.append(f"{what}: {_first_line(err)}")
            value = None
        if ref in subset_refs:
            subsets_done += 1
            counts["images_scored"] += value["images"] if value is not None else 0
            subset_progress.update(subsets_done)
        else:
            groups_done += 1
            group_progress.update(groups_done)
            if value is not None:
                summaries[group_refs[ref]] = value
    return summaries, counts


def _write_metrics(cfg: JobConfig, state: RunState, summaries: dict[str, dict]) -> dict[str, Any] | None:
    """The engine's table over the groups that carry labels: Parquet for BI and text for people."""
    per_group = {g: s["metrics"] for g, s in sorted(summaries.items()) if s["metrics"] is not None}
    if not per_group:
        return None
    rows = [{"group": g, **{c: m.get(c) for c in TABLE_COLUMNS}, "run_id": state.run_id} for g, m in per_group.items()]
    parquet_uri = join_uri(cfg.output.prefix, "metrics", f"run_date={state.run_date}", f"part-{state.run_id}.parquet")
    write_parquet(parquet_uri, pa.Table.from_pylist(rows), cfg.storage_options)
    table = format_table(per_group)
    write_bytes(join_uri(state.run_prefix, "metrics.txt"), (table + "\n").encode(), cfg.storage_options)
    return {"table": table, "per_group": per_group, "mean": mean_row(per_group), "uri": parquet_uri}


def run_job(cfg: JobConfig) -> JobReport:
    """Run (or resume) the whole job; raises JobError/ConfigError/InputError/StorageError/WeightsError
    before any work when the configuration cannot work."""
    started_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    prepare_demo_inputs(cfg)
    records, detector_cfg = preflight(cfg)
    references = reference_uris(cfg, records)
    state = open_run(cfg, config_hash(cfg))
    so = cfg.storage_options
    if exists(state.success_uri, so):
        manifest = json.loads(read_bytes(state.manifest_uri, so))
        print(f"run {state.run_id} already completed ({manifest['finished_at']}); nothing to do", file=sys.stderr)
        return JobReport(0, manifest)
    timings = {"preflight": time.perf_counter() - t0}
    failures: list[str] = []
    extraction: dict[str, Any] = {}
    summaries: dict[str, dict] = {}
    counts: dict[str, int] = {}
    backbone = ""
    started_ray = _init_ray(cfg.ray_address)
    try:
        t = time.perf_counter()
        shards = plan_shards(records, cfg.extraction.shard_size)
        print(f"run {state.run_id}: {len(records)} images in {len({r.group for r in records})} groups, "
              f"{len(shards)} feature shards", file=sys.stderr)
        ex = cfg.extraction
        if cfg.scores_subsets():
            stage, image_size, resize = "extraction", cfg.backbone.image_size, None
            sigma = cfg.scorer_settings().gaussian_sigma
            extraction = run_feature_stage(shards, cfg.backbone, state.features_prefix, ex, so)
        else:  # the first stage scores; maps come smoothed from the detector
            stage, sigma = "detector", 0.0
            image_size, resize = detector_cfg.input_geometry()
            extraction = run_detector_stage(shards, cfg.detector_checkpoint, image_size, resize,
                                            state.features_prefix, state.run_prefix, ex, cfg.backbone.batch_size, so,
                                            references)
        timings[stage] = time.perf_counter() - t
        timings[f"{stage}_actor_busy"] = extraction["actor_seconds"]
        t = time.perf_counter()
        by_group, backbone = _read_shard_index(shards, state.features_prefix, so)
        ctx = GroupContext(
            output_prefix=cfg.output.prefix, run_prefix=state.run_prefix, run_id=state.run_id,
            run_date=state.run_date, config_hash=state.config_hash, backbone=backbone,
            image_size=image_size, gaussian_sigma=sigma,
            heatmaps=cfg.output.heatmaps, flag_policy=cfg.flagging.policy, flag_value=cfg.flag_value(),
            storage_options=so, resize=resize)
        summaries, counts = _score_groups(cfg, state, by_group, ctx, failures)
        if not cfg.scores_subsets():  # scored in the first stage: every image that decoded
            counts["images_scored"] = extraction["images"] - extraction["failed"]
        timings["scoring"] = time.perf_counter() - t
    except Exception as err:  # a stage that failed beyond its retries ends the run as failed, not as a traceback
        log.exception("stage failed")
        failures.append(f"stage failed: {_first_line(err)}")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    metrics = _write_metrics(cfg, state, summaries) if not failures else None
    manifest = _manifest(cfg, state, records, extraction, summaries, counts, timings, failures, metrics, backbone,
                         started_at, time.perf_counter() - t0)
    write_bytes(state.manifest_uri, json.dumps(manifest, indent=2, allow_nan=True).encode(), so)
    if failures:
        return JobReport(1, manifest)
    if not cfg.output.keep_features:
        fs, path = fsspec.core.url_to_fs(state.features_prefix, **so)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    write_bytes(state.success_uri, b"", so)
    return JobReport(0, manifest)


def _manifest(cfg: JobConfig, state: RunState, records: list[InputRecord], extraction: dict, summaries: dict,
              counts: dict, timings: dict, failures: list[str], metrics: dict | None, backbone: str,
              started_at: datetime, seconds: float) -> dict[str, Any]:
    statuses: dict[str, int] = defaultdict(int)
    for s in summaries.values():
        for status, n in s["statuses"].items():
            statuses[status] += n
    scored = sum(s["scored"] for s in summaries.values())
    extracted = extraction.get("images", 0)
    scored_now = counts.get("images_scored", 0)
    first = "extraction" if cfg.scores_subsets() else "detector"
    return {
        "run_id": state.run_id, "run_date": state.run_date, "config_hash": state.config_hash,
        "status": "failed" if failures else "succeeded", "failures": failures,
        "started_at": started_at.isoformat(), "finished_at": datetime.now(timezone.utc).isoformat(),
        "seconds": seconds, "backbone": backbone, "scores_meaningful": "RANDOM INIT" not in backbone,
        "counts": {
            "inputs": len(records), "rows_written": sum(s["inputs"] for s in summaries.values()),
            "scored": scored, "failed": sum(n for st, n in statuses.items() if st != STATUS_OK),
            "statuses": dict(statuses), "flagged": sum(s["flagged"] for s in summaries.values()),
            "groups": counts.get("groups", 0), "groups_skipped": counts.get("groups_skipped", 0),
            "subsets": counts.get("subsets", 0), "subsets_skipped": counts.get("subsets_skipped", 0),
            "shards": extraction.get("shards", 0), "shards_skipped": extraction.get("skipped", 0),
            "images_extracted": extracted,
        },
        "timings_s": timings,
        "throughput_images_per_s": {  # first stage: feature extraction (MuSc) or scoring (trained detector)
            first: extracted / timings[first] if extracted and timings.get(first) else None,
            "scoring": scored_now / timings["scoring"] if scored_now and timings.get("scoring") else None,
        },
        "outputs": {
            "scores": join_uri(cfg.output.prefix, "scores"),
            "heatmaps": join_uri(cfg.output.prefix, "heatmaps") if cfg.output.heatmaps != "none" else None,
            "metrics": metrics["uri"] if metrics else None,
            "manifest": state.manifest_uri,
        },
        "metrics": {"per_group": metrics["per_group"], "mean": metrics["mean"]} if metrics else None,
        "config": redact(config_to_dict(cfg)),
        "versions": _versions(),
    }


def format_summary(report: JobReport) -> str:
    """The end-of-job summary: outcome, counts, timings, where the outputs are."""
    m = report.manifest
    c = m["counts"]
    lines = [f"MuSc run {m['run_id']} ({m['run_date']}) {m['status'].upper()} in {m['seconds']:.1f}s"
             f" | backbone {m['backbone']}"]
    failed = ", ".join(f"{k} {v}" for k, v in sorted(c["statuses"].items()) if k != STATUS_OK) or "none"
    lines.append(f"  images: {c['inputs']} in, {c['scored']} scored, {c['failed']} not scored ({failed}), "
                 f"{c['flagged']} flagged; {c['rows_written']} rows written")
    lines.append(f"  work: {c['shards']} feature shards ({c['shards_skipped']} already done), "
                 f"{c['subsets']} subsets ({c['subsets_skipped']} already done), "
                 f"{c['groups']} groups ({c['groups_skipped']} already done)")
    speed = m["throughput_images_per_s"]
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in m["timings_s"].items())
    rates = ", ".join(f"{k} {v:.1f} img/s" for k, v in speed.items() if v)
    lines.append(f"  time: {timing}" + (f" ({rates})" if rates else ""))
    for name, uri in m["outputs"].items():
        if uri:
            lines.append(f"  {name}: {uri}")
    if m["metrics"]:
        mean = m["metrics"]["mean"]
        lines.append("  metrics (mean over labelled groups): " + ", ".join(
            f"{k} {100 * mean[k]:.1f}" for k in ("image_auroc", "pixel_auroc", "au_pro", "mad") if k in mean))
    lines.extend(f"  FAILED: {f}" for f in report.failures)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 on success, 1 when a stage failed beyond its retries, 2 on bad config/inputs."""
    try:
        cfg = config_from_command_line(JobConfig, "MuSc nightly anomaly scoring on Ray", argv)
        report = run_job(cfg)
    except (ConfigError, InputError, StorageError, WeightsError, JobError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(report))
    return report.exit_code
