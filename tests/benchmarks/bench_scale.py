"""The real nightly job at 10^4-10^5 images on this machine: per-stage time, memory, objects, overhead.

    .venv/bin/python tests/benchmarks/bench_scale.py --sizes 10000 30000 100000 [--big-group 20000]

For each N: N generated 64 px images (products of ~2,000 images per group, ~5% defective, one group
of a single image, 6 corrupt files), listed from a folder (one group per folder), scored by
``jobs/musc.py`` in its own process with a private local Ray, a random-init ResNet-18 cut at its
stride-8 level at 32 px (a 4 x 4 patch grid, so the model costs little and the pipeline's own costs
show), the nightly config's shard_size 64 and max_subset_size 200, heat maps of flagged images.
``--big-group`` adds one run with a single group of that many images (100 subsets at 20,000).

Printed per run: wall time and images/s of each stage (from the manifest), the driver's peak RSS,
the peak RSS of a subset task and of a group task (worker processes sampled every 0.5 s by their
Ray task name; Linux /proc), objects and bytes written per image (features kept), and the per-task overhead:
(stage wall x CPUs - seconds inside our task code) / tasks. Rows must equal inputs at every N.
Generated data is cached under --data (default /tmp/musc-scale).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.dataset as pds

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.data.synthetic import DEFECTS, render_image  # noqa: E402

CONFIG = """
inputs: {{uris: ["{root}"]}}
output: {{prefix: "{out}", heatmaps: flagged, keep_features: true}}
run_id: scale
backbone: {{family: timm_cnn, name: resnet18, random_init: true, image_size: 32, layers: [2], batch_size: 64}}
extraction: {{shard_size: 64, actors: 1, num_cpus_per_actor: 1}}
scoring: {{max_subset_size: 200, num_cpus_per_task: 1}}
musc: {{aggregation_degrees: [1, 3, 5], rscin_windows: [1, 2, 3]}}
"""
PRODUCTS = list(DEFECTS)


def generate(root: Path, n: int, group_size: int) -> int:
    """n images in groups of about ``group_size`` (plus a one-image group and 6 corrupt files); the
    number of files listed. Cached: a finished folder has a ``.done`` marker."""
    if (root / ".done").is_file():
        return int((root / ".done").read_text())
    import io

    from PIL import Image

    groups = max(1, round((n - 1) / group_size))
    count = 0
    for g in range(groups):
        product = PRODUCTS[g % len(PRODUCTS)]
        folder = root / f"line{g:03d}-{product}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (n - 1) // groups + (1 if g < (n - 1) % groups else 0)
        for i in range(size):
            defect = DEFECTS[product][i % 3] if i % 20 == 7 else None  # about 5% defective
            image, _ = render_image(product, 64, [g, i], defect)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
            (folder / f"{i:06d}.png").write_bytes(buffer.getvalue())
            count += 1
    first = root / f"line000-{PRODUCTS[0]}"
    good = (first / "000000.png").read_bytes()
    for i in range(3):
        (first / f"corrupt-truncated-{i}.png").write_bytes(good[: len(good) // 2])
        (first / f"corrupt-empty-{i}.png").write_bytes(b"")
    (root / "solo").mkdir(exist_ok=True)
    (root / "solo" / "only.png").write_bytes(good)
    count += 7
    (root / ".done").write_text(str(count))
    return count


def rss(pid: int | str) -> int:
    """Resident set size of a process in bytes (Linux /proc), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Peak RSS of the driver and of Ray workers while they run a subset or a group task (Ray titles
    a worker process ``ray::<task name>`` while it runs a task)."""

    def __init__(self, driver: int) -> None:
        super().__init__(daemon=True)
        self.driver, self.stop = driver, threading.Event()
        self.peak: dict[str, int] = defaultdict(int)

    def run(self) -> None:
        tasks = (("_score_subset_task", "subset task"), ("_finalise_group_task", "group task"))
        others: set[str] = set()  # processes that are not Ray workers keep their command line
        while not self.stop.is_set():
            self.peak["driver"] = max(self.peak["driver"], rss(self.driver))
            for proc in Path("/proc").glob("[0-9]*"):
                if proc.name in others:
                    continue
                try:
                    title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if not title.startswith("ray::"):
                    others.add(proc.name)
                for task, name in tasks:
                    if title.startswith("ray::") and task in title:
                        self.peak[name] = max(self.peak[name], rss(proc.name))
            time.sleep(0.5)


def written(out: Path, images: int) -> dict[str, tuple[float, float]]:
    """Objects and bytes per image by kind of object."""
    objects, size = defaultdict(int), defaultdict(int)
    for path in out.rglob("*"):
        if path.is_file():
            rel = path.relative_to(out).parts
            kind = rel[2] if rel[0] == "runs" and len(rel) > 3 else rel[0] if rel[0] != "runs" else "run records"
            objects[kind] += 1
            size[kind] += path.stat().st_size
    return {k: (objects[k] / images, size[k] / images) for k in sorted(objects)}


def run(root: Path, images: int) -> dict:
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        out = Path(tmp) / "out"
        config = Path(tmp) / "job.yaml"
        config.write_text(CONFIG.format(root=root, out=out))
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "musc.py"), "--config", str(config)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        sampler = Sampler(proc.pid)
        sampler.start()
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
        sampler.stop.set()
        if proc.returncode != 0:
            raise RuntimeError(f"job exited {proc.returncode}: {stdout[-2000:]} {stderr[-3000:]}")
        manifest = json.loads((out / "runs" / "scale" / "manifest.json").read_text())
        rows = pds.dataset(str(out / "scores"), format="parquet", partitioning="hive").count_rows()
        return {"images": images, "wall": wall, "manifest": manifest, "rows": rows, "peak": dict(sampler.peak),
                "written": written(out, images)}


def report(result: dict, cpus: int) -> None:
    m, n = result["manifest"], result["images"]
    t, c = m["timings_s"], m["counts"]
    print(f"\n### N = {n:,} images ({c['groups']} groups, {c['subsets']} subsets, {c['shards']} shards)\n")
    assert result["rows"] == n == c["inputs"] == c["rows_written"], (result["rows"], n, c)
    print(f"rows written = inputs = {n:,}; statuses {c['statuses']}; job wall {result['wall']:.0f} s "
          f"({m['seconds']:.0f} s inside the job)\n")
    print("| stage | wall (s) | images/s | ms per image |\n|---|---|---|---|")
    for stage in ("preflight", "plan", "extraction", "scoring"):
        print(f"| {stage} | {t[stage]:.1f} | {n / t[stage]:,.0f} | {1000 * t[stage] / n:.3f} |")
    peak = result["peak"]
    print(f"\npeak RSS: driver {peak.get('driver', 0) / 2**20:,.0f} MiB "
          f"({peak.get('driver', 0) / n:,.0f} B per input), subset task {peak.get('subset task', 0) / 2**20:,.0f} MiB, "
          f"group task {peak.get('group task', 0) / 2**20:,.0f} MiB")
    tasks = c["subsets"] - c["subsets_skipped"]
    busy = m["task_seconds"]
    overhead = (t["scoring"] * cpus - busy["subsets"] - busy["groups"]) / max(1, tasks + c["groups"])
    print(f"scoring stage: {tasks} subset tasks ({busy['subsets']:.0f} s in our code) and {c['groups']} group tasks "
          f"({busy['groups']:.0f} s); overhead {1000 * overhead:.0f} ms per task "
          f"(stage wall x {cpus} CPUs - our seconds, per task)")
    extraction_overhead = (t["extraction"] * cpus - t["extraction_actor_busy"]) / max(1, c["shards"])
    print(f"first stage: actors busy {t['extraction_actor_busy']:.0f} s of {t['extraction']:.0f} s wall; "
          f"{1000 * extraction_overhead:.0f} ms per shard outside the actor's work (decoding included)\n")
    print("| objects | per image | bytes per image |\n|---|---|---|")
    for kind, (objects, size) in result["written"].items():
        print(f"| {kind} | {objects:.4f} | {size:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    parser.add_argument("--big-group", type=int, default=0, help="also one group of this many images")
    parser.add_argument("--data", default="/tmp/musc-scale", help="where generated images are cached")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    results = []
    runs = [(n, 2000) for n in args.sizes] + ([(args.big_group, args.big_group)] if args.big_group else [])
    for n, group_size in runs:
        root = Path(args.data) / f"n{n}-g{group_size}"
        start = time.perf_counter()
        images = generate(root, n, group_size)
        print(f"data: {images:,} files in {root} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        result = run(root, images)
        report(result, cpus)
        results.append(result)
    if len(args.sizes) > 1:
        first, last = results[0], results[len(args.sizes) - 1]
        print("\n### Scaling from the smallest to the largest N (per-image time ratio; 1.0 = linear)\n")
        for stage in ("preflight", "plan", "extraction", "scoring"):
            ratio = (last["manifest"]["timings_s"][stage] / last["images"]) / (
                first["manifest"]["timings_s"][stage] / first["images"])
            print(f"- {stage}: {ratio:.2f}x")
        peaks = [r["peak"].get("driver", 0) for r in (first, last)]
        growth = (peaks[1] - peaks[0]) / (last["images"] - first["images"])
        print(f"- driver peak RSS: {peaks[0] / 2**20:,.0f} MiB -> {peaks[1] / 2**20:,.0f} MiB, {growth:,.0f} B per "
              "added input (the rest is Ray and torch, whatever N)")
    print(f"\ncommand: .venv/bin/python tests/benchmarks/bench_scale.py --sizes {' '.join(map(str, args.sizes))}"
          + (f" --big-group {args.big_group}" if args.big_group else ""))


if __name__ == "__main__":
    main()
