"""The nightly job as users run it: `ray start --head`, then `ray job submit -- python jobs/musc.py`,
against the local S3 server. Also: workers killed mid-run, and a failed run resumed by its run id."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pds
import pyarrow.fs
import pytest
import s3fs
from conftest import CORRUPT_FILES

from pipeline.data.inputs import read_manifest

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
JOB_CONFIG = """
inputs:
  uris: ["{prefix}/*/test/*/*.png"]
  group_template: "{{product}}/test/{{_kind}}/{{name}}"
output: {{prefix: "{out}", heatmaps: all}}
backbone: {{family: timm_cnn, name: resnet18, random_init: true, image_size: 64, layers: [1, 2], batch_size: 8}}
extraction: {{shard_size: 5}}
scoring: {{max_subset_size: 4}}
flagging: {{policy: robust_z}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """The head's Prometheus metrics export port (``ray_cluster``)."""
    return free_port()


@pytest.fixture(scope="module")
def ray_cluster(s3_server, tmp_path_factory, metrics_port):
    """A real local Ray cluster started with the CLI; yields its job-submission (dashboard) URL.

    The head runs under ``ray start --block`` in its own process group, and only that group is
    stopped afterwards: ``ray stop`` would end every Ray instance on the machine, other users' too.
    Every port is a free one: with the job agent's default (52365) taken by another cluster on the
    machine, no job could be submitted ("No available agent to submit job"). Its metrics are served on
    ``metrics_port`` and reported every second (Ray's default: every 10 s).
    """
    import ray

    if ray.is_initialized():
        pytest.skip("an in-process Ray instance is running")
    dashboard = free_port()
    temp = tmp_path_factory.mktemp("ray")
    start = [str(RAY), "start", "--head", "--block", f"--port={free_port()}", f"--dashboard-port={dashboard}",
             "--dashboard-host=127.0.0.1", "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp}",
             f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
             f"--metrics-export-port={metrics_port}"]
    # a loopback-only test cluster: no token auth, so the CLI needs no token file from the head
    os.environ["RAY_AUTH_MODE"] = "disabled"
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(start, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**activated_environment(), "RAY_metrics_report_interval_ms": "1000"})
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_job_server(url, head, temp / "head.log")
        yield url
    finally:
        stop_process_group(head)
        log.close()
        del os.environ["RAY_AUTH_MODE"]


def activated_environment() -> dict[str, str]:
    """The environment of a shell after the README's ``source .venv/bin/activate``."""
    venv = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(venv.parent)}


