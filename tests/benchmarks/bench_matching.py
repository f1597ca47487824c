"""Benchmark: windowed (position-aware) against full mutual scoring on the same features.

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_matching.py                  # N=64, 32x32, C=256/768
    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_matching.py --n 83 --grids 32 64 --c 768 --radii 0 1 2

For each grid and channel count it times ``msm.mutual_scores`` (full matching) and
``windowed_msm.windowed_mutual_scores`` at each radius on the same random unit tokens and prints
seconds, achieved useful GFLOP/s (products inside the windows only: edge windows are smaller),
the time ratio to full matching against the FLOP ratio (target from issue 21: time ratio within
3x of the FLOP ratio, and <= 0.1 at radius 1 on a 32x32 grid or larger), and the peak extra
resident memory of each (a fresh process each, as bench_msm.py measures it). ``--full-n`` scores
full matching on fewer images and scales its time by the pair count (it is exactly quadratic),
when the full run would take minutes. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch
import torch.nn.functional as F
from bench_msm import _rss_kb, best_time

from pipeline.engine.msm import mutual_scores
from pipeline.engine.windowed_msm import window_flops, windowed_mutual_scores


def _run(z: torch.Tensor, side: int, radius: int) -> torch.Tensor:
    return mutual_scores(z) if radius < 0 else windowed_mutual_scores(z, (side, side), radius)


def memory_child(n: int, side: int, c: int, radius: int) -> None:
    """In a subprocess: print the peak extra RSS (MiB) of one scoring beyond its inputs."""
    z = F.normalize(torch.randn(n, side * side, c), dim=-1)
    _run(z[:2], side, radius)  # warm up allocator and kernels
    base = _rss_kb("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark
        fh.write("5")
    _run(z, side, radius)
    print((_rss_kb("VmHWM:") - base) / 1024)


def peak_mib(n: int, side: int, c: int, radius: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(n), str(side), str(c), str(radius)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--full-n", type=int, default=None, help="images for the full-matching timing (scaled)")
    parser.add_argument("--grids", type=int, nargs="+", default=[32])
    parser.add_argument("--c", type=int, nargs="+", default=[256, 768])
    parser.add_argument("--radii", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="also measure peak extra memory")
    parser.add_argument("--child", type=int, nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(*args.child)
        return
    n = args.n
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N={n}; command: python "
          + " ".join(sys.argv))
    print(f"{'grid':>6} {'C':>5} {'matching':>10} {'seconds':>9} {'GFLOP/s':>8} {'time ratio':>11} "
          f"{'FLOP ratio':>11} {'time/FLOP':>10} {'peak MiB':>9}")
    for side in args.grids:
        m = side * side
        for c in args.c:
            z = F.normalize(torch.randn(n, m, c, generator=torch.Generator().manual_seed(0)), dim=-1)
            n_full = args.full_n or n
            full_pairs = n_full * (n_full - 1) / 2
            t_full = best_time(lambda: mutual_scores(z[:n_full]), 1 if n_full != n else args.repeats)
            t_full *= n * (n - 1) / 2 / full_pairs
            full_flops = n * (n - 1) / 2 * m * m * 2 * c
            mem = f"{peak_mib(n, side, c, -1):9.1f}" if args.memory else f"{'':>9}"
            scaled = " (scaled)" if n_full != n else ""
            print(f"{side}x{side:<3} {c:>5} {'full':>10} {t_full:9.3f} {full_flops / t_full / 1e9:8.1f} "
                  f"{1.0:11.4f} {1.0:11.4f} {1.0:10.2f} {mem}{scaled}")
            for radius in args.radii:
                t = best_time(lambda: windowed_mutual_scores(z, (side, side), radius), args.repeats)
                flops = n * (n - 1) / 2 * window_flops(side, side, radius, c)
                time_ratio, flop_ratio = t / t_full, flops / full_flops
                mem = f"{peak_mib(n, side, c, radius):9.1f}" if args.memory else ""
                print(f"{'':>6} {c:>5} {f'r={radius}':>10} {t:9.3f} {flops / t / 1e9:8.1f} {time_ratio:11.4f} "
                      f"{flop_ratio:11.4f} {time_ratio / flop_ratio:10.2f} {mem}")


if __name__ == "__main__":
    main()
