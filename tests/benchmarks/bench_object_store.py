"""The nightly job on a Ray cluster with a small object store: does the night finish, what spills, and
does the driver's memory stay flat?

    .venv/bin/python tests/benchmarks/bench_object_store.py --sizes 1000 10000 --object-store-mb 200

For each N: the scale benchmark's generated night (``bench_scale.generate``: groups of ~2,000 64 px
images, 6 corrupt files, a one-image group) and its job config (random-init ResNet-18 at 32 px, shard
64, subsets of 200), submitted as on a cluster: a head started here with ``ray start --head
--object-store-memory`` (free ports, its own temp dir, its own process group, stopped afterwards) and
``jobs/musc.py`` in its own process joining it through ``ray_address``. Printed per N: wall time, rows =
inputs, what the object store spilled and restored during the run (the job's manifest, ``object_store``,
from Ray's own stats), and the driver's peak RSS two ways: sampled every 0.5 s from /proc (the
``jobs/musc.py`` process alone; Ray's head processes are not the driver) and that process's own
``ru_maxrss`` (``os.wait4`` on it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pds

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from bench_scale import CONFIG, REPO, Sampler, generate  # noqa: E402
from test_nightly_cluster import free_port, stop_process_group  # noqa: E402  the cluster test's own helpers


def start_head(temp: Path, object_store_bytes: int, cpus: int) -> tuple[subprocess.Popen, str]:
    """``ray start --head --block`` with a small object store, on free ports; returns the process and
    the GCS address a driver joins."""
    ray = Path(sys.executable).parent / "ray"
    port = free_port()
    cmd = [str(ray), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
           f"--object-store-memory={object_store_bytes}", f"--temp-dir={temp}", "--include-dashboard=false",
           "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the GCS answers on its port once the head is up
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited {head.returncode}: {(temp / 'head.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(3)  # the raylet registers after the GCS listens
            return head, address
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no Ray head on {address}")


def run(root: Path, images: int, object_store_bytes: int, cpus: int) -> dict:
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        temp = Path(tmp)
        out, logs = temp / "out", temp / "ray"
        logs.mkdir()
        head, address = start_head(logs, object_store_bytes, cpus)
        try:
            config = temp / "job.yaml"
            config.write_text(CONFIG.format(root=root, out=out) + f'ray_address: "{address}"\n')
            start = time.perf_counter()
            with (temp / "stdout").open("w") as stdout, (temp / "stderr").open("w") as stderr:
                proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "musc.py"), "--config", str(config)],
                                        cwd=REPO, stdout=stdout, stderr=stderr,
                                        env={**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"})
                sampler = Sampler(proc.pid)
                sampler.start()
                _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
                proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - start
            sampler.stop.set()
        finally:
            stop_process_group(head)
        stdout, stderr = (temp / "stdout").read_text(), (temp / "stderr").read_text()
        if proc.returncode != 0:
            raise RuntimeError(f"job exited {proc.returncode}: {stdout[-2000:]} {stderr[-3000:]}")
        manifest = json.loads((out / "runs" / "scale" / "manifest.json").read_text())
        rows = pds.dataset(str(out / "scores"), format="parquet", partitioning="hive").count_rows()
        return {"images": images, "wall": wall, "manifest": manifest, "rows": rows,
                "driver_sampled": sampler.peak["driver"], "driver_maxrss": usage.ru_maxrss * 1024,
                "summary": [ln for ln in stdout.splitlines() if "object store" in ln]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--object-store-mb", type=int, default=200, help="the head's object store (Ray's floor: 75)")
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs of the head")
    parser.add_argument("--data", default="/tmp/musc-scale", help="where generated images are cached")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed benchmark still stops its head (finally)
    results = []
    for n in args.sizes:
        root = Path(args.data) / f"n{n}-g2000"
        images = generate(root, n, 2000)
        result = run(root, images, args.object_store_mb * 2**20, args.cpus)
        m, c = result["manifest"], result["manifest"]["counts"]
        store = m["object_store"]
        assert result["rows"] == images == c["inputs"] == c["rows_written"], (result["rows"], images, c)
        print(f"\n### N = {images:,} images, object store {args.object_store_mb} MB, {args.cpus} CPUs\n")
        print(f"- rows written = inputs = {images:,} (statuses {c['statuses']})")
        print(f"- wall {result['wall']:.0f} s (extraction {m['timings_s']['extraction']:.0f} s, "
              f"scoring {m['timings_s']['scoring']:.0f} s)")
        print("- object store (manifest): " + ("not read" if store is None else
              f"{store['spilled_bytes']:,} bytes spilled ({store['spilled_objects']} objects), "
              f"{store['restored_bytes']:,} bytes restored"))
        print(f"- summary line: {result['summary'][0].strip() if result['summary'] else '(none)'}")
        print(f"- driver peak RSS: {result['driver_sampled'] / 2**20:,.0f} MiB sampled, "
              f"{result['driver_maxrss'] / 2**20:,.0f} MiB ru_maxrss")
        results.append(result)
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = (last["driver_sampled"] - first["driver_sampled"]) / (last["images"] - first["images"])
        print(f"\ndriver peak RSS {first['driver_sampled'] / 2**20:,.0f} MiB at {first['images']:,} -> "
              f"{last['driver_sampled'] / 2**20:,.0f} MiB at {last['images']:,}: {growth:,.0f} B per added input")
    print(f"\ncommand: .venv/bin/python tests/benchmarks/bench_object_store.py --sizes {' '.join(map(str, args.sizes))} "
          f"--object-store-mb {args.object_store_mb} --cpus {args.cpus}")


if __name__ == "__main__":
    main()
