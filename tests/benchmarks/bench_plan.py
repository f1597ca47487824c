"""How long ``jobs/musc.py --plan`` takes at 10^5 local inputs, and what of it is the interpreter's imports.

    .venv/bin/python tests/benchmarks/bench_plan.py [--images 100000] [--data /tmp/musc-scale] [--repeat 3]

The inputs are the scale benchmark's (``bench_scale.generate``: 64 px PNGs in groups of ~2,000, a
one-image group and 6 corrupt files; cached under --data, shared with bench_scale.py). The plan is
the production config (conf/nightly.yaml: ViT-L-14-336 at 518 px, shards of 64, subsets of 200, 4
GPU actors) with the inputs listed from that folder, the outputs in a temporary folder and a random
init instead of the weights URI. Printed: the wall time of the whole command in its own process
(best of --repeat), the same process doing only its imports (``import pipeline.job.run``; the run
pays them too), and the plan's own seconds in this process once imported (``plan_night``), with
the plan's totals. Nothing may be written: the output folder must stay absent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import generate  # noqa: E402


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds of a command in its own process, and its stdout; it must exit 0."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr[-3000:]}")
    return seconds, done.stdout


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
        overrides = [f"inputs.uris=[{root}]", f"output.prefix={out}", "backbone.weights=null",
                     "backbone.random_init=true"]
        command = [sys.executable, "jobs/musc.py", "--config", "conf/nightly.yaml", *overrides, "--plan"]
        plans = [timed(command) for _ in range(args.repeat)]
        imports = [timed([sys.executable, "-c", "import pipeline.job.run"])[0] for _ in range(args.repeat)]
        assert not out.exists(), "the plan wrote its output folder"

        from pipeline.job.dry_run import plan_night
        from pipeline.settings import JobConfig, load_config

        cfg = load_config(REPO / "conf" / "nightly.yaml", JobConfig, overrides)
        inside = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            night = plan_night(cfg)
            inside.append(time.perf_counter() - start)
        assert not out.exists(), "the plan wrote its output folder"
    t = night.totals
    assert t["images"] == files, (t["images"], files)
    print(f"## `--plan` at {files:,} local inputs (conf/nightly.yaml, {len(night.groups)} groups, {t['subsets']:,} "
          f"subsets, {t['shards']:,} shards; {os.cpu_count()} CPUs)\n")
    print("| what | seconds (best of {}) |\n|---|---|".format(args.repeat))
    print(f"| the whole command, own process | {min(s for s, _ in plans):.2f} |")
    print(f"| of which the interpreter and imports (`import pipeline.job.run`) | {min(imports):.2f} |")
    print(f"| the plan itself, imported (`plan_night`: listing, checks, plan, price) | {min(inside):.2f} |")
    print(f"\nGPU-hours {t['gpu_hours']:.3f} planned, {t['gpu_hours_cost_model']:.3f} by the cost model at full "
          f"subsets; {t['bytes_read'] / 1e9:.1f} GB read, {t['bytes_written'] / 1e9:.1f} GB written; nothing written")
    print(f"\ncommand: .venv/bin/python tests/benchmarks/bench_plan.py --images {args.images} --repeat {args.repeat}")


if __name__ == "__main__":
    main()
