"""Settings of the nightly job (``python jobs/musc.py``): inputs, outputs, its stages, flags."""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from .backbone import BackboneConfig
from .data import SyntheticConfig
from .schema import FieldError, Section, setting
from .scorers import MuscConfig, PatchEADConfig
from .trends import TrendsConfig

# detectors that score a group's images against each other (no checkpoint; subsets of feature shards)
ZERO_SHOT_DETECTORS = ("musc", "patchead")
MISSING_SAMPLE = 200  # manifest entries preflight looks up (inputs.max_missing_fraction)


@dataclass
class InputsConfig(Section):
    """Which images the nightly job scores and how they are grouped (exactly one of uris / manifest)."""

    uris: list[str] | None = setting(
        "Globs or prefixes of image URIs: s3://bucket/2026-11-22/**/*.png, a local folder, any fsspec URI. "
        "A prefix without wildcards means every image below it.",
        default=None,
        uri=True,
    )
    manifest: str | None = setting(
        "A Parquet or CSV table with a 'uri' column and optional 'group', 'label' (0/1, enables metrics) "
        "and 'mask_uri' columns. Relative entries name files beside the manifest (below its folder or prefix).",
        default=None,
        uri=True,
    )
    max_missing_fraction: float = setting(
        "With manifest: before any work, preflight looks for an evenly spread sample of the manifest's images "
        f"(at most {MISSING_SAMPLE}; all of a smaller manifest) and refuses the night in one line when more than "
        "this fraction of them is missing (relative entries that point nowhere, a bucket not synced yet); the "
        "few that go missing otherwise become decode_error rows. 1: never refuse.",
        default=0.5,
        ge=0,
        le=1,
        run_only=True,
    )
    group_template: str | None = setting(
        "With uris: a path template below the listing root, e.g. '{line}/{product}/{name}'; every field "
        "but {name} (and fields starting with '_', which match a folder but are ignored) forms the group "
        "key MuSc scores within. null: the parent folder is the group.",
        default=None,
    )

    def check(self) -> None:
        if (self.uris is None) == (self.manifest is None):
            raise FieldError("uris", "give exactly one of inputs.uris and inputs.manifest")
        if self.uris is not None and not self.uris:
            raise FieldError("uris", "must list at least one glob or prefix")
        if self.manifest is not None and self.group_template is not None:
            raise FieldError("group_template", "applies to inputs.uris; a manifest gives groups in its 'group' column")


@dataclass
class OutputConfig(Section):
    """Where the job writes its results."""

    prefix: str = setting(
        "Output location: s3://bucket/path or a local folder. Holds scores/ (Hive-partitioned Parquet), "
        "heatmaps/, metrics/ and runs/<run_id>/ (manifest, _SUCCESS, intermediate shards).",
        default="outputs/nightly",
        run_only=True,
        uri=True,
    )
    heatmaps: Literal["flagged", "all", "none"] = setting(
        "Which images get a heat-map PNG (the photo beside the map over it, one colour scale per group).",
        default="flagged",
        run_only=True,
    )
    heatmaps_at: Literal["model", "full"] = setting(
        "Heat-map resolution: 'model' (the model's input size, small and fast) or 'full' (the photo's own "
        "size, the map upsampled to it; for centre-cropped inputs (Dinomaly) maps stay at the model's size).",
        default="model",
        run_only=True,
    )
    keep_features: bool = setting(
        "Keep the feature shards (runs/<run_id>/features/, or detections/ for a trained detector) after a "
        "successful run. They are large (ViT-L-14-336 at 518 px: 5.6 MB per image in int8, 11.2 MB in fp16), "
        "so by default they are deleted once the run succeeded.",
        default=False,
        run_only=True,
    )

    def check(self) -> None:
        if not self.prefix.strip():
            raise FieldError("prefix", "must not be empty")


@dataclass
class ActorPoolConfig(Section):
    """An autoscaling actor pool's bounds (Ray Data's ``ActorPoolStrategy(min_size=, max_size=)``)."""

    min: int = setting("Actors started before the stage begins (and kept while it runs).", default=1, ge=1)
    max: int = setting("Actors at most: more start while shards wait and a node has room for one.", default=1,
                       ge=1)

    def check(self) -> None:
        if self.min > self.max:
            raise FieldError("max", f"must be >= min ({self.min}), got {self.max}")


