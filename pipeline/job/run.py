"""The nightly job: images in object storage -> scores Parquet, heat maps, manifest, metrics.

    python jobs/musc.py --config conf/local.yaml [key.path=value ...]
    python jobs/musc.py --config conf/local.yaml --plan [--plan-json plan.json]   # dry run (``dry_run``)
    ray job submit --working-dir . -- python jobs/musc.py --config conf/nightly.yaml

Stages (docs/architecture.md, "The nightly job"):

1. preflight (``preflight``): validate the config, reach every bucket, list the inputs, check the
   weights; any problem is one line on stderr and exit code 2 before any work starts;
2. first stage over input shards (``shards``): Ray Data decodes on CPU tasks and an actor pool
   extracts features (zero-shot, ``extract``) or scores with a trained detector (``detect``);
3. scoring: one Ray task per seeded subset of a group (zero-shot only, ``subsets``);
4. groups (``groups``): one Ray task per group once its batches are scored: ranks, flags, heat maps,
   metrics, the group's rows of the scores table;
5. the run's records (``manifest``): metrics table, ``manifest.json``, then ``_SUCCESS``.

Which detector scores is a strategy (``ZeroShotScoring`` or ``DetectorScoring``); this module only
orchestrates. Every object's name is in ``layout``. Re-running a run id skips what is finished;
every object is written whole, so a killed worker or job leaves nothing that looks complete but is not.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from ..reporting.progress import Progress
from ..settings import JobConfig, run_program
from ..storage import StorageError, exists, read_bytes, remove, write_bytes
from . import telemetry
from .admission import Admission, admit
from .cluster import ClusterWatch
from .dry_run import add_plan_options, print_plan
from .drift import embedding_moments
from .flagging import FlagRule
from .groups import GroupContext, finalise_group, read_group_summary
from .identity import write_run_record
from .layout import RunLayout, shard_uri
from .manifest import JobReport, RunFacts, build_manifest, format_summary, write_metrics
from .nights import Nights, write_group_nights
from .plan import RunPlan
from .preflight import JobError
from .object_store import spilled_since, store_stats
from .resources import limit_actor_wait, wait_for_resources
from .report import write_run_report
from .scores_table import check_rows, write_text_group_marker
from .shards import read_records, read_shard_records
from .strategy import ScoringStrategy

log = logging.getLogger(__name__)


def _init_ray(address: str | None) -> bool:
    """Connect to (or start) Ray unless already connected; True if this call started the connection.
    A cluster that cannot be joined is a one-line JobError."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, log_to_driver=True)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        raise JobError(f"ray_address {address or os.environ.get('RAY_ADDRESS', '(none)')}: cannot connect "
                       f"to Ray ({_first_line(err)}); start the cluster or correct the address") from None
    return True


def _stop_ray(started_ray: bool) -> None:
    """Shut Ray down if this job started it."""
    if started_ray:
        import ray

        ray.shutdown()


def _finalise_group_task(group: str, shard_uris: list[str], sources: list[str], ctx: GroupContext,
                         *scored: dict) -> dict:
    """Runs once every scoring task of the group is done (Ray resolves ``scored`` first); reads the
    group's records and embedding moments from its own shards, so the driver never holds them."""
    moments = embedding_moments(shard_uris, ctx.storage_options)
    with telemetry.task("groups", ctx.layout.run_id):
        summary = finalise_group(group, read_records(shard_uris, ctx.storage_options), sources, ctx,
                                 moments.as_dict() if moments else None)
    telemetry.group_finished(ctx.layout.run_id, summary["statuses"])
    return summary


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:300]


