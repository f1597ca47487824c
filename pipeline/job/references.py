"""Each group's known-good references: listed under a prefix, or kept up by the job from earlier nights.

A prefix (``references``) is listed and grouped like the inputs; each group takes its first
``reference_images`` by URI. From earlier nights (``reference_runs`` K), each group takes the
lowest-scoring images of its last K successful runs under ``output.prefix``: rows with status ok that
were never flagged, read from those runs' scores Parquet, at most ``reference_images``. With reviewers'
verdicts (``verdicts``) a group's confirmed-good images of earlier nights come first, and no image with a
defect verdict (flagged or not) or with contradicting verdicts is ever taken. Either way
tonight's inputs are never references (an image matched against itself scores 0 and would hide its
defects): by URI here, and by content once the bytes are read (a copy under another name, and a
reference that does not decode, are left out with a warning by the scoring tasks, ``subsets``). The
result records which images, and for earlier nights from which runs, so the manifest and a resumed
run can name them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..data.inputs import InputRecord, list_images
from ..settings import JobConfig
from ..storage import check_bucket
from .earlier_runs import earlier_runs, group_rows
from .preflight import JobError
from .scores_table import STATUS_OK
from .verdicts import Review

EARLIER_RUNS = "earlier runs"  # the references' source when the job keeps them up itself


def resolve_references(cfg: JobConfig, records: list[InputRecord], run_id: str,
                       review: Review | None = None) -> dict[str, Any] | None:
    """``{"source", "per_group": {group: [uri]}, "run_of": {uri: run_id}}`` (with ``review``, the
    reviewers' verdicts matched against earlier nights, also ``from_verdicts``: {group: count}) or None
    without references.

    A group without references is an error for a prefix (every group needs some) and for the
    'reference_fpr' flag policy (nothing to calibrate on); from earlier nights it is scored without."""
    from_verdicts = None
    if cfg.references is not None:
        per_group, run_of = _listed(cfg, records), {}
    elif cfg.reference_runs or review is not None:
        per_group, run_of, from_verdicts = _from_earlier_runs(cfg, records, run_id, review)
    else:
        return None
    groups = sorted({r.group for r in records})
    missing = [g for g in groups if not per_group.get(g)]
    if missing and (cfg.references is not None or cfg.flagging.policy == "reference_fpr"):
        kept_up = ", ".join(f"{key} {value}" for key, value in (("reference_runs", cfg.reference_runs),
                                                                 ("verdicts", cfg.verdicts)) if value)
        source = f"references {cfg.references}" if cfg.references is not None else \
            f"{kept_up} (flagging.policy reference_fpr)"
        raise JobError(f"{source}: no known-good images for {len(missing)} input group(s), e.g. {missing[:5]} "
                       f"(found groups {sorted(g for g in per_group if per_group[g])[:5]})")
    chosen = {"source": cfg.references or EARLIER_RUNS,
              "per_group": {g: per_group[g] for g in groups if per_group.get(g)}, "run_of": run_of}
    return chosen if review is None else {**chosen, "from_verdicts": from_verdicts}


def _listed(cfg: JobConfig, records: list[InputRecord]) -> dict[str, list[str]]:
    """Each group's first ``reference_images`` known-good URIs under the ``references`` prefix."""
    check_bucket(cfg.references, cfg.storage_options, "references")
    inputs = {r.uri for r in records}
    by_group: dict[str, list[str]] = defaultdict(list)
    for record in list_images(cfg.references, cfg.inputs.group_template, cfg.storage_options):
        if record.uri not in inputs:
            by_group[record.group].append(record.uri)
    return {g: sorted(uris)[:cfg.reference_images] for g, uris in by_group.items()}


def _from_earlier_runs(cfg: JobConfig, records: list[InputRecord], run_id: str, review: Review | None
                       ) -> tuple[dict[str, list[str]], dict[str, str], dict[str, int]]:
    """Per group, its confirmed-good images (with verdicts), then the lowest-scoring unflagged images of its
    last ``reference_runs`` successful runs that no verdict keeps out; also how many came from verdicts."""
    so, prefix = cfg.storage_options, cfg.output.prefix
    if not cfg.reference_runs:
        runs: list[dict[str, Any]] = []
    else:  # the review has listed them already: every run's manifest is read once a night
        runs = review.earlier if review is not None else earlier_runs(prefix, run_id, so)
    inputs = {r.uri for r in records}
    per_group: dict[str, list[str]] = {}
    run_of: dict[str, str] = {}
    from_verdicts: dict[str, int] = {}
    for group in sorted({r.group for r in records}):
        chosen = _confirmed_good(review, group, inputs) if review is not None else {}
        chosen = dict(list(chosen.items())[:cfg.reference_images])
        from_verdicts[group] = len(chosen)
        candidates: dict[str, tuple[float, str]] = {}  # uri -> (lowest score, run id)
        used = 0
        for manifest in runs:
            if used == cfg.reference_runs or len(chosen) == cfg.reference_images:
                break
            rows = group_rows(prefix, manifest, group, so)
            if rows is None:
                continue
            used += 1
            for row in rows:
                good = row["status"] == STATUS_OK and row["is_anomaly"] is False and row["uri"] not in inputs
                kept_out = row["uri"] in chosen or (review is not None and review.verdicts.never_reference(row["uri"]))
                if good and not kept_out and row["score"] < candidates.get(row["uri"], (float("inf"), ""))[0]:
                    candidates[row["uri"]] = (row["score"], manifest["run_id"])
        lowest = sorted(candidates, key=lambda uri: (candidates[uri][0], uri))[:cfg.reference_images - len(chosen)]
        chosen.update({uri: candidates[uri][1] for uri in lowest})
        per_group[group] = sorted(chosen)
        run_of.update(chosen)
    return per_group, run_of, from_verdicts


def _confirmed_good(review: Review, group: str, inputs: set[str]) -> dict[str, str]:
    """The group's images every reviewer judged good, scored (status ok) by a run the review read and not
    among tonight's inputs: uri -> its latest run, the latest runs first (the nearest to tonight's parts)."""
    chosen: dict[str, str] = {}
    for row, run in review.reviewed.get(group, []):
        uri = row["uri"]
        if row["status"] == STATUS_OK and uri not in inputs and review.verdicts.confirmed_good(uri):
            chosen.setdefault(uri, run)
    return chosen
