"""The one error contract of every program (job, evaluation, sweep).

A ``UserError`` is a mistake the user can fix (a config key, a missing bucket, weights, a dataset):
its message is one line naming the fix, the program prints it and exits with 2 before any work.
Exit 1 is left for a stage that failed beyond its retries; anything else is a bug and keeps its
traceback. Each layer's error type (``ConfigError``, ``StorageError``, ``WeightsError``, ...)
derives from it, so the programs catch one type. What is printed or stored never carries the
``user:secret@`` part of a URI (``without_credentials``).
"""

from __future__ import annotations

import logging
import re

EXIT_USER_ERROR = 2
REDACTED = "<redacted>"
_URI_USER = re.compile(r"(?<=://)[^/\s]*@")  # scheme://user:secret@host, up to the last @ of the authority


def without_credentials(text: str) -> str:
    """``text`` with the ``user:secret@`` part of every URI in it redacted."""
    return _URI_USER.sub(f"{REDACTED}@", text)


class CredentialsFilter(logging.Filter):
    """Log records without the ``user:secret@`` part of a URI: warnings name inputs, references and
    verdicts by their URI, and job logs are read by more people than the config."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = without_credentials(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class UserError(Exception):
    """A problem with the user's config or inputs; the message is one line that names the fix."""