def _score_groups(cfg: JobConfig, strategy: ScoringStrategy, plan: RunPlan, layout: RunLayout, ctx: GroupContext,
                  failures: list[str], nodes: Counter) -> tuple[dict[str, dict], dict[str, int], dict[str, float]]:
    """The scoring tasks and the group tasks on Ray; returns the summary of every finished group, task
    counts, and the seconds the tasks of this run spent in our code; ``nodes`` counts subsets per node."""
    import ray

    so = cfg.storage_options
    groups = plan.groups
    tasks = {g: strategy.tasks(plan, g) for g in groups}
    with ThreadPoolExecutor(max_workers=16) as pool:
        finished = dict(zip(groups, pool.map(lambda g: exists(layout.group_summary(g), so), groups)))
        todo = [t for g in groups if not finished[g] for t in tasks[g]]
        done = dict(zip(todo, pool.map(strategy.is_done, todo)))
    planned = sum(len(ts) for ts in tasks.values())
    counts = {"subsets": planned, "subsets_skipped": planned - len(todo) + sum(done.values()),
              "groups": len(groups), "groups_skipped": sum(finished.values())}
    group_task = ray.remote(_finalise_group_task).options(num_cpus=1, max_retries=cfg.scoring.max_retries)
    task_refs, group_refs = {}, {}
    for group in (g for g in groups if not finished[g]):
        refs = []
        for task in tasks[group]:
            if not done[task]:
                ref = strategy.submit(task)
                task_refs[ref] = task
                refs.append(ref)
        shard_uris = [shard_uri(strategy.shards_prefix, s) for s in plan.shards_of_group[group]]
        group_refs[group_task.remote(group, shard_uris, strategy.batch_sources(plan, group), ctx, *refs)] = group
    summaries = {g: read_group_summary(layout, g, so) for g in groups if finished[g]}
    task_progress = Progress("mutual scoring: subsets", len(task_refs))
    group_progress = Progress("groups finalised", len(group_refs))
    pending = [*task_refs, *group_refs]
    tasks_done = groups_done = 0
    counts["images_scored"] = 0
    task_seconds = {"subsets": 0.0, "groups": 0.0}  # time inside our code, for the per-task overhead
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ref = ready[0]
        try:
            value = ray.get(ref)
        except ray.exceptions.RayError as err:
            what = (f"group {group_refs[ref]!r}" if ref in group_refs
                    else f"group {task_refs[ref].group!r} subset {task_refs[ref].subset_id}")
            failures.append(f"{what}: {_first_line(err)}")
            value = None
        if ref in task_refs:
            tasks_done += 1
            task_progress.update(tasks_done)
            if value is not None:
                task_seconds["subsets"] += value["seconds"]
                nodes[value["node_id"]] += 1
        else:
            groups_done += 1
            group_progress.update(groups_done)
            if value is not None:
                summaries[group_refs[ref]] = value
                counts["images_scored"] += value["scored"]
                task_seconds["groups"] += value["seconds"]
    return summaries, counts, task_seconds


def _completed(layout: RunLayout, storage_options: dict) -> JobReport:
    """A finished run is never redone nor rewritten: its manifest is the summary."""
    manifest = json.loads(read_bytes(layout.manifest, storage_options))
    print(f"run {layout.run_id} already completed ({manifest['finished_at']}); nothing to do", file=sys.stderr)
    return JobReport(0, manifest)


def run_job(cfg: JobConfig) -> JobReport:
    """Run (or resume) the whole job; raises JobError/ConfigError/InputError/StorageError/WeightsError
    before any work when the configuration cannot work, or another driver works on the run."""
    started_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    admitted = admit(cfg)
    layout, so = admitted.layout, cfg.storage_options
    if admitted.completed:
        return _completed(layout, so)
    lease = admitted.lease
    started_ray = _init_ray(cfg.ray_address)
    try:  # nothing of the run is written before its resources are free and its lease is this driver's
        wait_for_resources(cfg)
        lease.acquire()
    except BaseException:
        _stop_ray(started_ray)
        raise
    try:
        if exists(layout.success, so):  # another driver finished it in the meantime
            _stop_ray(started_ray)
            return _completed(layout, so)
        return _run(cfg, admitted, started_ray, started_at, t0)
    finally:
        lease.release()


def _write_group_nights(cfg: JobConfig, layout: RunLayout, summaries: dict[str, dict], model: str, chash: str,
                        verdicts: dict | None, failures: list[str]) -> Nights | None:
    """The per-group nightly table, once every group is final; a failure to write it fails the night
    (a re-run rewrites it whole)."""
    try:
        return write_group_nights(cfg, layout, summaries, model, chash, verdicts)
    except Exception as err:  # noqa: BLE001 - reported as the run's failure, like a stage's
        log.exception("group_nights not written")
        failures.append(f"group_nights table: {_first_line(err)}")
        return None


