"""Ray Tune sweeps of the trained detectors, with results and the best model on object storage.

    python jobs/sweep.py --config conf/sweep_vitad.yaml [key.path=value ...]

Each trial trains one detector config (the base config with the sampled keys replaced: ViTAD and
Dinomaly on the dataset's normal train images, SOWA on the auxiliary dataset's labelled test split)
and reports the engine's validation metrics on the dataset's test split ``evaluations`` times; ASHA stops trials that trail at a rung. Tune
keeps its state under ``storage_path``/``name`` (S3 works), so running the same command again after
a crash restores the sweep: finished trials are kept and unfinished or errored ones run again from
the start under a new trial id (a trial's checkpoint holds its weights, not its optimiser state,
so it is not resumed mid-way). At the end the sweep writes ``trials.parquet`` (config columns, metrics, timings, whether
ASHA stopped it) and ``best/`` (checkpoint and config of the best trial) to ``output_prefix``/``name``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from ..data.benchmarks import list_categories
from ..data.demo import ensure_dataset
from ..data.images import load_images
from ..detectors.checkpoint import META_NAME, WEIGHTS_NAME, save_checkpoint
from ..detectors.registry import build_detector
from ..detectors.training import (
    LabelledSplit,
    load_references,
    load_split,
    train_detector,
)
from ..job.faults import crash_point
from ..settings import (
    DatasetConfig,
    DetectorConfig,
    SweepConfig,
    SyntheticConfig,
    run_program,
    config_to_dict,
    with_values,
)
from ..storage import is_remote, join_uri, write_bytes, write_parquet
from .preflight import SweepError, check_sweep, check_trial_resources
from .pseudo_labels import most_normal_uris


def search_space(cfg: SweepConfig) -> dict[str, Any]:
    """The config's search space as Ray Tune sampling objects."""
    from ray import tune

    make = {
        "loguniform": lambda s: tune.loguniform(s["low"], s["high"]),
        "uniform": lambda s: tune.uniform(s["low"], s["high"]),
        "randint": lambda s: tune.randint(int(s["low"]), int(s["high"])),
        "choice": lambda s: tune.choice(s["values"]),
    }
    return {key: make[spec["type"]](spec) for key, spec in cfg.search_space.items()}


