"""One driver per run id: a lease object (``runs/<run_id>/lease.json``) that the working driver holds.

Two drivers started on one run id both worked: the second found the first's feature shards deleted and
overwrote the finished run's manifest and report with a failed one. Now a driver takes the run's lease
before it writes anything of the run. The lease is created only where none exists (``create_bytes``:
a hard link locally, a conditional PUT with If-None-Match on S3), so of two drivers starting together
one gets it and the other is refused in one line. The holder renews it every quarter of
``lease_timeout_s``; a lease not renewed for that long belonged to a driver that was killed, and the
next driver takes it over with a warning, so a killed driver blocks its run id no longer than that.

What remains: taking over a stale lease is a plain overwrite checked by reading it back, so two
drivers that take over the same stale lease at the same moment can both start; the one whose renewal
then finds the other's owner in the lease stops before it writes the run's records (until then both
rewrite the same objects whole, which loses nothing). Heartbeats are wall-clock times: drivers on
different machines need clocks that agree to well within ``lease_timeout_s``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from ..storage import create_bytes, read_bytes, remove, write_bytes
from .preflight import JobError

log = logging.getLogger(__name__)


class RunLease:
    """The lease of one run id, held by this driver between ``acquire`` and ``release``."""

    def __init__(self, uri: str, run_id: str, timeout_s: float, storage_options: dict[str, Any] | None = None):
        self.uri, self.run_id, self.timeout_s, self.storage_options = uri, run_id, timeout_s, storage_options
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost: str | None = None  # see lost_reason
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "renewed_at": now, "timeout_s": self.timeout_s,
                           "renewed_at_utc": datetime.fromtimestamp(now, timezone.utc).isoformat()}).encode()

    def holder(self) -> dict[str, Any] | None:
        """The lease as stored, or None when there is none (a lease is written whole, never torn)."""
        try:
            return json.loads(read_bytes(self.uri, self.storage_options))
        except FileNotFoundError:
            return None

    def refuse_if_held(self) -> None:
        """Refuse in one line, writing nothing, while another driver's lease is fresh."""
        held = self.holder()
        if held is None or held["owner"] == self.owner:
            return
        age = time.time() - held["renewed_at"]
        if age < self.timeout_s:
            raise JobError(f"run_id {self.run_id} is being worked on by another driver ({held['owner']}; its lease "
                           f"{self.uri} was renewed {age:.0f}s ago): wait for it to finish, or if it was killed, "
                           f"run again after {self.timeout_s - age:.0f}s (lease_timeout_s {self.timeout_s:g})")

    def acquire(self) -> None:
        """Take the lease (creating it, or taking over a stale one with a warning) and start renewing it."""
        if not create_bytes(self.uri, self._body(), self.storage_options):
            self.refuse_if_held()
            held = self.holder()
            if held is not None:
                log.warning("run_id %s: taking over the lease of driver %s, not renewed for %.0fs (lease_timeout_s "
                            "%g): that driver was killed or lost", self.run_id, held["owner"],
                            time.time() - held["renewed_at"], self.timeout_s)
            write_bytes(self.uri, self._body(), self.storage_options)
            self.refuse_if_held()  # another driver took it over at the same moment and wrote after us
        self._renewer = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            try:
                if self.lost_reason() is not None:
                    return
                write_bytes(self.uri, self._body(), self.storage_options)
            except Exception as err:  # noqa: BLE001 - storage trouble: the next renewal tries again
                log.warning("run_id %s: lease %s not renewed (%s: %s); trying again in %gs", self.run_id, self.uri,
                            type(err).__name__, err, self.timeout_s / 4)

    def lost_reason(self) -> str | None:
        """Why this driver no longer holds the lease (another driver took it over), or None."""
        if self.lost is None:
            held = self.holder()
            if held is None or held["owner"] != self.owner:
                self.lost = (f"another driver ({held['owner'] if held else 'none'}) holds the lease {self.uri} of "
                             "this run now; this driver's results are not recorded")
        return self.lost

    def release(self) -> None:
        """Stop renewing; delete the lease if it is still this driver's."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        held = self.holder()
        if held is not None and held["owner"] == self.owner:
            remove(self.uri, self.storage_options)
