"""Benchmark: tiled mutual scoring against the published code's per-image cdist loop.

    .venv/bin/python tests/benchmarks/bench_msm.py                # N=64, M=196, C=768 + memory sweep
    .venv/bin/python tests/benchmarks/bench_msm.py --n 32 --m 100 --memory-n 64 128

In one run on the same random unit features it times (a) the baseline written the way the published
MuSc code does it (for each image: concatenate the others, cdist of its patches against all their
patches, min over patches, top-k smallest, mean) and (b) ``pipeline.msm.mutual_scores``, checks they
agree, and prints the speed ratio, our useful GFLOP/s, and the plain fp32 matmul GFLOP/s of this
machine measured at our tile shape. It then measures, each in a fresh subprocess, the peak extra
resident memory of (b) for growing N to show it does not grow like the N^2 M^2 similarity matrix.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from pipeline.engine.msm import auto_tile_images, interval_bounds, mutual_scores


def published_style_msm(z: torch.Tensor, topmin_max: float) -> torch.Tensor:
    """Baseline: the published compute_scores_fast loop, one image at a time (k at least 1)."""
    n, m, c = z.shape
    k_lo, k_hi = interval_bounds(n - 1, topmin_max)
    rows = []
    for i in range(n):
        z_ref = torch.cat((z[:i], z[i + 1:]), dim=0)
        d = torch.cdist(z[i:i + 1], z_ref.reshape(-1, c)).reshape(m, n - 1, m)
        d = torch.min(d, -1)[0]
        vals = torch.topk(d, k_hi, largest=False, sorted=True)[0]
        rows.append(vals[:, k_lo:].mean(dim=1))
    return torch.stack(rows)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(rows: int, c: int, repeats: int = 5) -> float:
    a = torch.randn(rows, c)
    b = torch.randn(rows, c)
    a @ b.T
    return 2 * rows * rows * c / best_time(lambda: a @ b.T, repeats) / 1e9


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(n: int, m: int, c: int) -> None:
    """Run in a subprocess: print the peak extra RSS (MiB) of mutual_scores beyond its inputs."""
    z = F.normalize(torch.randn(n, m, c), dim=-1)
    mutual_scores(z[:2])  # warm up torch's allocator and kernels
    base = _rss_kb("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark to the current RSS
        fh.write("5")
    mutual_scores(z)
    print((_rss_kb("VmHWM:") - base) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--m", type=int, default=196)
    parser.add_argument("--c", type=int, default=768)
    parser.add_argument("--x", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-n", type=int, nargs="*", default=[128, 256, 512])
    parser.add_argument("--memory-c", type=int, default=768)
    parser.add_argument("--child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(*args.child)
        return

    n, m, c = args.n, args.m, args.c
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N={n} M={m} C={c} X={args.x}")
    z = F.normalize(torch.randn(n, m, c, generator=torch.Generator().manual_seed(0)), dim=-1)
    tile = auto_tile_images(n, m, torch.device("cpu"))
    ours = mutual_scores(z, args.x)
    base = published_style_msm(z, args.x)
    diff = (ours - base).abs().max().item()
    t_base = best_time(lambda: published_style_msm(z, args.x), args.repeats)
    t_ours = best_time(lambda: mutual_scores(z, args.x), args.repeats)
    useful_flops = n * (n - 1) / 2 * m * m * 2 * c
    ours_gflops = useful_flops / t_ours / 1e9
    mm_gflops = matmul_gflops(tile * m, c)
    print(f"(a) published-style cdist loop : {t_base:8.3f} s")
    print(f"(b) tiled symmetric MSM        : {t_ours:8.3f} s   (tile {tile} images = {tile * m} rows)")
    print(f"max |a - b|                    : {diff:.2e}")
    print(f"speed-up a/b                   : {t_base / t_ours:8.2f}x")
    print(f"ours, useful GFLOP/s           : {ours_gflops:8.1f}  (N(N-1)/2 pairs x M^2 x 2C flops)")
    print(f"plain fp32 matmul GFLOP/s      : {mm_gflops:8.1f}  ({tile * m}x{c} @ {c}x{tile * m})")
    print(f"ours / matmul rate             : {100 * ours_gflops / mm_gflops:8.1f} %")
    if diff > 1e-4:
        sys.exit(f"MISMATCH: baseline and tiled MSM differ by {diff:.2e}")

    print(f"\npeak extra resident memory of mutual_scores (M={m}, C={args.memory_c}), fresh process each:")
    print(f"{'N':>6} {'peak MiB':>10} {'kept top-k MiB':>15} {'full N^2 M^2 matrix MiB':>24}")
    for n_mem in args.memory_n:
        out = subprocess.run([sys.executable, __file__, "--child", str(n_mem), str(m), str(args.memory_c)],
                             capture_output=True, text=True, check=True)
        k_hi = interval_bounds(n_mem - 1, args.x)[1]
        kept = n_mem * m * k_hi * 4 / 2**20
        full = n_mem * n_mem * m * m * 4 / 2**20
        print(f"{n_mem:>6} {float(out.stdout.strip()):>10.1f} {kept:>15.1f} {full:>24.0f}")


if __name__ == "__main__":
    main()
