"""Whether a night may run, and as what: everything the job checks and decides before its first write.

The run (``run.run_job``) and its dry run (``dry_run``, ``jobs/musc.py --plan``) both go through
``admit``, so a config the run would refuse is refused by the plan with the same line, and the plan
is the one the run would make: preflight (config, buckets, inputs, weights, backbone, Ray address),
the run's identity and whether it resumes or is already finished, the inputs present, no other
driver on the run id, the reviewers' verdicts, the references, the scoring strategy and the data
plan. Nothing here writes; the only difference a dry run makes is that demo data still to generate
is named, not written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..data.inputs import InputRecord
from ..settings import ZERO_SHOT_DETECTORS, DetectorConfig, JobConfig
from ..storage import exists, read_bytes
from .detect import DetectorScoring
from .identity import config_hash, open_run, warn_same_night_runs
from .layout import RunLayout
from .lease import RunLease
from .plan import RunPlan, plan_run
from .preflight import check_present, demo_to_generate, preflight
from .references import resolve_references
from .strategy import ScoringStrategy
from .subsets import ZeroShotScoring
from .verdicts import read_verdicts, review_nights, review_record


@dataclass
class Admission:
    """A night the job may run: its inputs, identity, references and way of scoring. ``completed``: the
    run id already finished (nothing to do; the fields after ``completed`` are then unset)."""

    records: list[InputRecord]
    detector_cfg: DetectorConfig | None
    config_hash: str
    layout: RunLayout
    new_record: dict | None  # a new run's run.json, written once the job can start; None when it resumes
    completed: bool
    demo_planned: bool = False  # dry run: the demo inputs are named from the generator's config, not written
    lease: RunLease | None = None
    references: dict | None = None  # resolve_references' result (a resumed run keeps its recorded one)
    strategy: ScoringStrategy | None = None
    verdicts: dict | None = None  # what the reviewers' verdicts said (``verdicts.review_record``)

    def plan(self, cfg: JobConfig) -> RunPlan:
        """The data plan the run executes (shards, subsets), from the listing alone."""
        assert self.strategy is not None, "a completed run has no plan"
        return plan_run(self.records, cfg.extraction.shard_size, self.strategy.max_subset_size, cfg.scoring.seed,
                        self.strategy.member_references)


def admit(cfg: JobConfig, dry_run: bool = False) -> Admission:
    """Every refusal of the job before its first write, as one-line ``UserError``s; ``dry_run`` writes no
    demo data either."""
    records, detector_cfg = preflight(cfg, generate_demo=not dry_run)
    demo_planned = dry_run and demo_to_generate(cfg) is not None
    chash = config_hash(cfg)
    layout, new_record = open_run(cfg, chash, records)
    so = cfg.storage_options
    warn_same_night_runs(layout, records, so)
    if exists(layout.success, so):
        return Admission(records, detector_cfg, chash, layout, new_record, True, demo_planned)
    if not demo_planned:  # the demo's images exist once generated
        check_present(records, cfg)
    lease = RunLease(layout.lease, layout.run_id, cfg.lease_timeout_s, so)
    lease.refuse_if_held()
    review = None if cfg.verdicts is None else review_nights(  # verdicts matched against the earlier nights
        read_verdicts(cfg.verdicts, so), cfg.output.prefix, layout.run_id, cfg.verdict_runs,
        sorted({r.group for r in records}), so)
    # a resumed run keeps the references it started with: its shards were planned with them
    recorded = {} if new_record is not None else json.loads(read_bytes(layout.record, so))
    references = recorded["references"] if "references" in recorded else resolve_references(cfg, records,
                                                                                            layout.run_id, review)
    if new_record is not None:
        new_record["references"] = references
    per_group = None if references is None else references["per_group"]
    strategy: ScoringStrategy
    if cfg.detector in ZERO_SHOT_DETECTORS:  # the zero-shot scorers compare a group's images
        strategy = ZeroShotScoring(cfg, layout, per_group)
    else:  # a trained detector scores each image alone
        strategy = DetectorScoring(cfg, layout, detector_cfg, per_group)
    verdicts = None if review is None else review_record(review, cfg.verdicts or "")
    return Admission(records, detector_cfg, chash, layout, new_record, False, demo_planned, lease, references,
                     strategy, verdicts)
