"""The one command line of every program: ``--config FILE [key.path=value ...]``."""

from __future__ import annotations

import argparse
import logging
from typing import TypeVar

from .schema import load_config

C = TypeVar("C")


def config_from_command_line(cls: type[C], description: str, argv: list[str] | None = None) -> C:
    """``--config FILE [key.path=value ...]`` parsed into ``cls``; also sets up warning-level logging."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config (every key: python -m pipeline.settings)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. run_date=2026-11-22")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return load_config(args.config, cls, args.overrides)
