"""One driver per run id (issue 22 item 4): the run's lease, locally and on the local S3 server.

A second driver on a finished night overwrote its manifest and report with a failed run; two drivers
started together both worked. The lease is exercised here in-process, drivers as threads; the job
itself refusing a held run id is in tests/test_nightly.py."""

import json
import logging
import threading
import time

import pytest

from pipeline.job.lease import RunLease
from pipeline.job.preflight import JobError


@pytest.fixture(params=["local", "s3"])
def lease_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "runs" / "night" / "lease.json")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/runs/night/lease.json"


def test_of_drivers_started_together_exactly_one_works(lease_uri):
    drivers = [RunLease(lease_uri, "night", 60.0) for _ in range(6)]
    start = threading.Barrier(len(drivers))
    outcome: dict[int, str] = {}

    def drive(i: int) -> None:
        start.wait()
        try:
            drivers[i].acquire()
            outcome[i] = "works"
        except JobError as err:
            outcome[i] = str(err)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(drivers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    working = [i for i, o in outcome.items() if o == "works"]
    assert len(working) == 1, outcome
    holder = drivers[working[0]]
    refusals = [o for o in outcome.values() if o != "works"]
    assert all(o.startswith(f"run_id night is being worked on by another driver ({holder.owner}") for o in refusals)
    assert holder.holder()["owner"] == holder.owner and holder.lost_reason() is None

    holder.release()  # finished: the next driver gets the run id at once
    assert holder.holder() is None
    follower = drivers[(working[0] + 1) % len(drivers)]
    follower.acquire()
    follower.release()


def test_a_killed_drivers_lease_is_renewed_until_then_taken_over_with_a_warning(tmp_path, caplog):
    uri = str(tmp_path / "lease.json")
    first = RunLease(uri, "night", 0.4)  # renewed every 0.1 s
    first.acquire()
    time.sleep(0.6)  # longer than the timeout: only renewal keeps it fresh
    with pytest.raises(JobError, match="being worked on by another driver"):
        RunLease(uri, "night", 0.4).acquire()

    first._stop.set()  # killed: no more renewals (its thread ends, the lease object stays)
    first._renewer.join()
    time.sleep(0.5)
    second = RunLease(uri, "night", 0.4)
    with caplog.at_level(logging.WARNING, logger="pipeline.job.lease"):
        second.acquire()
    assert f"taking over the lease of driver {first.owner}, not renewed for" in caplog.text
    assert json.loads((tmp_path / "lease.json").read_text())["owner"] == second.owner
    assert first.lost_reason().startswith(f"another driver ({second.owner}) holds the lease")
    first.release()  # the killed driver's release leaves the new holder's lease alone
    assert second.holder()["owner"] == second.owner
    second.release()
    assert not (tmp_path / "lease.json").exists()
