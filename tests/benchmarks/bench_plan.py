"""How long ``jobs/musc.py --plan`` takes at 10^5 local inputs, and what of it is the interpreter's imports.

    .venv/bin/python tests/benchmarks/bench_plan.py [--images 100000] [--data /tmp/musc-scale] [--repeat 3]

The inputs are the scale benchmark's (``bench_scale.generate``: 64 px PNGs in groups of ~2,000, a
one-image group and 6 corrupt files; cached under --data, shared with bench_scale.py). The plan is
the production config (conf/nightly.yaml: ViT-L-14-336 at 518 px, shards of 64, subsets of 200, 4
GPU actors) with the inputs listed from that folder (one group per folder), the outputs in a
temporary folder and a random init instead of the weights URI. Printed, wall and CPU seconds (the
CPU figure holds when the machine is shared): the whole command in its own process (best of
--repeat), a process doing only its imports (``IMPORTS``; the run pays them too), and the plan's
own work in this process once imported (``plan_night``), with the plan's totals. Nothing may be
written: the output folder must stay absent.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import generate  # noqa: E402

IMPORTS = "import pipeline.job.run, open_clip"  # the job's own imports and the backbone check's


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of a command in its own process; it must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr[-3000:]}")
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--data", default="/tmp/musc-scale", help="where generated images are cached")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.data) / f"n{args.images}-g2000"
    start = time.perf_counter()
    files = generate(root, args.images, 2000)
    print(f"data: {files:,} files in {root} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        overrides = [f"inputs.uris=[{root}]", "inputs.group_template=null", f"output.prefix={out}",
                     "backbone.weights=null", "backbone.random_init=true"]
        command = [sys.executable, "jobs/musc.py", "--config", "conf/nightly.yaml", *overrides, "--plan"]
        plans = [timed(command) for _ in range(args.repeat)]
        imports = [timed([sys.executable, "-c", IMPORTS]) for _ in range(args.repeat)]
        assert not out.exists(), "the plan wrote its output folder"

        import open_clip  # noqa: F401 - IMPORTS, so that what follows times the plan alone

        import pipeline.job.run  # noqa: F401
        from pipeline.job.dry_run import plan_night
        from pipeline.settings import JobConfig, load_config

        cfg = load_config(REPO / "conf" / "nightly.yaml", JobConfig, overrides)
        inside = []
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), time.process_time()
            night = plan_night(cfg)
            inside.append((time.perf_counter() - start, time.process_time() - cpu))
        assert not out.exists(), "the plan wrote its output folder"
    t = night.totals
    assert t["images"] == files, (t["images"], files)
    print(f"## `--plan` at {files:,} local inputs (conf/nightly.yaml, {len(night.groups)} groups, {t['subsets']:,} "
          f"subsets, {t['shards']:,} shards; {os.cpu_count()} CPUs)\n")
    print(f"| what (best of {args.repeat}) | wall s | CPU s |\n|---|---|---|")
    for what, runs in (("the whole command, own process", plans),
                       (f"of which the interpreter and imports (`{IMPORTS}`)", imports),
                       ("the plan itself, imported (`plan_night`: listing, checks, plan, price)", inside)):
        print(f"| {what} | {min(w for w, _ in runs):.2f} | {min(c for _, c in runs):.2f} |")
    print(f"\nGPU-hours {t['gpu_hours']:.3f} planned, {t['gpu_hours_cost_model']:.3f} by the cost model at full "
          f"subsets; {t['bytes_read'] / 1e9:.1f} GB read, {t['bytes_written'] / 1e9:.1f} GB written; nothing written")
    print(f"\ncommand: .venv/bin/python tests/benchmarks/bench_plan.py --images {args.images} --repeat {args.repeat}")


if __name__ == "__main__":
    main()
