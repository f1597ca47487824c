"""A real Ray Tune sweep on CPU against the local S3 server: ASHA stops trials, results land in the
bucket, and a sweep whose trial crashed resumes from its stored state."""

import os

import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.detectors.checkpoint import load_checkpoint
from pipeline.settings import ConfigError, SweepConfig, config_from_dict
from pipeline.tuning.sweep import run_sweep, trial_config


def sweep_config(bucket: str, root) -> SweepConfig:
    return config_from_dict(SweepConfig, {
        "name": "vitad-lr",
        "detector": {"kind": "vitad",
                     "vitad": {"encoder": {"name": "vit_tiny_patch16_224", "image_size": 64, "random_init": True}},
                     "training": {"iterations": 40, "batch_size": 8, "gaussian_sigma": 1.0}},
        "dataset": {"root": str(root), "layout": "mvtec"},
        "synthetic": {"enabled": True, "categories": ["weave", "disc"], "n_train": 16, "n_test_good": 6,
                      "n_test_defect": 6, "image_size": 64},
        "search_space": {"vitad.lr": {"type": "loguniform", "low": 1e-6, "high": 1e-3}},
        "num_samples": 4, "evaluations": 4, "max_concurrent": 2,
        "storage_path": f"s3://{bucket}/tune", "output_prefix": f"s3://{bucket}/sweeps",
    })


@pytest.fixture
def ray_with_crash(tmp_path, s3_server):
    """Local Ray whose workers kill the first sweep trial that starts (as a lost node would)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("an in-process Ray instance is already running")
    os.environ["MUSC_CRASH_ONCE"] = f"sweep_trial:{tmp_path / 'crashes'}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield tmp_path / "crashes"
    ray.shutdown()
    del os.environ["MUSC_CRASH_ONCE"]


def test_sweep_on_s3_stops_early_writes_results_and_resumes(ray_with_crash, s3_bucket, tmp_path):
    cfg = sweep_config(s3_bucket, tmp_path / "data")
    first = run_sweep(cfg)
    assert (ray_with_crash / "sweep_trial").exists() and first["errored"] == 1 and not first["resumed"]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    table = f"s3://{s3_bucket}/sweeps/vitad-lr/trials.parquet"
    before = pq.read_table(fs.open(table)).to_pylist()

    second = run_sweep(cfg)  # the same command again: restores the experiment from S3
    assert second["resumed"] and second["errored"] == 0 and second["trials"] == 4
    after = pq.read_table(fs.open(table)).to_pylist()
    assert sorted(r["config.vitad.lr"] for r in after) == sorted(r["config.vitad.lr"] for r in before)
    finished_before = {r["trial_id"]: r["time_total_s"] for r in before if r["status"] == "TERMINATED"}
    assert len(finished_before) == 3
    by_id = {r["trial_id"]: r for r in after}
    for trial_id, seconds in finished_before.items():  # finished trials were kept, not re-run
        assert by_id[trial_id]["time_total_s"] == pytest.approx(seconds)
    assert all(r["status"] == "TERMINATED" for r in after)  # the crashed one ran again
    assert sum(r["stopped_early"] for r in after) >= 1  # ASHA stopped at least one trial
    assert all(r["evaluations"] == 4 for r in after if not r["stopped_early"])
    assert {"config.vitad.lr", "mad", "image_auroc", "au_pro", "time_total_s"} <= set(after[0])

    detector, best_cfg, meta = load_checkpoint(f"s3://{s3_bucket}/sweeps/vitad-lr/best")
    assert best_cfg == trial_config(cfg.detector, second["best_config"], cfg.evaluations)
    assert meta["metrics"]["mad"] == pytest.approx(max(r["best_mad"] for r in after))
    assert fs.exists(f"{s3_bucket}/sweeps/vitad-lr/best/detector.yaml")
    assert fs.exists(f"{s3_bucket}/tune/vitad-lr")  # Tune's own state lives on S3 too


def test_bad_search_space_names_the_key():
    with pytest.raises(ConfigError, match=r"search_space\.vitad\.lrr"):
        config_from_dict(SweepConfig, {"search_space": {"vitad.lrr": {"type": "choice", "values": [1]}}})
    with pytest.raises(ConfigError, match="loguniform needs low > 0"):
        config_from_dict(SweepConfig, {"search_space": {"vitad.lr": {"type": "loguniform", "low": 0, "high": 1}}})


def test_a_sweep_that_cannot_start_says_why_in_one_line(tmp_path, capsys, monkeypatch):
    from pipeline.tuning.preflight import SweepError, check_trial_resources
    from pipeline.tuning.sweep import main

    conf = tmp_path / "sweep.yaml"
    conf.write_text(f"storage_path: {tmp_path}/tune\noutput_prefix: {tmp_path}/out\n"
                    "detector: {kind: vitad}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(conf)]) == 2  # no dataset given: demo_data does not exist here
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset.root" in err and "synthetic" in err
    assert main(["--config", str(conf), f"dataset.root={tmp_path}"]) == 2  # a folder without categories
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset.root" in err and "no mvtec categories" in err
    (tmp_path / "data" / "a" / "train" / "good").mkdir(parents=True)
    assert main(["--config", str(conf), f"dataset.root={tmp_path}/data"]) == 2  # an encoder without weights
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "detector.vitad.encoder.weights" in err
    assert main(["--config", str(conf), f"dataset.root={tmp_path}/data", "storage_path=s3://no-such-bucket-x/t"]) == 2
    assert not (tmp_path / "out").exists()
    cfg = config_from_dict(SweepConfig, {"trial_gpus": 1})
    with pytest.raises(SweepError, match="trial_gpus: each trial asks for 1 GPU, the Ray cluster has 0"):
        check_trial_resources(cfg, {"CPU": 2.0})
    check_trial_resources(config_from_dict(SweepConfig, {"trial_cpus": 2}), {"CPU": 2.0})


def test_the_shipped_demo_sweep_config_is_ready_to_run():
    from pathlib import Path

    from pipeline.settings import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "sweep_demo.yaml", SweepConfig)
    assert cfg.trial_gpus == 0 and cfg.synthetic.enabled and cfg.detector.vitad.encoder.random_init
    assert not cfg.storage_path.startswith("s3://") and not cfg.output_prefix.startswith("s3://")