def _run(cfg: JobConfig, admitted: Admission, started_ray: bool, started_at: datetime, t0: float) -> JobReport:
    """The run's stages under this driver's lease; its records are written only while it holds the lease."""
    so = cfg.storage_options
    records, chash, layout, new_record = admitted.records, admitted.config_hash, admitted.layout, admitted.new_record
    references, strategy, lease = admitted.references, admitted.strategy, admitted.lease
    verdicts = admitted.verdicts
    timings = {"preflight": time.perf_counter() - t0}
    failures: list[str] = []
    first_stage: dict[str, Any] = {}
    summaries: dict[str, dict] = {}
    counts: dict[str, int] = {}
    task_seconds: dict[str, float] = {}
    subset_nodes: Counter = Counter()
    watch: ClusterWatch | None = None
    backbone = ""
    store_before = store_stats()
    store: dict[str, int] | None = None
    try:  # the run's first objects
        if new_record is not None:
            write_run_record(layout, new_record, so)
        write_text_group_marker(layout, so)
    except StorageError:
        _stop_ray(started_ray)
        raise
    try:
        t = time.perf_counter()
        plan = admitted.plan(cfg)
        timings["plan"] = time.perf_counter() - t
        t = time.perf_counter()
        subsets = sum(len(s) for s in plan.subsets.values())
        print(f"run {layout.run_id}: {len(records)} images in {len(plan.groups)} groups, {subsets} subsets, "
              f"{len(plan.shards)} shards", file=sys.stderr)
        limit_actor_wait(cfg)
        telemetry.run_planned(layout.run_id, len(records), {strategy.first_stage: len(plan.shards),
                                                            "scoring": subsets, "groups": len(plan.groups)})
        watch = ClusterWatch()
        first_stage = strategy.run_first_stage([{**s.item(), "run_id": layout.run_id} for s in plan.shards])
        timings[strategy.first_stage] = time.perf_counter() - t
        timings[f"{strategy.first_stage}_actor_busy"] = first_stage["actor_seconds"]
        t = time.perf_counter()
        _, backbone = read_shard_records(shard_uri(strategy.shards_prefix, plan.shards[0].shard_id), so)
        ctx = GroupContext(layout=layout, config_hash=chash, backbone=strategy.model,
                           scores_meaningful=strategy.scores_meaningful, image_size=strategy.image_size,
                           gaussian_sigma=strategy.gaussian_sigma, heatmaps=cfg.output.heatmaps,
                           heatmaps_at=cfg.output.heatmaps_at, flag=FlagRule.from_settings(cfg.flagging),
                           storage_options=so, resize=strategy.resize)
        summaries, counts, task_seconds = _score_groups(cfg, strategy, plan, layout, ctx, failures, subset_nodes)
        timings["scoring"] = time.perf_counter() - t
        counts["rows_written"], problems = check_rows(summaries, [r.uri for r in records], so)
        if not failures:  # a run whose groups all finished must hold one row per input
            failures.extend(f"scores table: {p}" for p in problems)
    except Exception as err:  # a stage that failed beyond its retries ends the run as failed, not as a traceback
        log.exception("stage failed")
        failures.append(f"stage failed: {_first_line(err)}")
    finally:  # a failed night's manifest says where it ran, what it lost and what it spilled, too
        cluster = None if watch is None else watch.section(first_stage.get("nodes", {}), subset_nodes)
        store = spilled_since(store_before)  # while Ray is still connected
        telemetry.stages_finished(layout.run_id, timings)
        _stop_ray(started_ray)
    taken = lease.lost_reason() or ("another driver completed this run meanwhile; this driver's results are not "
                                    "recorded" if exists(layout.success, so) else None)
    if taken is not None:
        failures.append(taken)
    metrics = write_metrics(layout, summaries, so) if not failures else None
    nights = (_write_group_nights(cfg, layout, summaries, strategy.model, chash, verdicts, failures) if not failures
              else None)
    facts = RunFacts(len(records), strategy.first_stage, first_stage, summaries, counts, timings, task_seconds,
                     failures, backbone, strategy.scores_meaningful, started_at, time.perf_counter() - t0,
                     references, verdicts, nights, cluster, store)
    manifest = build_manifest(cfg, layout, chash, facts, metrics)
    if taken is not None:  # the run's records are the other driver's
        return JobReport(1, manifest)
    try:
        write_run_report(manifest, summaries, layout, so, nights)
    except Exception as err:  # noqa: BLE001 - the report is derived from the outputs; it never fails a run
        log.warning("report not written: %s", _first_line(err))
        manifest["outputs"]["report"] = None
    write_bytes(layout.manifest, json.dumps(manifest, indent=2, allow_nan=True).encode(), so)
    if failures:
        return JobReport(1, manifest)
    if not cfg.output.keep_features:
        remove(strategy.shards_prefix, so)
    write_bytes(layout.success, b"", so)
    return JobReport(0, manifest)


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 on success, 1 when a stage failed beyond its retries, 2 on bad config/inputs;
    ``--plan`` (``dry_run``): the same refusals, then the night's plan and price, nothing written."""
    def program(cfg: JobConfig, plan: bool = False, plan_json: str | None = None) -> int:
        if plan or plan_json is not None:
            return print_plan(cfg, plan_json)
        report = run_job(cfg)
        print(format_summary(report))
        return report.exit_code

    return run_program(JobConfig, "MuSc nightly anomaly scoring on Ray", program, argv, add_plan_options)
