"""Mistakes the job refuses before any work, in one line with exit code 2, leaving nothing behind:
outputs where the inputs are listed, output locations that cannot be written, a Ray address that
does not answer, and weights that are missing or truncated (a trained detector's encoder's too)."""

import json
import socket

import pytest
import torch
from safetensors.torch import save_file

from pipeline.data.synthetic import generate_dataset
from pipeline.job.preflight import JobError, check_present, preflight
from pipeline.job.run import main
from pipeline.settings import JobConfig, config_from_dict

BACKBONE = {"family": "timm_cnn", "name": "resnet18", "random_init": True, "image_size": 64, "layers": [1, 2]}


@pytest.fixture
def inputs(tmp_path):
    """A folder of a few images in two groups (tmp/in/<group>/*.png)."""
    generate_dataset(str(tmp_path / "gen"), categories=["weave"], n_train=0, n_test_good=4, n_test_defect=0,
                     image_size=64)
    for group in ("a", "b"):
        (tmp_path / "in" / group).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "in" / group / f"{i}.png").write_bytes(
                (tmp_path / "gen" / "weave" / "test" / "good" / f"00{i}.png").read_bytes())
    return tmp_path / "in"


def refused(tmp_path, capsys, *overrides: str) -> str:
    """Run the job's command line; assert exit 2 with one line on stderr and return that line."""
    conf = tmp_path / "job.yaml"
    conf.write_text(json.dumps({"backbone": BACKBONE}))
    assert main(["--config", str(conf), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_outputs_where_the_inputs_are_listed_are_refused(inputs):
    """An output prefix inside the input prefix made the next night score the previous night's heat maps."""
    for uris in ([str(inputs)], [f"{inputs}/"], [f"{inputs}/**/*.png"]):
        cfg = config_from_dict(JobConfig, {"inputs": {"uris": uris}, "output": {"prefix": f"{inputs}/musc"},
                                           "backbone": BACKBONE})
        with pytest.raises(JobError, match=f"output.prefix {inputs}/musc lies where inputs.uris .* lists images"):
            preflight(cfg)
    beside = config_from_dict(JobConfig, {"inputs": {"uris": [f"{inputs}/*/*.png"]},
                                          "output": {"prefix": f"{inputs}/musc"}, "backbone": BACKBONE})
    assert len(preflight(beside)[0]) == 4  # this glob cannot reach heat maps four folders down
    outside = config_from_dict(JobConfig, {"inputs": {"uris": [str(inputs)]},
                                           "output": {"prefix": f"{inputs}-musc"}, "backbone": BACKBONE})
    assert len(preflight(outside)[0]) == 4


def test_outputs_inside_the_inputs_through_a_symbolic_link_are_refused(inputs, tmp_path):
    """in/x -> in made output.prefix in/x/out pass the check: the next night listed its heat maps."""
    (inputs / "x").symlink_to(inputs)
    (tmp_path / "up").mkdir()
    for uris, prefix in (([str(inputs)], f"{inputs}/x/out"), ([f"{inputs}/**/*.png"], f"{inputs}/x/out"),
                         ([str(inputs)], f"{tmp_path}/up/../in/out")):
        cfg = config_from_dict(JobConfig, {"inputs": {"uris": uris}, "output": {"prefix": prefix},
                                           "backbone": BACKBONE})
        with pytest.raises(JobError, match=f"output.prefix {prefix} lies where inputs.uris"):
            preflight(cfg)


def test_output_locations_that_cannot_be_written_are_one_line(inputs, tmp_path, capsys):
    (tmp_path / "report.txt").write_text("a regular file")
    err = refused(tmp_path, capsys, f"inputs.uris=[{inputs}]", f"output.prefix={tmp_path}/report.txt/musc")
    assert f"{tmp_path}/report.txt is a file, not a folder" in err
    # sysfs refuses new files even to root: a read-only location wherever the tests run
    err = refused(tmp_path, capsys, f"inputs.uris=[{inputs}]", "output.prefix=/sys/musc-test-output/nightly")
    assert "output.prefix /sys/musc-test-output/nightly: cannot write in /sys" in err


def test_an_unreachable_ray_address_is_one_line_and_writes_no_run_record(inputs, tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    out = tmp_path / "out"
    err = refused(tmp_path, capsys, f"inputs.uris=[{inputs}]", f"output.prefix={out}", f"ray_address=127.0.0.1:{port}")
    assert f"ray_address 127.0.0.1:{port}: nothing answers there" in err
    assert not out.exists()  # run.json is written only once Ray is reachable


def _weights(tmp_path, name: str = "resnet18.safetensors"):
    from pipeline.engine.backbones import build_backbone
    from pipeline.settings import BackboneConfig

    torch.manual_seed(0)
    model = build_backbone(BackboneConfig(**BACKBONE)).model
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_truncated_weights_are_refused_in_preflight(inputs, tmp_path, capsys, fmt):
    """preflight only looked for the file: a truncated one failed after Ray started, in 306 log lines."""
    path = _weights(tmp_path)
    if fmt == "bin":
        from safetensors.torch import load_file

        torch.save(load_file(str(path)), tmp_path / "resnet18.bin")
        path = tmp_path / "resnet18.bin"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    weights = f"backbone={json.dumps({**BACKBONE, 'random_init': False, 'weights': str(path)})}"
    err = refused(tmp_path, capsys, f"inputs.uris=[{inputs}]", f"output.prefix={tmp_path}/out", weights)
    assert f"backbone.weights {path}: " in err and ("truncated" in err)
    assert not (tmp_path / "out").exists()


def test_a_trained_detectors_encoder_weights_are_checked_in_preflight(inputs, tmp_path, capsys):
    from pipeline.detectors.checkpoint import META_NAME, save_checkpoint
    from pipeline.detectors.registry import build_detector
    from pipeline.settings import DetectorConfig

    det_cfg = config_from_dict(DetectorConfig, {"kind": "vitad", "vitad": {"encoder": {
        "name": "vit_tiny_patch16_224", "image_size": 64, "random_init": True}}})
    checkpoint = tmp_path / "vitad"
    save_checkpoint(build_detector(det_cfg), det_cfg, str(checkpoint))
    meta = json.loads((checkpoint / META_NAME).read_text())  # as trained on weights that are gone now
    meta["config"]["vitad"]["encoder"].update(random_init=False, weights=str(tmp_path / "gone.safetensors"))
    (checkpoint / META_NAME).write_text(json.dumps(meta))
    common = [f"inputs.uris=[{inputs}]", f"output.prefix={tmp_path}/out", "detector=vitad",
              f"detector_checkpoint={checkpoint}"]
    err = refused(tmp_path, capsys, *common)
    assert f"detector_checkpoint {checkpoint}: encoder weights {tmp_path}/gone.safetensors: no such file" in err
    (checkpoint / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:100])
    err = refused(tmp_path, capsys, *common)
    assert f"detector_checkpoint {checkpoint}/model.safetensors: truncated" in err
    assert not (tmp_path / "out").exists()


def test_a_manifest_whose_images_are_missing_is_refused_before_any_work(inputs, tmp_path, capsys):
    """Issue 22 item 1: a manifest whose entries all pointed nowhere was extracted and scored as a night
    of errors. More than inputs.max_missing_fraction of it missing is one line; fewer are rows."""
    manifest = tmp_path / "night" / "manifest.csv"
    manifest.parent.mkdir()
    present = sorted(str(p) for p in inputs.rglob("*.png"))
    manifest.write_text("uri\n" + "".join(f"images/{i}.png\n" for i in range(5)) + "".join(f"{p}\n" for p in present))
    out = tmp_path / "out"
    err = refused(tmp_path, capsys, f"inputs.manifest={manifest}", f"output.prefix={out}")
    missing = f"{manifest.parent}/images/0.png"
    assert f"inputs.manifest {manifest}: 5 of 9 images looked up are missing (e.g. {missing}" in err
    assert "restore them or correct the manifest" in err and not out.exists()
    allowed = config_from_dict(JobConfig, {"inputs": {"manifest": str(manifest), "max_missing_fraction": 0.6},
                                           "output": {"prefix": str(out)}, "backbone": BACKBONE})
    check_present(preflight(allowed)[0], allowed)  # 5 of 9 is not more than 0.6: the missing ones become rows
