"""Generated demo data on first use: the one bootstrap shared by the job, the evaluation and sweeps."""

from __future__ import annotations

import sys
from pathlib import Path

from ..settings import SyntheticConfig
from .inputs import InputRecord, normalise_uri
from .synthetic import DEFAULT_CATEGORIES, dataset_files, encode_png, generate_dataset, render_file


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


def planned_records(root: str, cfg: SyntheticConfig) -> list[InputRecord]:
    """The job inputs ``cfg``'s test split would give once generated into ``root`` (one group per
    category, labels and masks), named without generating anything: what a dry run plans."""
    files = dataset_files(cfg.categories or DEFAULT_CATEGORIES, cfg.n_train, cfg.n_test_good, cfg.n_test_defect)
    records = [InputRecord(uri=normalise_uri(f"{root}/{f.image}"), group=f.category, label=int(f.defect is not None),
                           mask_uri=f.mask and normalise_uri(f"{root}/{f.mask}")) for f in files if f.split == "test"]
    return sorted(records, key=lambda r: r.uri)


def sample_image_bytes(cfg: SyntheticConfig) -> dict[str, float]:
    """Per category, the PNG size of its first test image, rendered in memory: what a dry run, which
    generates nothing, prices the demo's input bytes at."""
    first: dict[str, float] = {}
    for f in dataset_files(cfg.categories or DEFAULT_CATEGORIES, 0, cfg.n_test_good, cfg.n_test_defect):
        if f.category not in first:
            first[f.category] = float(len(encode_png(render_file(f, cfg.image_size, cfg.seed)[0])))
    return first
