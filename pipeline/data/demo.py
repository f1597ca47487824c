"""Generated demo data on first use: the one bootstrap shared by the job, the evaluation and sweeps."""

from __future__ import annotations

import sys
from pathlib import Path

from ..settings import SyntheticConfig
from .synthetic import generate_dataset


def ensure_dataset(root: str, cfg: SyntheticConfig, overwrite: bool = False) -> bool:
    """Generate ``cfg``'s synthetic dataset into ``root`` when enabled and ``root`` does not exist yet
    (or always, with ``overwrite``); True when it generated."""
    if not cfg.enabled or (Path(root).exists() and not overwrite):
        return False
    print(f"generating synthetic dataset in {root}", file=sys.stderr)
    kwargs = {"categories": cfg.categories} if cfg.categories else {}
    generate_dataset(root, n_train=cfg.n_train, n_test_good=cfg.n_test_good, n_test_defect=cfg.n_test_defect,
                     image_size=cfg.image_size, seed=cfg.seed, overwrite=overwrite, brightness=cfg.brightness, **kwargs)
    return True
