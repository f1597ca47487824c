"""The nightly job on a multi-node Ray cluster on one machine (Ray's ``cluster_utils.Cluster``): a head
with no CPUs for work, as on a real cluster, and worker nodes of 1 CPU and 1 logical GPU each. The
job's driver joins it with ``ray_address`` (it starts no Ray of its own). Work runs on both workers; a
worker node lost mid-extraction or mid-scoring costs no row; a node that joins mid-night gets actors,
two of which share one node's GPU as fractions while the work runs on the CPU (there is no CUDA here).

Moments are chosen on observable progress, not on sleeps: the workers' environment holds
``MUSC_HOLD`` (``pipeline/job/faults.py``), so while ``<holds>/<point>.release`` is absent every shard
or subset that reaches the point waits there and says on which node. The tests remove that node, or
add one, then release.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pds
import pytest
from test_nightly_cluster import free_port

REPO = Path(__file__).resolve().parents[1]
POINTS = ("extract_shard", "score_subset")
JOB_CONFIG = """
inputs: {{uris: ["{images}/*/test/*/*.png"], group_template: "{{product}}/test/{{_kind}}/{{name}}"}}
output: {{prefix: "{out}", heatmaps: none}}
backbone: {{family: timm_cnn, name: resnet18, random_init: true, image_size: 64, layers: [1, 2], batch_size: 8}}
extraction: {{shard_size: 2, actors: 2, num_cpus_per_actor: 0.5, num_cpus_per_decode_task: 0.5}}
scoring: {{max_subset_size: 4}}
resource_wait_s: 120
"""
EXTRACTOR = "MapWorker(MapBatches(ShardFeatureExtractor))"  # Ray Data's actor class for the extraction pool
WAIT_S = 240.0  # generous: five engineers share two cores


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (0 CPUs, dashboard for the state API) and one worker of 1 CPU + 1 logical GPU; yields
    (cluster, holds folder). Its own RAY_TMPDIR keeps it out of /tmp/ray/ray_current_cluster, where a
    plain ray.init() of another test on the machine would find and join it."""
    from ray.cluster_utils import Cluster

    base = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Unix socket paths are limited to 107 bytes
    temp = f"{base}/ray"  # where Ray looks for RAY_TMPDIR's address file
    holds = tmp_path_factory.mktemp("holds")
    for point in POINTS:
        (holds / f"{point}.release").touch()
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "MUSC_HOLD")}
    os.environ.update(RAY_TMPDIR=base, MUSC_HOLD=f"{','.join(POINTS)}:{holds}")  # raylets and workers inherit
    nodes = None
    try:
        nodes = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "gcs_server_port": free_port(), "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port(), "temp_dir": temp,
            "_system_config": {"health_check_period_ms": 1000}})  # a lost node noticed in ~5 s, not ~15 s
        add_worker(nodes)  # the first test adds the second
        yield nodes, holds
    finally:
        if nodes is not None:
            nodes.shutdown()
        shutil.rmtree(base, ignore_errors=True)  # the nodes' sessions and logs
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def add_worker(nodes):
    return nodes.add_node(num_cpus=1, num_gpus=1, dashboard_agent_listen_port=free_port())


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two products of 7 images: 2 subsets each at max_subset_size 4, 8 shards of at most 2 images."""
    from pipeline.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("images")
    generate_dataset(str(root), categories=["weave", "disc"], n_train=0, n_test_good=4, n_test_defect=3,
                     image_size=64)
    return root


def start_job(tmp_path, images, cluster_address, *overrides) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "out"
    (tmp_path / "job.yaml").write_text(JOB_CONFIG.format(images=images, out=out))
    log = (tmp_path / "job.log").open("w")
    cmd = [sys.executable, str(REPO / "jobs" / "musc.py"), "--config", str(tmp_path / "job.yaml"),
           f"ray_address={cluster_address}", "run_id=night", *overrides]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path), out


def finish(job: subprocess.Popen, tmp_path: Path) -> str:
    try:
        job.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        job.kill()
        job.wait()
    text = (tmp_path / "job.log").read_text()
    assert job.returncode == 0, text[-4000:]
    return text


def held(holds: Path, point: str, count: int = 1, job: subprocess.Popen | None = None) -> list[str]:
    """Node ids of the processes held at ``point``, once at least ``count`` processes are held there."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        markers = [p.name.split(".")[1] for p in holds.glob(f"{point}.*.*")]
        if len(markers) >= count:
            return markers
        assert job is None or job.poll() is None, f"the job ended before {count} processes reached {point}"
        time.sleep(0.2)
    raise AssertionError(f"after {WAIT_S:.0f}s, {len(markers)} of {count} processes reached {point}: {markers}")