@dataclass
class ExtractionConfig(Section):
    """The first stage: decoding on CPU tasks, then feature extraction (or a trained detector) in an actor pool."""

    shard_size: int = setting(
        "Images per feature shard at most (one Parquet object, the unit of work and of re-run skipping). "
        "Shards are cut inside subsets, in near-equal parts. Part of the run's identity: changing it starts a "
        "new run id.",
        default=64,
        ge=1,
    )
    feature_dtype: Literal["fp16", "int8"] = setting(
        "How patch tokens are stored in the feature shards: 'int8' per token with one fp16 scale per token "
        "(half the bytes of 'fp16'; on MVTec bottle and the demo batch AUROC moved by at most 0.01 points and "
        "image scores kept Spearman 1.0000, README 'Scaling'), or 'fp16'. The image embedding is always fp32.",
        default="int8",
    )
    actors: int | ActorPoolConfig = setting(
        "Feature-extraction actors (one backbone load each): a number for a fixed pool, or {min, max} for a pool "
        "that Ray Data grows while shards wait and an actor's resources are free (a GPU node that joins "
        "mid-night is used) and shrinks when the queue empties. The first stage waits for min actors "
        "(resource_wait_s).",
        default=1,
        run_only=True,
        former_name="num_actors",
    )
    num_gpus_per_actor: float = setting(
        "GPUs per extraction actor (0: CPU; fractions share a GPU between actors).", default=0.0, ge=0,
        run_only=True,
    )
    num_cpus_per_decode_task: float = setting(
        "CPUs reserved per decoding task (read bytes, decode, resize). Decoding is light, and a value "
        "different from num_cpus_per_actor keeps Ray Data from fusing it into the extraction actors, so "
        "decoding overlaps extraction instead of queueing in front of it.",
        default=0.5,
        gt=0,
        run_only=True,
    )
    num_cpus_per_actor: float = setting(
        "CPU cores Ray reserves per extraction actor; its torch thread count is this rounded up. Leave cores for "
        "the decoding tasks: actors that reserve every CPU of the cluster starve them and the stage waits forever "
        "(the job's reservation refuses such a config, resource_wait_s). A fraction (0.5) fits an actor and a "
        "decoding task on a 1-CPU node.",
        default=1.0,
        gt=0,
        run_only=True,
    )

    def pool_sizes(self) -> tuple[int, int]:
        """The actor pool's (min, max) size."""
        pool = self.actors
        return (pool, pool) if isinstance(pool, int) else (pool.min, pool.max)

    def threads_per_actor(self) -> int:
        """An actor's torch threads: its reserved CPUs, rounded up."""
        return math.ceil(self.num_cpus_per_actor)

    def check(self) -> None:
        if isinstance(self.actors, int) and self.actors < 1:
            raise FieldError("actors", f"must be >= 1, got {self.actors}")


@dataclass
class ScoringConfig(Section):
    """The scoring stage (one task per zero-shot subset) and the group stage (one task per group)."""

    max_subset_size: int = setting(
        "At most this many images are scored together (MuSc's cost grows with the square of it; paper "
        "Table 7: subsets of 14-56 images lose at most 1.1 points of image AUROC). A group is split into "
        "as few seeded random subsets as keep each at most this size, and never below 2 images (with 2, "
        "an odd group gets one subset of 3).",
        default=200,
        ge=2,
    )
    seed: int = setting("Seed of the subset split (per group, combined with the group name).", default=0)
    num_gpus_per_task: float = setting("GPUs per subset-scoring task (0: CPU).", default=0.0, ge=0, run_only=True)
    num_cpus_per_task: int = setting("CPU cores per subset-scoring task (its torch thread count).", default=1,
                                     ge=1, run_only=True)
    max_retries: int = setting(
        "Ray retries of a scoring or group task whose worker died; the retried task rewrites the same "
        "objects, so no row is lost or duplicated.",
        default=3,
        ge=0,
        run_only=True,
    )


@dataclass
class FlaggingConfig(Section):
    """Which images of a group are flagged as anomalous for review."""

    policy: Literal["top_fraction", "robust_z", "threshold", "reference_fpr"] = setting(
        "'robust_z' (default): modified z-score of the score within its group above value (default 3.5, "
        "Iglewicz-Hoaglin), i.e. statistical outliers only; 'top_fraction': the highest-scoring fraction "
        "value of each group (a fixed review budget, default 0.05); 'threshold': score >= value (a "
        "calibrated line; value required); 'reference_fpr' (MuSc/PatchEAD with references): scores above the "
        "(1 - value) quantile of the references' own leave-one-out scores, a false-positive rate of about "
        "value on good parts (default 0.05) whatever the share of bad ones tonight.",
        default="robust_z",
    )
    value: float | None = setting("The policy's parameter (null: the policy's default).", default=None)

    def check(self) -> None:
        if self.policy == "threshold" and self.value is None:
            raise FieldError("value", "the 'threshold' policy needs a value (the score at or above which to flag)")
        if self.policy == "top_fraction" and self.value is not None and not 0 < self.value <= 1:
            raise FieldError("value", f"top_fraction must be in (0, 1], got {self.value}")
        if self.policy == "reference_fpr" and self.value is not None and not 0 <= self.value < 1:
            raise FieldError("value", f"reference_fpr is a false-positive rate in [0, 1), got {self.value}")


