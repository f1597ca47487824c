"""The one command line of every program: ``--config FILE [key.path=value ...]``, and its one
error contract (``pipeline.errors``): a user's mistake is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import EXIT_USER_ERROR, CredentialsFilter, UserError, without_credentials
from .schema import load_config

C = TypeVar("C")


def config_from_command_line(cls: type[C], description: str, argv: list[str] | None = None,
                             options: Callable[[argparse.ArgumentParser], None] | None = None
                             ) -> tuple[C, dict[str, Any]]:
    """``--config FILE [key.path=value ...]`` parsed into ``cls``, and the values of the program's own
    ``options`` (flags it adds to the parser) by name; also sets up warning-level logging, whose
    records never carry a URI's ``user:secret@``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config (every key: python -m pipeline.settings)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. run_date=2026-11-22")
    if options is not None:
        options(parser)
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # every record the program's loggers pass up
        if not any(isinstance(f, CredentialsFilter) for f in handler.filters):
            handler.addFilter(CredentialsFilter())
    config, overrides = args.pop("config"), args.pop("overrides")
    return load_config(config, cls, overrides), args


def run_program(cls: type[C], description: str, program: Callable[..., int], argv: list[str] | None = None,
                options: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Parse the command line into ``cls`` and run ``program(config, **flags)`` on it (``flags``: the
    values of ``options``); a ``UserError`` from either is printed as ``error: <one line>`` (URIs
    without their ``user:secret@``) and exits 2. ``program`` returns 0 (done) or 1 (a stage failed)."""
    try:
        config, flags = config_from_command_line(cls, description, argv, options)
        return program(config, **flags)
    except UserError as err:
        print(f"error: {without_credentials(str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
