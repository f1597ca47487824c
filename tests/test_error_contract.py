"""One error contract for the job, the evaluation and the sweep: a user's mistake is one line on
stderr naming the fix, exit code 2, nothing written; the same code on every run of the same mistake."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.evaluation.benchmark import main as evaluate_main
from pipeline.job.run import main as job_main
from pipeline.settings import JobConfig, load_config
from pipeline.tuning.sweep import main as sweep_main

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = {"job": (job_main, "conf/local.yaml"), "evaluation": (evaluate_main, "conf/eval_demo.yaml"),
            "sweep": (sweep_main, "conf/sweep_demo.yaml")}


def refused(program: str, capsys, *args: str) -> str:
    main, conf = PROGRAMS[program]
    code = main(["--config", str(REPO / conf), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_key_typo_is_one_line_naming_the_key(program, capsys):
    key = {"job": "musc.topmin_mx", "evaluation": "musc.topmin_mx", "sweep": "trial_cpu"}[program]
    assert "did you mean" in refused(program, capsys, f"{key}=1")


@pytest.mark.parametrize("program", PROGRAMS)
def test_broken_yaml_is_one_line_with_its_position(program, tmp_path, capsys):
    conf = tmp_path / "broken.yaml"
    conf.write_text("musc:\n  aggregation_degrees: [1, 3\n  topmin_max: 0.3\n")
    main, _ = PROGRAMS[program]
    assert main(["--config", str(conf)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not valid YAML at line 3" in err[0], err


@pytest.mark.parametrize("program, key", [("job", "backbone.weights"), ("evaluation", "backbone.weights"),
                                          ("sweep", "detector.vitad.encoder.weights")])
def test_missing_weights_are_one_line_and_nothing_is_written(program, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_init = key.replace("weights", "random_init")
    out = {"job": f"output.prefix={tmp_path}/out", "evaluation": f"output_dir={tmp_path}/out",
           "sweep": f"output_prefix={tmp_path}/out"}[program]
    args = [f"{key}={tmp_path}/missing.safetensors", f"{random_init}=false", out]
    if program == "sweep":
        args += [f"storage_path={tmp_path}/tune"]
    err = refused(program, capsys, *args)
    assert key in err and "missing.safetensors" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "tune").exists()


@pytest.mark.parametrize("program", ["evaluation", "sweep"])
def test_a_dataset_that_is_not_there_is_one_line(program, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = [f"storage_path={tmp_path}/tune", f"output_prefix={tmp_path}/out"] if program == "sweep" else []
    err = refused(program, capsys, f"dataset.root={tmp_path}/nowhere", "synthetic.enabled=false", *extra)
    assert f"dataset.root {tmp_path}/nowhere: no such folder" in err
    (tmp_path / "data" / "a" / "test" / "good").mkdir(parents=True)
    err = refused(program, capsys, f"dataset.root={tmp_path}/data", "dataset.categories=[b]", *extra)
    assert "dataset.categories: ['b'] not in" in err and "available: ['a']" in err


def test_a_split_the_evaluation_refuses_is_one_line_before_any_scoring(tmp_path, capsys):
    """The evaluation's split checks (data/checks.py) and its readers are the same contract: a truncated
    image or a category without images was a traceback with exit 1."""
    from pipeline.data.synthetic import generate_dataset

    generate_dataset(str(tmp_path / "data"), categories=["weave"], n_train=0, n_test_good=3, n_test_defect=2,
                     image_size=64)
    out = [f"dataset.root={tmp_path}/data", "synthetic.enabled=false", f"output_dir={tmp_path}/out"]
    truncated = tmp_path / "data" / "weave" / "test" / "good" / "000.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    assert f"{truncated} does not decode" in refused("evaluation", capsys, *out)
    for image in (tmp_path / "data" / "weave" / "test").rglob("*.png"):
        image.unlink()
    assert "no images in" in refused("evaluation", capsys, *out)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, says", [
    ("2026-13-45", "must be a date YYYY-MM-DD (e.g. 2026-11-22), got '2026-13-45'"),  # was a YAML traceback
    ("20261122", "expected a string, got 20261122: The batch's date (YYYY-MM-DD)"),  # named no format
    ("2026-1122", "must be a date YYYY-MM-DD"),
])
def test_a_bad_run_date_names_the_format(value, says, capsys):
    assert says in refused("job", capsys, f"run_date={value}")


def test_dates_stay_the_text_written_in_files_and_overrides(tmp_path):
    conf = tmp_path / "job.yaml"
    conf.write_text("run_date: 2026-11-22\ninputs:\n  uris: [/data/in]\n  group_template: '{line}/{name}'\n")
    assert load_config(conf, JobConfig).run_date == "2026-11-22"
    cfg = load_config(conf, JobConfig, ["inputs.group_template={line}/{product}/{_cam}/{name}", "run_date=2026-11-23"])
    assert (cfg.inputs.group_template, cfg.run_date) == ("{line}/{product}/{_cam}/{name}", "2026-11-23")
    assert load_config(conf, JobConfig, ["inputs.group_template={name}"]).inputs.group_template == "{name}"
    assert load_config(conf, JobConfig, ["musc.aggregation_degrees=[1, 3]"]).musc.aggregation_degrees == [1, 3]


def test_every_layers_error_is_a_user_error():
    from pipeline.data.benchmarks import DatasetError, MissingDataError
    from pipeline.data.checks import SplitError
    from pipeline.data.inputs import InputError
    from pipeline.engine.weights import WeightsError
    from pipeline.job.preflight import JobError
    from pipeline.settings import ConfigError
    from pipeline.storage import StorageError
    from pipeline.tuning.preflight import SweepError
    for error in (DatasetError, MissingDataError, SplitError, InputError, WeightsError, JobError, ConfigError,
                  StorageError, SweepError):
        assert issubclass(error, UserError), error


def test_the_exit_code_is_the_same_on_every_run(tmp_path):
    """The issue saw exit 134 (an abort at interpreter exit) in 3 of 12 runs after the weights check."""
    command = [sys.executable, str(REPO / "jobs" / "musc.py"), "--config", str(REPO / "conf" / "local.yaml"),
               "backbone.random_init=false", f"output.prefix={tmp_path}/out", f"inputs.manifest={tmp_path}/m.csv",
               "demo.enabled=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(3):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "no weights given" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("program, key", [("job", "output.prefix"), ("sweep", "storage_path")])
def test_relative_local_outputs_under_a_working_dir_are_refused(program, key, tmp_path, capsys, monkeypatch):
    """`ray job submit --working-dir` runs the program in Ray's temporary copy: outputs would stay there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}')
    err = refused(program, capsys, f"{key}=outputs/x")
    assert f"{key} outputs/x is relative: under ray job submit --working-dir" in err and f"{key}=$PWD/outputs/x" in err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("program, args, says", [
    ("job", ["backbone.family=timm_cnn", "backbone.name=convnext_tiny", "backbone.layers=[1,4]"],
     "backbone.layers [1, 4] out of range: convnext_tiny has 4 feature levels"),
    ("evaluation", ["backbone.image_size=200"],
     "backbone.image_size 200 is not a multiple of ViT-B-16's patch size 16"),
    ("sweep", ["detector.vitad.encoder.layers=[2,5,8,12]"],
     "detector.vitad.encoder.layers [2, 5, 8, 12] out of range: vit_tiny_patch16_224 has 12 blocks"),
])
def test_layers_the_backbone_does_not_have_are_one_line_before_any_work(program, args, says, tmp_path, capsys,
                                                                        monkeypatch):
    """backbone.layers=[9] on a 4-level CNN passed the checks, started Ray, wrote run.json, then raised
    IndexError in every extraction actor (exit 1); the evaluation wrote its data first, then a traceback."""
    monkeypatch.chdir(tmp_path)  # the shipped configs' relative demo data and outputs would land here
    err = refused(program, capsys, *args, *(["storage_path=tune"] if program == "sweep" else []))
    assert says in err
    assert not list(tmp_path.iterdir())


def test_a_refusal_never_prints_the_password_of_a_uri(capsys):
    """An error names the value the user gave; a URI's user:secret@ stays out of consoles and job logs."""
    err = refused("job", capsys, "run_id=https://reader:S3CRET@images.example.com/night")
    assert "S3CRET" not in err and "https://<redacted>@images.example.com/night" in err


def test_a_logged_warning_never_prints_the_password_of_a_uri():
    """Warnings name inputs, references and verdicts by URI; the programs' log handlers drop its user:secret@."""
    import io
    import logging

    from pipeline.settings.command_line import config_from_command_line

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        config_from_command_line(JobConfig, "test", ["--config", str(REPO / "conf" / "local.yaml")])
        logging.getLogger("pipeline.job.verdicts").warning("verdicts: %s was not scored: left out",
                                                           "https://reader:S3CRET@images.example.com/x.png")
    finally:
        root.removeHandler(handler)
    assert "S3CRET" not in stream.getvalue()
    assert "verdicts: https://<redacted>@images.example.com/x.png was not scored" in stream.getvalue()
