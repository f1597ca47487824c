"""What a sweep checks before Tune starts: one line naming the fix instead of a traceback or a hang.

Storage locations reachable, the datasets present (or generated), the encoder's weights found, and
trial resources the cluster can supply: a trial asking for a GPU on a cluster without one would
otherwise stay PENDING forever.
"""

from __future__ import annotations

from pathlib import Path

from ..data.benchmarks import list_categories
from ..engine.weights import WeightsError, check_weights_setting
from ..settings import DatasetConfig, SweepConfig, SyntheticConfig
from ..storage import check_bucket, exists


class SweepError(RuntimeError):
    """The sweep cannot start as configured; the message is one line that names the fix."""


def _dataset(role: str, dataset: DatasetConfig, synthetic: SyntheticConfig) -> None:
    """The dataset must be there (in its layout) unless it is to be generated."""
    if synthetic.enabled and not Path(dataset.root).exists():
        return
    generate = "synthetic" if role == "dataset" else f"{role}_synthetic"
    if not Path(dataset.root).is_dir():
        raise SweepError(f"{role}.root {dataset.root}: no such folder; set {role}.root=/path/to/the/dataset "
                         f"({dataset.layout} layout), or enable {generate} to generate one")
    try:
        list_categories(dataset.root, dataset.layout, split_csv=dataset.split_csv)
    except (FileNotFoundError, ValueError) as err:
        raise SweepError(f"{role}.root: {err}") from None


def check_sweep(cfg: SweepConfig) -> None:
    """Storage, data and weights; raises SweepError, StorageError or WeightsError in one line."""
    for uri, role in ((cfg.storage_path, "storage_path"), (cfg.output_prefix, "output_prefix")):
        check_bucket(uri, cfg.storage_options, role)
    _dataset("dataset", cfg.dataset, cfg.synthetic)
    if cfg.detector.kind == "sowa":
        _dataset("auxiliary", cfg.auxiliary, cfg.auxiliary_synthetic)
    encoder = cfg.detector.chosen().encoder
    key = f"detector.{cfg.detector.kind}.{'clip' if cfg.detector.kind == 'sowa' else 'encoder'}.weights"
    try:
        check_weights_setting(encoder)
    except WeightsError as err:
        raise WeightsError(f"{key}: {err}") from None
    if encoder.weights is not None:
        check_bucket(encoder.weights, cfg.storage_options, key)
        if not exists(encoder.weights, cfg.storage_options):
            raise WeightsError(f"{key} {encoder.weights}: no such file or object")


def check_trial_resources(cfg: SweepConfig, cluster: dict[str, float]) -> None:
    """A trial must fit on the cluster Ray is connected to."""
    for name, asked, key in (("CPU", cfg.trial_cpus, "trial_cpus"), ("GPU", cfg.trial_gpus, "trial_gpus")):
        have = cluster.get(name, 0.0)
        if asked > have:
            raise SweepError(f"{key}: each trial asks for {asked:g} {name}, the Ray cluster has {have:g}; "
                             f"set {key}={have:g} or run on a cluster with {name}s")
