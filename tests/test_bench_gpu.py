"""tests/benchmarks/bench_gpu.py without a GPU: one line and exit 2, and every step of it on tiny CPU shapes."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
import bench_gpu  # noqa: E402


def test_without_cuda_it_says_so_in_one_line_and_exits_2(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == bench_gpu.NO_CUDA_EXIT == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [bench_gpu.NO_CUDA]
    assert "--device cpu --smoke" in err


def test_the_twelve_scoring_settings_are_all_supported():
    from bench_frontier import setting

    from pipeline.settings import JobConfig, load_config

    nightly = load_config(bench_gpu.REPO / "conf" / "nightly.yaml", JobConfig, ["inputs.uris=[s3://b/x/]"])
    assert len(set(bench_gpu.SETTINGS)) == 12
    built = [setting(nightly.musc, c) for c in bench_gpu.SETTINGS]
    assert not [b for b in built if isinstance(b, str)], built  # no "not supported" row on the GPU
    assert {(b.aggregation, b.match_radius, b.rescoring) for b in built} == set(bench_gpu.SETTINGS)
    assert bench_gpu.parse_setting("lnamd/full/rscin") == bench_gpu.PAPER_SETTING
    assert bench_gpu.parse_setting("snamd/1/rscon") == ("snamd", 1, "rscon")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_smoke_mode_runs_every_step_on_the_cpu(capsys):
    """Decode, both extraction precisions, one scoring setting against the CPU, its matmul precisions
    (fp16 refused on a CPU, in its row) and the images/s line; CPU against CPU agrees exactly."""
    assert bench_gpu.main(["--device", "cpu", "--smoke", "--settings", "lnamd/full/rscin"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r[0] for r in rows if r[0].startswith("| decode") or r[0] == "| extraction"] == [
        "| decode (128 px PNG -> 32 px, 1 CPU core)", "| extraction", "| extraction"]
    scoring = [r for r in rows if r[0] == "| lnamd"]
    assert len(scoring) == 1 and scoring[0][1:3] == ["full", "rscin"]
    assert scoring[0][-2:] == ["0.00e+00", "1.000000 |"]  # the same features on the same device
    precisions = [r for r in rows if r[0] in ("| snamd/auto/rscon", "| lnamd/full/rscin")]  # settings run only
    assert [(r[0], r[1]) for r in precisions] == [("| lnamd/full/rscin", p) for p in ("fp32", "fp16", "bf16")]
    assert all("not supported" in r[2] for r in precisions if r[1] == "fp16")
    assert "images/s per CPU at the 2024 method (lnamd/full/rscin)" in out
    assert out.rstrip().endswith("bench_gpu.py --device cpu --smoke --settings lnamd/full/rscin")