def trial_config(base: DetectorConfig, params: dict[str, Any], evaluations: int) -> DetectorConfig:
    """The base detector config with a trial's sampled values (validated like any config), evaluated
    ``evaluations`` times over its iterations."""
    cfg = with_values(base, params)
    cfg.training.eval_every = max(1, cfg.training.iterations // evaluations)
    return cfg


def run_trial(params: dict[str, Any], base: DetectorConfig, train: LabelledSplit, validation: LabelledSplit,
              evaluations: int, references: dict[str, np.ndarray] | None = None) -> None:
    """One Tune trial: train, and report metrics with a checkpoint at every evaluation."""
    from ray import tune

    cfg = trial_config(base, params, evaluations)
    detector = build_detector(cfg)
    crash_point("sweep_trial")

    def report(entry: dict) -> None:
        if "mad" not in entry:
            return
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(detector, cfg, folder, metrics=entry)
            tune.report(entry, checkpoint=tune.Checkpoint.from_directory(folder))

    references = references if cfg.kind == "sowa" and cfg.sowa.reference_images else None
    train_detector(detector, train, cfg, validation=validation, report=report, references=references)


def _storage_filesystem(storage_path: str):
    """pyarrow's S3 client for the Tune storage, pointed at AWS_ENDPOINT_URL when one is set."""
    if not storage_path.startswith("s3://") or not os.environ.get("AWS_ENDPOINT_URL"):
        return None
    import pyarrow.fs

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    scheme, _, host = endpoint.partition("://")
    return pyarrow.fs.S3FileSystem(endpoint_override=host, scheme=scheme,
                                   region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def _categories(dataset: DatasetConfig, synthetic: SyntheticConfig) -> list[str]:
    """The dataset's categories, generating it first when synthetic data is asked for and missing."""
    ensure_dataset(dataset.root, synthetic)
    return dataset.categories or list_categories(dataset.root, dataset.layout)


def _prepare_data(cfg: SweepConfig) -> tuple[LabelledSplit, LabelledSplit, dict[str, np.ndarray] | None]:
    """(training set, validation split, few-shot references or None) for the configured detector."""
    categories = _categories(cfg.dataset, cfg.synthetic)
    size, resize = cfg.detector.input_geometry()
    validation = load_split(cfg.dataset.root, cfg.dataset.layout, categories, "test", size, resize)
    if cfg.detector.kind == "sowa":
        aux = cfg.auxiliary
        train = load_split(aux.root, aux.layout, _categories(aux, cfg.auxiliary_synthetic), "test", size, resize)
        shots = cfg.detector.sowa.reference_images
        references = (load_references(cfg.dataset.root, cfg.dataset.layout, categories, shots, size, resize)
                      if shots else None)
        return train, validation, references
    pseudo = cfg.pseudo_labels
    if pseudo.scores_prefix is not None:
        chosen = most_normal_uris(pseudo.scores_prefix, pseudo.run_id, pseudo.normal_fraction, cfg.storage_options)
        uris = [u for group in chosen.values() for u in group]
        print(f"training on {len(uris)} pseudo-normal images of run {pseudo.run_id}", file=sys.stderr)
        return LabelledSplit.of_normals(load_images(uris, size, resize, cfg.storage_options)), validation, None
    train = load_split(cfg.dataset.root, cfg.dataset.layout, categories, "train", size, resize, normal_only=True)
    return train, validation, None


def trials_table(results, cfg: SweepConfig) -> pa.Table:
    """One row per trial: sampled config, last and best metric, timings, status, stopped early."""
    full = cfg.evaluations
    rows = []
    for result in results:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        best = None
        if history is not None and cfg.metric in history:
            best = float(history[cfg.metric].max() if cfg.mode == "max" else history[cfg.metric].min())
        row = {"trial_id": Path(result.path).name,  # the trial's folder: stable across restores
               **{f"config.{k}": v for k, v in (result.config or {}).items()},
               "status": "ERROR" if result.error else "TERMINATED",
               "evaluations": int(metrics.get("training_iteration", 0)),
               "stopped_early": bool(not result.error and metrics.get("training_iteration", 0) < full),
               "iterations": int(metrics.get("iteration", 0)), f"best_{cfg.metric}": best,
               "time_total_s": float(metrics.get("time_total_s", 0.0)),
               "error": str(result.error).splitlines()[0][:300] if result.error else None}
        row.update({k: float(v) for k, v in metrics.items()
                    if k in ("loss", "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
                             "pixel_f1_max", "au_pro", "mad")})
        rows.append(row)
    return pa.Table.from_pylist(rows)


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Run or resume the sweep; write the trials table and the best checkpoint. Returns a summary."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    start = time.perf_counter()
    check_sweep(cfg)
    if not ray.is_initialized():
        ray.init()
    check_trial_resources(cfg, ray.cluster_resources())
    try:
        train, validation, references = _prepare_data(cfg)
    except (FileNotFoundError, ValueError) as err:  # the readers name the folder and what they expected
        raise SweepError(f"sweep data: {err}") from None
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=cfg.detector, train=train, validation=validation,
                             evaluations=cfg.evaluations, references=references),
        {"cpu": cfg.trial_cpus, "gpu": cfg.trial_gpus})
    filesystem = _storage_filesystem(cfg.storage_path)
    # with an explicit pyarrow filesystem, Tune wants paths without the scheme ("bucket/key"); a local
    # folder must be absolute (Tune reads a relative one as a URI without a scheme)
    storage_path = (cfg.storage_path.removeprefix("s3://") if filesystem is not None
                    else cfg.storage_path if is_remote(cfg.storage_path) else str(Path(cfg.storage_path).resolve()))
    experiment = join_uri(storage_path, cfg.name)
    restored = tune.Tuner.can_restore(experiment, storage_filesystem=filesystem)
    if restored:
        print(f"resuming sweep {experiment}", file=sys.stderr)
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, restart_errored=True,
                                   storage_filesystem=filesystem)
    else:
        scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=cfg.evaluations,
                                   grace_period=cfg.scheduler.grace_period,
                                   reduction_factor=cfg.scheduler.reduction_factor)
                     if cfg.scheduler.kind == "asha" else FIFOScheduler())
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(cfg),
            tune_config=tune.TuneConfig(metric=cfg.metric, mode=cfg.mode, num_samples=cfg.num_samples,
                                        scheduler=scheduler,
                                        search_alg=tune.search.BasicVariantGenerator(
                                            random_state=cfg.seed, max_concurrent=cfg.max_concurrent)),
            run_config=tune.RunConfig(
                name=cfg.name, storage_path=storage_path, storage_filesystem=filesystem,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=cfg.metric,
                                                        checkpoint_score_order=cfg.mode),
                verbose=1),
        )
    results = tuner.fit()
    out = join_uri(cfg.output_prefix, cfg.name)
    table = trials_table(results, cfg)
    write_parquet(join_uri(out, "trials.parquet"), table, cfg.storage_options)
    best = results.get_best_result(metric=cfg.metric, mode=cfg.mode, scope="all")
    checkpoint = best.get_best_checkpoint(cfg.metric, cfg.mode)
    with checkpoint.as_directory() as folder:
        for name in (WEIGHTS_NAME, META_NAME):
            write_bytes(join_uri(out, "best", name), (Path(folder) / name).read_bytes(), cfg.storage_options)
    best_cfg = trial_config(cfg.detector, best.config, cfg.evaluations)
    write_bytes(join_uri(out, "best", "detector.yaml"), yaml.safe_dump(config_to_dict(best_cfg)).encode(),
                cfg.storage_options)
    summary = {"experiment": join_uri(cfg.storage_path, cfg.name), "resumed": restored, "trials": table.num_rows,
               "errored": sum(1 for r in results if r.error),
               "stopped_early": int(sum(table.column("stopped_early").to_pylist())),
               "best_config": best.config, f"best_{cfg.metric}": best.metrics_dataframe[cfg.metric].agg(cfg.mode),
               "outputs": out, "seconds": time.perf_counter() - start}
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line: 0 when every trial finished, 1 when some errored, 2 for a bad config."""
    def program(cfg: SweepConfig) -> int:
        summary = run_sweep(cfg)
        print(json.dumps(summary, indent=2, default=str))
        return 1 if summary["errored"] else 0

    return run_program(SweepConfig, "Ray Tune sweep of a trained anomaly detector", program, argv)
