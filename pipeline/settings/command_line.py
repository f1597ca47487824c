"""The one command line of every program: ``--config FILE [key.path=value ...]``, and its one
error contract (``pipeline.errors``): a user's mistake is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from ..errors import EXIT_USER_ERROR, UserError, without_credentials
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


def run_program(cls: type[C], description: str, program: Callable[[C], int], argv: list[str] | None = None) -> int:
    """Parse the command line into ``cls`` and run ``program`` on it; a ``UserError`` from either is
    printed as ``error: <one line>`` (URIs without their ``user:secret@``) and exits 2. ``program``
    returns 0 (done) or 1 (a stage failed)."""
    try:
        return program(config_from_command_line(cls, description, argv))
    except UserError as err:
        print(f"error: {without_credentials(str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
