"""What reviewers' verdicts cost a night: reading the table and matching it against the earlier nights.

    .venv/bin/python tests/benchmarks/bench_verdicts.py [--runs 30] [--rows 100000] [--groups 1] [--verdicts 2000]

Writes ``--runs`` earlier successful runs under a temporary local output prefix as the job leaves them (per
group a scores object of ``--rows`` rows / groups, a manifest, _SUCCESS) and a verdicts CSV of ``--verdicts``
rows on the latest runs' images, then times ``read_verdicts`` and ``review_nights`` (what the job does
before its first stage with ``verdicts`` set, ``verdict_runs`` = runs) and prints the driver's peak RSS.
Local disk only: on S3 add a GET per run and group, 16 at a time.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.job.layout import RunLayout  # noqa: E402
from pipeline.job.verdicts import read_verdicts, review_nights  # noqa: E402
from pipeline.storage import write_bytes, write_parquet  # noqa: E402


def write_runs(out: str, runs: int, rows: int, groups: int) -> list[str]:
    """Earlier runs with random-looking scores; returns the latest run's URIs."""
    per_group = rows // groups
    latest: list[str] = []
    for r in range(runs):
        layout = RunLayout(out, f"night-{r:03d}", f"2026-10-{1 + r % 28:02d}")
        for g in range(groups):
            uris = [f"s3://factory/line-{g}/2026-10-{r:03d}/img_{i:07d}.png" for i in range(per_group)]
            write_parquet(layout.scores(f"line-{g}"), pa.table({
                "uri": uris, "score": [(i * 7919 % 1000) / 1000 for i in range(per_group)],
                "status": ["ok"] * per_group, "is_anomaly": [i % 20 == 0 for i in range(per_group)]}))
            if r == runs - 1:
                latest.extend(uris)
        write_bytes(layout.manifest, json.dumps({"run_id": layout.run_id, "run_date": layout.run_date,
                                                 "status": "succeeded", "finished_at": f"2026-10-01T00:{r:02d}:00"
                                                 }).encode())
        write_bytes(layout.success, b"")
    return latest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per run, over all groups")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--verdicts", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, table = f"{tmp}/out", Path(tmp) / "verdicts"
        latest = write_runs(out, args.runs, args.rows, args.groups)
        table.mkdir()
        lines = [f"{uri},{('good', 'defect')[i % 3 == 0]},ann,2026-10-30T08:00:00"
                 for i, uri in enumerate(latest[::max(1, len(latest) // args.verdicts)][:args.verdicts])]
        (table / "verdicts.csv").write_text("\n".join(["uri,verdict,reviewer,reviewed_at", *lines]) + "\n")
        before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        verdicts = read_verdicts(str(table))
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        review = review_nights(verdicts, out, "tonight", args.runs, [f"line-{g}" for g in range(args.groups)])
        review_s = time.perf_counter() - t
    reviewed = sum(len(rows) for rows in review.reviewed.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.runs} runs x {args.rows} rows ({args.groups} groups), {verdicts.rows} verdicts: read "
          f"{read_s:.2f} s, matched against the runs {review_s:.2f} s ({reviewed} reviewed rows, "
          f"{len(review.warnings)} unknown); driver peak RSS {peak_mb:.0f} MB ({before_mb:.0f} MB before reading)")
    print("reproduce: .venv/bin/python tests/benchmarks/bench_verdicts.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
