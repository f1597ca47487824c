"""How a detector family runs through the job: the seam between orchestration and scoring.

``run`` drives every strategy the same way: the plan (subsets when ``max_subset_size`` is set), the
first stage over the plan's shards, then per group the scoring tasks still to do (zero-shot subsets;
none for a trained detector, which scored in the first stage) and one group task over the group's
scored batches.
"""

from __future__ import annotations

from typing import Any, Protocol

from .plan import RunPlan


class ScoringStrategy(Protocol):
    """What the orchestration needs from a way of scoring."""

    first_stage: str  # the first stage's name in timings and throughput ("extraction" or "detector")
    shards_prefix: str  # where the first stage writes one object per shard (with the records columns)
    max_subset_size: int | None  # images scored together at most; None: each image alone
    image_size: int  # input side the maps and heat maps are drawn at
    resize: int | None  # resize before the centre crop (Dinomaly), or None
    gaussian_sigma: float  # smoothing of maps drawn from stored patch grids (0: they come smoothed)
    scores_meaningful: bool  # False when the model's weights are random (demos and tests)
    model: str  # the scores table's ``backbone``: family/name@size, a trained detector's kind before it
    member_references: dict[str, list[str]] | None  # known-good URIs per group that join its subsets

    def run_first_stage(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        """Decode and process every shard not done yet; counts and timings of this run."""

    def tasks(self, plan: RunPlan, group: str) -> list[Any]:
        """The scoring tasks a group needs after the first stage (the same on a re-run)."""

    def is_done(self, task: Any) -> bool:
        """Whether a scoring task already wrote its result."""

    def submit(self, task: Any) -> Any:
        """Start one scoring task on Ray; returns its object ref."""

    def batch_sources(self, plan: RunPlan, group: str) -> list[str]:
        """The objects the group stage reads the group's scored batches from."""
