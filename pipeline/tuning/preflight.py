"""What a sweep checks before Tune starts: one line naming the fix instead of a traceback or a hang.

Storage locations reachable, the datasets present (or generated), the encoder's weights found, and
trial resources the cluster can supply: a trial asking for a GPU on a cluster without one would
otherwise stay PENDING forever.
"""

from __future__ import annotations

from ..data.benchmarks import check_dataset
from ..engine.stages import check_backbone
from ..engine.weights import WeightsError, check_weights
from ..errors import UserError
from ..settings import SweepConfig
from ..storage import check_bucket, check_outlives_working_dir


class SweepError(UserError, RuntimeError):
    """The sweep cannot start as configured; the message is one line that names the fix."""


def check_sweep(cfg: SweepConfig) -> None:
    """Storage, data, weights and the encoder's layers; raises a one-line UserError."""
    written = [("storage_path", cfg.storage_path), ("output_prefix", cfg.output_prefix)]
    check_outlives_working_dir(written)
    for role, uri in written:
        check_bucket(uri, cfg.storage_options, role)
    check_dataset(cfg.dataset, cfg.synthetic)
    if cfg.detector.kind == "sowa":
        check_dataset(cfg.auxiliary, cfg.auxiliary_synthetic, "auxiliary")
    encoder = cfg.detector.chosen().encoder
    section = f"detector.{cfg.detector.kind}.{'clip' if cfg.detector.kind == 'sowa' else 'encoder'}"
    key = f"{section}.weights"
    try:
        check_weights(encoder, key, cfg.storage_options)
    except WeightsError as err:
        raise WeightsError(err if str(err).startswith(key) else f"{key}: {err}") from None
    check_backbone(encoder, section)


def check_trial_resources(cfg: SweepConfig, cluster: dict[str, float]) -> None:
    """A trial must fit on the cluster Ray is connected to."""
    for name, asked, key in (("CPU", cfg.trial_cpus, "trial_cpus"), ("GPU", cfg.trial_gpus, "trial_gpus")):
        have = cluster.get(name, 0.0)
        if asked > have:
            raise SweepError(f"{key}: each trial asks for {asked:g} {name}, the Ray cluster has {have:g}; "
                             f"set {key}={have:g} or run on a cluster with {name}s")