@dataclass
class JobConfig(Section):
    """`python jobs/musc.py`: the nightly MuSc job on Ray (inputs -> features -> subsets -> scores)."""

    inputs: InputsConfig = setting("What to score.", default_factory=InputsConfig)
    output: OutputConfig = setting("Where results go.", default_factory=OutputConfig)
    run_id: str | None = setting(
        "Name of this run ([A-Za-z0-9._-]). Re-running an existing run id resumes it: finished shards, "
        "subsets and groups are skipped. null: '<run_date>-<config hash>', so re-running the same night "
        "with the same config resumes.",
        default=None,
        run_only=True,
    )
    run_date: str | None = setting(
        "The batch's date (YYYY-MM-DD), the scores partition. null: today (UTC) for a new run, the "
        "recorded date when resuming a run id.",
        default=None,
        run_only=True,
    )
    ray_address: str | None = setting(
        "Ray cluster to use: null connects to the cluster the job was submitted to (ray job submit sets "
        "RAY_ADDRESS) or starts Ray locally; 'auto' or 'ray://host:10001' connect explicitly.",
        default=None,
        run_only=True,
    )
    lease_timeout_s: float = setting(
        "The driver working on a run holds runs/<run_id>/lease.json and renews it every quarter of this. Another "
        "driver on the same run id is refused (one line, exit 2) while the lease is younger than this, and takes "
        "it over with a warning once it is older: a killed driver blocks its run id this long at most.",
        default=600.0,
        gt=0,
        run_only=True,
    )
    resource_wait_s: float = setting(
        "How long the job waits, before it writes anything, for the Ray resources each stage asks for at once (the "
        "extraction pool's min actors and a decoding task; a scoring task; reserved briefly as a placement group, "
        "which an autoscaling cluster scales up for) before it stops in one line naming what it asked for and what the "
        "cluster has (exit 2; e.g. another night holds them). Also the longest the first stage waits for its "
        "actors to start (then the stage fails, exit 1).",
        default=600.0,
        gt=0,
        run_only=True,
    )
    storage_options: dict[str, Any] = setting(
        "Passed to fsspec for every URI (s3fs: endpoint_url, client_kwargs.region_name, ...). Leave "
        "credentials to the environment, an AWS profile or the instance role; values are never logged.",
        default_factory=dict,
        run_only=True,
    )
    detector: Literal["musc", "patchead", "vitad", "dinomaly", "sowa"] = setting(
        "Who scores: 'musc' or 'patchead' (zero-shot, images of a group scored against each other in seeded "
        "subsets; uses backbone, musc or patchead, scoring) or a trained 'vitad' / 'dinomaly' / 'sowa' from "
        "detector_checkpoint (each image on its own, O(N); backbone, musc and patchead are then unused; SOWA "
        "scores zero-shot, or few-shot with references). The outputs are the same tables either way.",
        default="musc",
    )
    detector_checkpoint: str | None = setting(
        "Checkpoint folder of the trained detector (local or s3://, as jobs/sweep.py writes under best/).",
        default=None,
        uri=True,
    )
    references: str | None = setting(
        "A prefix or glob of known-good images, grouped like the inputs (inputs.group_template, or one group "
        "per folder under the prefix); each group's first reference_images (by URI; inputs of tonight left "
        "out) are its references, and every input group needs some. MuSc and PatchEAD: reference-only "
        "members of each subset (compared with, never scored; catches a defect on a large share of tonight's "
        "parts, README 'References'). SOWA: the few-shot memory bank. null: none.",
        default=None,
        uri=True,
    )
    reference_images: int = setting(
        "Known-good images per group taken from references or reference_runs (SOWA paper: 1-4; MuSc: 10-50, "
        "README 'References').", default=4, ge=1)
    reference_runs: int = setting(
        "MuSc and PatchEAD: references kept up from earlier nights instead of a prefix: each group's "
        "lowest-scoring images (status ok, never flagged, not among tonight's inputs) of its last "
        "reference_runs successful runs under output.prefix, at most reference_images; the manifest names "
        "each image and its run. A group with no earlier run is scored without references. 0: off.",
        default=0, ge=0, hashed_if_set=True)
    verdicts: str | None = setting(
        "MuSc and PatchEAD: a prefix (local or any fsspec URI) under which a review tool writes reviewers' "
        "verdicts as Parquet or CSV files with columns uri, verdict (good | defect), reviewer, reviewed_at "
        "(docs/references.md 'Reviewers' verdicts'). Each group's references are then first its confirmed-good "
        "images of the last verdict_runs successful runs under output.prefix (never one with a defect verdict, "
        "never one with contradicting verdicts, never tonight's inputs), filled up as reference_runs says, at "
        "most reference_images; the manifest and summary report each earlier night's flag precision per group. "
        "A bad file, row or URI is a warning; a prefix that does not exist is refused. null: none.",
        default=None, uri=True, hashed_if_set=True)
    verdict_runs: int = setting(
        "With verdicts: how many of the latest successful runs under output.prefix verdicts are matched against "
        "(confirmed-good references, flag precision); a verdict for an image of none of them is warned as "
        "unknown. Bounds the scores read each night.", default=30, ge=1, hashed_if_set=True)
    backbone: BackboneConfig = setting("Feature extractor.", default_factory=BackboneConfig)
    musc: MuscConfig = setting(
        "MuSc settings (detector: musc). The job's defaults are the measured best point of the accuracy/cost "
        "frontier (docs/scoring.md): aggregation snamd, match_radius auto, rescoring rscon; the evaluation's "
        "stay the 2024 paper's (lnamd, full matching, rscin).",
        default_factory=lambda: MuscConfig(aggregation="snamd", match_radius="auto", rescoring="rscon"))
    patchead: PatchEADConfig = setting(
        "PatchEAD settings (detector: patchead): batch mode only, each subset is a batch (subsets larger than "
        "patchead.batch_size are split again); no alignment, which warps images before extraction.",
        default_factory=PatchEADConfig,
    )
    extraction: ExtractionConfig = setting("Feature-extraction stage (for a trained detector: its scoring actors).",
                                           default_factory=ExtractionConfig)
    scoring: ScoringConfig = setting("Mutual-scoring stage.", default_factory=ScoringConfig)
    flagging: FlaggingConfig = setting("Anomaly flags.", default_factory=FlaggingConfig)
    trends: TrendsConfig = setting(
        "Each group's night against its previous nights: the group_nights table's shift statistics and "
        "alerts (docs/nights.md). Changes no score or flag, so it is not part of the run's identity.",
        default_factory=TrendsConfig,
        run_only=True,
    )
    demo: SyntheticConfig = setting(
        "Demo data: when enabled and inputs.manifest does not exist, generate a synthetic dataset in the "
        "manifest's folder and write the manifest (with labels and masks, so metrics are computed).",
        default_factory=SyntheticConfig,
        run_only=True,
    )

    def scorer_settings(self) -> MuscConfig | PatchEADConfig:
        """The settings of the zero-shot scorer."""
        return self.patchead if self.detector == "patchead" else self.musc

    def check(self) -> None:
        if self.detector in ZERO_SHOT_DETECTORS:
            problem = self.scorer_settings().precomputed_features_problem()
            if problem is not None:
                raise FieldError(".".join(filter(None, (self.detector, problem[0]))), problem[1])
        elif not self.detector_checkpoint:
            raise FieldError("detector_checkpoint", f"detector '{self.detector}' needs a trained checkpoint")
        if self.references is not None and self.detector not in (*ZERO_SHOT_DETECTORS, "sowa"):
            raise FieldError("references", f"references are for detectors musc, patchead and sowa, not "
                                           f"'{self.detector}'")
        if self.reference_runs and (self.references is not None or self.detector not in ZERO_SHOT_DETECTORS):
            raise FieldError("reference_runs", "references from earlier runs are for detectors musc and patchead, "
                                               "instead of (not with) a references prefix")
        if self.verdicts is not None and (self.references is not None or self.detector not in ZERO_SHOT_DETECTORS):
            raise FieldError("verdicts", "reviewers' verdicts choose references for detectors musc and patchead, "
                                         "instead of (not with) a references prefix")
        has_references = self.references is not None or self.reference_runs > 0 or self.verdicts is not None
        if self.flagging.policy == "reference_fpr" and (not has_references or self.detector == "sowa"):
            raise FieldError("flagging.policy", "'reference_fpr' calibrates on the references' leave-one-out "
                                                "scores: it needs references and detector musc or patchead")
        if self.run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.run_id):
            raise FieldError("run_id", f"must be 1-128 characters of [A-Za-z0-9._-], got {self.run_id!r}")
        if self.run_date is not None:
            try:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.run_date):
                    raise ValueError
                datetime.date.fromisoformat(self.run_date)
            except ValueError:
                raise FieldError("run_date", f"must be a date YYYY-MM-DD (e.g. 2026-11-22), got {self.run_date!r}"
                                 ) from None