def hold(holds: Path, point: str) -> None:
    (holds / f"{point}.release").unlink()
    for marker in holds.glob(f"{point}.*.*"):
        marker.unlink()


def release(holds: Path, point: str) -> None:
    (holds / f"{point}.release").touch()


def check_night(out: Path, images: Path) -> dict:
    """One row per input, each once; _SUCCESS after the manifest; the manifest."""
    rows = pds.dataset(str(out / "scores"), format="parquet", partitioning="hive").to_table().to_pylist()
    inputs = sorted(str(p) for p in images.glob("*/test/*/*.png"))
    assert sorted(r["uri"] for r in rows) == inputs and len(inputs) == 14
    run = out / "runs" / "night"
    assert (run / "_SUCCESS").stat().st_mtime_ns >= (run / "manifest.json").stat().st_mtime_ns
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["counts"]["rows_written"] == 14
    return manifest


def workers(nodes) -> set[str]:
    return {n.node_id for n in nodes.worker_nodes}


def remove(nodes, node_id: str, holds: Path | None = None) -> None:
    """SIGKILL every process of the worker node ``node_id``, as a reclaimed spot instance loses them:
    its Ray processes, and the workers held there (a worker outlives its raylet for a while, long enough
    to finish a released subset and hand its result to the driver, which no vanished machine does)."""
    nodes.remove_node(next(n for n in nodes.worker_nodes if n.node_id == node_id), allow_graceful=False)
    for marker in holds.glob(f"*.{node_id}.*") if holds else ():
        try:
            os.kill(int(marker.name.rsplit(".", 1)[1]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + WAIT_S  # GCS marks it dead after its health checks fail (seconds)
    while any(n["NodeID"] == node_id and n["Alive"] for n in nodes.global_state.node_table()):
        assert time.monotonic() < deadline, f"Ray still lists node {node_id} as alive after {WAIT_S:.0f}s"
        time.sleep(0.5)


def test_a_node_added_mid_night_gets_actors_sharing_a_gpu_and_both_nodes_work(cluster, images, tmp_path):
    """One worker at the start: its logical GPU holds two extraction actors of 0.5 GPU (the pool's min);
    once both hold a shard a second node joins and the pool grows onto it. Scoring then spreads over both
    workers, never the 0-CPU head. Scoring asks for half a GPU too and runs on the CPU: Ray's GPUs here
    are scheduling tokens without CUDA."""
    from ray.util.state import list_actors

    nodes, holds = cluster
    while len(nodes.worker_nodes) > 1:
        remove(nodes, next(iter(workers(nodes))))
    (first,) = workers(nodes)
    hold(holds, "extract_shard")
    try:
        job, out = start_job(tmp_path, images, nodes.address, "extraction.actors={min: 2, max: 3}",
                             "extraction.num_gpus_per_actor=0.5", "extraction.num_cpus_per_actor=0.25",
                             "scoring.num_gpus_per_task=0.5")
        assert set(held(holds, "extract_shard", count=2, job=job)) == {first}  # both actors on the one GPU
        added = add_worker(nodes).node_id
        deadline = time.monotonic() + WAIT_S
        while added not in held(holds, "extract_shard", job=job):
            assert time.monotonic() < deadline, "no actor on the added node held a shard"
            time.sleep(0.2)
    finally:
        release(holds, "extract_shard")
    text = finish(job, tmp_path)
    manifest = check_night(out, images)
    section = manifest["cluster"]
    assert section["nodes_joined"] == [added] and section["nodes_lost"] == [], section
    assert set(section["per_node"]) == {first, added} and section["nodes_seen"] == 2, section
    assert all(n["shards"] > 0 and n["subsets"] > 0 for n in section["per_node"].values()), section
    assert sum(n["shards"] for n in section["per_node"].values()) == manifest["counts"]["shards"] == 8
    assert sum(n["subsets"] for n in section["per_node"].values()) == manifest["counts"]["subsets"] == 4
    assert section["retried"] is not None, section["retried_unknown"]  # the state API answered
    assert "cluster: 2 nodes did work" in text
    actors = list_actors(address=nodes.address, filters=[("class_name", "=", EXTRACTOR)], detail=True,
                         raise_on_missing_output=False)
    assert len([a for a in actors if a.node_id == first]) >= 2, actors
    assert {a.required_resources.get("GPU") for a in actors} == {0.5}, actors


def test_a_node_lost_mid_extraction_and_another_mid_scoring_cost_no_row(cluster, images, tmp_path):
    """A worker node SIGKILLed (every process of it) while it holds a shard, a fresh node added, then the
    node that holds a subset SIGKILLed too: Ray restarts the extraction actor and retries the scoring task
    on the nodes left, and the night completes with one row per input. Its first stage asks for two actors
    of 0.5 CPU and a decoding task of 0.5 at once: more than one 1-CPU node holds, so the reservation is
    granted only because it may spread over the nodes (PACK is best effort), not refused after
    resource_wait_s."""
    nodes, holds = cluster
    while len(nodes.worker_nodes) < 2:
        add_worker(nodes)
    for point in POINTS:
        hold(holds, point)
    try:
        job, out = start_job(tmp_path, images, nodes.address)
        lost = [held(holds, "extract_shard", job=job)[0]]
        remove(nodes, lost[0], holds)
        add_worker(nodes)
        release(holds, "extract_shard")
        lost.append(held(holds, "score_subset", job=job)[0])
        remove(nodes, lost[1], holds)
    finally:
        for point in POINTS:
            release(holds, point)
    finish(job, tmp_path)
    manifest = check_night(out, images)
    section = manifest["cluster"]
    assert sorted(section["nodes_lost"]) == sorted(lost), section  # the added node may be the second lost one
    assert len(section["nodes_joined"]) == 1, section
    assert section["nodes_at_end"] == 2  # the head and one worker
    retried = section["retried"]["retries_by_task"]
    assert any("ShardFeatureExtractor" in name for name in retried) and "_score_subset_task" in retried, section
    assert sum(n["shards"] for n in section["per_node"].values()) == manifest["counts"]["shards"] == 8
    assert sum(n["subsets"] for n in section["per_node"].values()) == manifest["counts"]["subsets"] == 4
    assert section["per_node"].get(lost[1], {}).get("subsets", 0) == 0  # its held subset never finished there


def test_the_actor_pool_size_is_a_number_or_min_max_and_its_former_name_still_loads(caplog):
    """extraction.actors replaced extraction.num_actors (one name per concept): old configs still load, with
    a warning, and keep their run id (the pool size changes no result); the reservation asks for min actors."""
    from pipeline.job.identity import config_hash
    from pipeline.job.resources import demands
    from pipeline.settings import ConfigError, JobConfig, config_from_dict

    def extraction(**keys):
        return config_from_dict(JobConfig, {"inputs": {"uris": ["s3://b/x/"]}, "extraction": keys})

    former = extraction(num_actors=4)
    assert former.extraction.pool_sizes() == (4, 4) and "is now 'extraction.actors'" in caplog.text
    pool = extraction(actors={"min": 2, "max": 5}, num_cpus_per_actor=0.5)
    assert pool.extraction.pool_sizes() == (2, 5) and pool.extraction.threads_per_actor() == 1
    assert config_hash(former) == config_hash(pool) == config_hash(extraction())
    first_stage, _ = demands(pool).values()
    assert first_stage == [{"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}]  # two actors and a decoding task
    with pytest.raises(ConfigError, match=r"'extraction.actors.max': must be >= min \(3\), got 2"):
        extraction(actors={"min": 3, "max": 2})
    with pytest.raises(ConfigError, match=r"'extraction.actors': must be >= 1, got 0"):
        extraction(actors=0)