def wait_for_job_server(url: str, head: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    """Until the dashboard's job API answers (the head process must still be running)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"no Ray job server at {url} after {timeout:.0f}s: {log.read_text()[-2000:]}")


def stop_process_group(process: subprocess.Popen, grace: float = 60.0) -> None:
    """SIGTERM to the head's process group (``ray start --block`` then stops what it started), then
    SIGKILL to whatever is left of that group only."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


def submit(cluster: str, workdir: Path, overrides: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir` of a copy of the project, as a user submits it."""
    cmd = [str(RAY), "job", "submit", "--address", cluster, "--working-dir", str(workdir)]
    if env:
        cmd += ["--runtime-env-json", json.dumps({"env_vars": env})]
    cmd += ["--", sys.executable, "jobs/musc.py", "--config", "job.yaml", *overrides]
    return until_accepted(cmd, timeout=600)


def until_accepted(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a ``ray job submit`` command, again while a freshly started head has no job agent yet."""
    import time

    for _ in range(30):
        done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
        if "No available agent to submit job" not in done.stdout + done.stderr:
            return done
        time.sleep(2)
    return done


@pytest.fixture
def workdir(tmp_path, s3_batch):
    """The project's code plus a job config pointing at the batch in S3."""
    work = tmp_path / "work"
    for name in ("pipeline", "jobs"):
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = s3_batch["prefix"].rsplit("/", 1)[0] + "/musc"
    (work / "job.yaml").write_text(JOB_CONFIG.format(prefix=s3_batch["prefix"], out=out))
    return work, out


def scores_rows(out: str) -> list[dict]:
    fs = pyarrow.fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], scheme="http",
                                 access_key="testing", secret_key="testing", region="us-east-1")
    return pds.dataset(out.removeprefix("s3://") + "/scores", filesystem=fs, partitioning="hive").to_table().to_pylist()


def assert_one_row_per_input(rows: list[dict], s3_batch: dict) -> None:
    assert sorted(r["uri"] for r in rows) == sorted(r.uri for r in s3_batch["records"])
    statuses = {r["uri"].rsplit("/", 1)[-1] if r["status"] == "decode_error" else r["uri"]: r["status"] for r in rows}
    assert {k for k, v in statuses.items() if v == "decode_error"} == CORRUPT_FILES
    assert sum(v == "ok" for v in statuses.values()) == 14
    assert [r["group_name"] for r in rows if r["status"] == "group_too_small"] == ["solo"]


def progress_metrics(port: int, run_id: str, expected: set[str], timeout: float = 60.0) -> dict[tuple, float]:
    """The job's progress metrics on the node's Prometheus endpoint, {(name, stage or status): value}
    summed over Ray's per-worker series of ``run_id``, once every ``expected`` name is there and two
    scrapes a report interval apart agree (Ray reports each process's metrics every interval)."""
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    deadline, last = time.monotonic() + timeout, None
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        values: dict[tuple, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("ray_musc_") and sample.labels.get("run_id") == run_id:
                    name = sample.name.removeprefix("ray_musc_").removesuffix("_total")
                    key = (name, sample.labels.get("stage") or sample.labels.get("status"))
                    values[key] = values.get(key, 0.0) + sample.value
        if expected <= {name for name, _ in values} and values == last:
            return values
        if time.monotonic() > deadline:
            raise AssertionError(f"progress metrics of {run_id} incomplete or still moving after {timeout:.0f}s: "
                                 f"{sorted(values.items())}")
        last = values
        time.sleep(2.5)


def test_ray_job_submit_scores_a_batch_in_s3(ray_cluster, workdir, s3_batch, metrics_port):
    """Also (issue 23 item 5): the run's progress metrics on the node's Prometheus endpoint equal its counts."""
    work, out = workdir
    done = submit(ray_cluster, work, ["run_id=submitted"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stdout and "18 in, 14 scored" in done.stdout

    rows = scores_rows(out)
    assert_one_row_per_input(rows, s3_batch)
    scored = [r for r in rows if r["status"] == "ok"]
    assert {r["group_name"] for r in scored} == {"weave", "disc"}  # {_kind} matched a folder but is not a group key
    # subsets are drawn from the listing (weave: 4+3+3 files, disc: 4+3), then lose their corrupt files
    assert {r["subset_size"] for r in scored} == {2, 3, 4} and {r["flag_policy"] for r in scored} == {"robust_z>3.5"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    maps = fs.glob(out.removeprefix("s3://") + "/heatmaps/**/*.png")
    assert len(maps) == 14 and sorted(f"s3://{m}" for m in maps) == sorted(r["map_uri"] for r in scored)
    manifest = json.loads(fs.cat_file(f"{out}/runs/submitted/manifest.json"))
    assert manifest["status"] == "succeeded" and manifest["metrics"] is None  # no labels from a listing
    assert manifest["counts"]["inputs"] == 18 and fs.exists(f"{out}/runs/submitted/_SUCCESS")
    assert set(manifest["timings_s"]) == {"preflight", "plan", "extraction", "extraction_actor_busy", "scoring"}
    assert manifest["object_store"]["spilled_bytes"] >= 0 and "MiB spilled to disk" in done.stdout

    metrics = progress_metrics(metrics_port, "submitted", {"images_listed", "images_scored", "images_failed",
                                                           "stage_seconds", "bytes_read", "bytes_written"})
    c = manifest["counts"]
    assert metrics[("images_listed", None)] == 18
    assert metrics[("images_extracted", "extraction")] == 18 - len(CORRUPT_FILES)
    assert metrics[("images_scored", "scoring")] == 14 == sum(r["status"] == "ok" for r in rows)
    assert {k[1]: v for k, v in metrics.items() if k[0] == "images_failed"} == {"decode_error": 3, "group_too_small": 1}
    for stage, planned in (("extraction", c["shards"]), ("scoring", c["subsets"]), ("groups", c["groups"])):
        assert metrics[("tasks_planned", stage)] == metrics[("tasks_done", stage)] == planned, stage
        assert metrics[("task_seconds_count", stage)] == planned, stage
    for stage, seconds in manifest["timings_s"].items():
        if stage != "extraction_actor_busy":
            assert metrics[("stage_seconds", stage)] == pytest.approx(seconds), stage
    images = sum(fs.size(r.uri) for r in s3_batch["records"])  # decoding reads every input once, whole
    assert metrics[("bytes_read", "decode")] == images
    assert all(metrics[("bytes_written", stage)] > 0 for stage in ("extraction", "scoring", "groups"))


def test_killed_workers_are_retried_without_lost_or_duplicated_rows(ray_cluster, workdir, s3_batch, tmp_path):
    work, out = workdir
    markers = tmp_path / "crashes"
    crash = {"MUSC_CRASH_ONCE": f"extract_shard,score_subset,finalise_group:{markers}"}
    done = submit(ray_cluster, work, ["run_id=crashing"], env=crash)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in markers.iterdir()) == ["extract_shard", "finalise_group", "score_subset"]
    assert_one_row_per_input(scores_rows(out), s3_batch)


def test_a_failed_run_fails_loudly_and_resumes_by_run_id(ray_cluster, workdir, s3_batch, tmp_path):
    work, out = workdir
    crash = {"MUSC_CRASH_ONCE": f"finalise_group:{tmp_path / 'crashes'}"}
    failed = submit(ray_cluster, work, ["run_id=resumed", "scoring.max_retries=0"], env=crash)
    assert failed.returncode != 0
    assert "FAILED" in failed.stdout and "group" in failed.stdout
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    run = f"{out}/runs/resumed"
    assert json.loads(fs.cat_file(f"{run}/manifest.json"))["status"] == "failed"
    assert not fs.exists(f"{run}/_SUCCESS")

    done = submit(ray_cluster, work, ["run_id=resumed"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = json.loads(fs.cat_file(f"{run}/manifest.json"))["counts"]
    assert counts["shards_skipped"] == counts["shards"] and counts["images_extracted"] == 0
    assert counts["subsets_skipped"] == counts["subsets"] == 5
    assert counts["groups_skipped"] == counts["groups"] - 1
    assert_one_row_per_input(scores_rows(out), s3_batch)


def readme_block(*words: str) -> str:
    """The README's one ```bash block that contains every one of ``words``, as written (found by its
    content, so the block may move within README.md)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    found = [b for b in blocks if all(w in b for w in words)]
    assert len(found) == 1, f"README.md must show one bash block with {words}"
    return found[0]


def part_rows(project: Path, run_id: str) -> list[dict]:
    """The scores rows one run wrote (its part files), read as a BI tool reads them."""
    parts = sorted(str(p) for p in (project / "outputs" / "nightly" / "scores").glob(f"*/*/part-{run_id}.parquet"))
    return pds.dataset(parts, format="parquet").to_table().to_pylist()


def test_the_readmes_local_ray_job_submit_runs_as_written(ray_cluster, tmp_path):
    """Issue 14: the entrypoint's `python` was not the project's, and local outputs landed in Ray's copy of
    the working directory. Issue 22 item 1: after the quick start, the README's local ray job submit scored
    nothing (exit 1, 0 rows): the demo manifest listed paths relative to the project, which Ray's copy of
    the working directory lacks. So the blocks run in the README's order in a fresh copy of the project:
    the quick start's job half (infra/install.sh builds the virtual environment this test already runs
    in: minutes and the network), then the cluster block's lines as written, but for `ray start --head`
    (the test's cluster is started that way, on free ports) and `ray stop` (which would end every Ray
    instance on the machine): RAY_ADDRESS points the submit at the test's cluster."""
    project = tmp_path / "project"
    for name in ("pipeline", "jobs", "conf"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".venv").symlink_to(Path(sys.executable).parent.parent)
    quick_start = readme_block("jobs/musc.py --config conf/local.yaml", "infra/install.sh").strip()
    install, job = quick_start.split(" && ")
    assert install == "bash infra/install.sh", quick_start
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(["bash", "-c", job], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    inputs = sorted(str(project / r.uri) for r in read_manifest(str(project / "demo_data/nightly/manifest.csv")))
    assert len(inputs) == 64

    block = readme_block("ray start --head", "ray job submit")
    lines = [ln for ln in block.splitlines() if not re.match(r"ray (start|stop)\b", ln)]
    assert len(lines) == len(block.splitlines()) - 2 and lines[0].startswith("source .venv/bin/activate")
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    done = until_accepted(["bash", "-c", "\n".join(lines)], cwd=project, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stdout and "64 in, 64 scored" in done.stdout
    runs = sorted(p.parent.name for p in (project / "outputs" / "nightly" / "runs").glob("*/_SUCCESS"))
    assert len(runs) == 2  # where the user is: the quick start's run and the cluster's (another manifest path)
    for run_id in runs:
        assert sorted(os.path.abspath(project / r["uri"]) for r in part_rows(project, run_id)) == inputs

    submit_line = next(ln for ln in lines if ln.startswith("ray job submit"))
    relative = submit_line.split(" output.prefix=")[0]  # the same without the absolute paths
    refused = until_accepted(["bash", "-c", f"{lines[0]}\n{relative}"], cwd=project, env=env, timeout=300)
    assert refused.returncode != 0
    assert "error: output.prefix outputs/nightly is relative: under ray job submit --working-dir" in refused.stdout
    assert "output.prefix=$PWD/outputs/nightly" in refused.stdout


def test_an_interpreter_without_the_projects_packages_is_one_line(tmp_path):
    """`python` from the PATH of a shell that started the head outside the venv (-S: no site-packages)."""
    done = subprocess.run([sys.executable, "-S", str(REPO / "jobs" / "musc.py"), "--config", "conf/local.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "has no module" in err[0] and "source .venv/bin/activate" in err[0], err
