"""``jobs/musc.py --plan`` (issue 24 item 1): the run's plan and price, the run's refusals, and nothing
written, no Ray started, no model loaded."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.data.synthetic import encode_png
from pipeline.job.cost import GpuRate, msm_flops, night_cost, night_storage
from pipeline.job.run import main
from pipeline.settings import JobConfig, load_config

REPO = Path(__file__).resolve().parents[1]
BACKBONE = {"family": "open_clip", "name": "ViT-B-16", "random_init": True, "image_size": 224}  # config only
PNG = encode_png(np.zeros((8, 8, 3), dtype=np.uint8))
GROUPS = {"a": 10, "b": 3, "c": 1}  # images per group folder


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Neither the plan nor a refused run may start Ray."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init called")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def batch(tmp_path):
    """Inputs in three group folders, two known-good references per group, and a config of subsets of at
    most 4 images in shards of at most 2."""
    for root, counts in (("in", GROUPS), ("golden", {g: 2 for g in GROUPS})):
        for group, n in counts.items():
            (tmp_path / root / group).mkdir(parents=True)
            for i in range(n):
                (tmp_path / root / group / f"{i:02d}.png").write_bytes(PNG)
    conf = tmp_path / "job.yaml"
    conf.write_text(json.dumps({"inputs": {"uris": [str(tmp_path / "in")]}, "output": {"prefix": str(tmp_path / "out")},
                                "references": str(tmp_path / "golden"), "backbone": BACKBONE, "run_date": "2026-12-01",
                                "extraction": {"shard_size": 2, "actors": 2, "num_gpus_per_actor": 1},
                                "scoring": {"max_subset_size": 4, "num_gpus_per_task": 1}}))
    return tmp_path, conf


def plan(conf: Path, capsys, *extra: str) -> tuple[str, dict]:
    """Run ``--plan`` with ``--plan-json``; returns the printout and the JSON."""
    out = conf.parent / "plan.json"
    assert main(["--config", str(conf), "--plan-json", str(out), *extra]) == 0
    return capsys.readouterr().out, json.loads(out.read_text())


def flat(printout: str) -> str:
    """The printout's prose with its line wrapping undone."""
    return " ".join(printout.split())


def msm_seconds(cfg: JobConfig, members: int) -> float:
    """Mutual scoring of one batch, from the FLOP count (full matching: match_radius auto's upper bound)."""
    grid = cfg.backbone.image_size // 16
    return msm_flops(members, (grid, grid), [768] * 4, 1, None) / (GpuRate().tflops * 1e12 * GpuRate().msm_efficiency)


def test_the_plan_counts_and_prices_a_hand_built_batch(batch, capsys):
    tmp_path, conf = batch
    printout, night = plan(conf, capsys)
    groups = {g["group"]: g for g in night["groups"]}
    # a: 10 images -> ceil(10/4) = 3 subsets (4, 3, 3), each in ceil(size/2) shards: 2 + 2 + 2;
    # b: 3 images -> one subset in 2 shards; c: one image and its references -> one subset, one shard
    counts = {g: (v["images"], v["subsets"], v["shards"], v["references"], v["reference_shards"])
              for g, v in groups.items()}
    assert counts == {"a": (10, 3, 6, 2, 1), "b": (3, 1, 2, 2, 1), "c": (1, 1, 1, 2, 1)}
    cfg = load_config(conf, JobConfig)
    cost = night_cost(cfg)
    extract = cost.extract_seconds
    by_hand = {"a": 12 * extract + msm_seconds(cfg, 6) + 2 * msm_seconds(cfg, 5),
               "b": 5 * extract + msm_seconds(cfg, 5), "c": 3 * extract + msm_seconds(cfg, 3)}
    for group, seconds in by_hand.items():
        assert groups[group]["gpu_hours"] * 3600 == pytest.approx(seconds, rel=1e-9)
        storage = night_storage(cfg, cost, GROUPS[group], len(PNG), 0.05).values()  # every file is len(PNG) bytes
        assert groups[group]["bytes_read"] == pytest.approx(sum(t.read for t in storage))
        assert groups[group]["bytes_written"] == pytest.approx(sum(t.written for t in storage))
    assert night["totals"]["gpu_hours_cost_model"] == pytest.approx(cost.gpu_hours(14))
    # two actors of one GPU: extraction of 20 images (and references) on 2 GPUs, then 5 subsets on the same 2
    cluster = night["cluster"]
    assert cluster["gpus"] == 2 and cluster["extraction_s"] == pytest.approx(20 * extract / 2)
    subsets = [msm_seconds(cfg, m) for m in (6, 5, 5, 5, 3)]
    assert cluster["scoring_s"] == pytest.approx(max(sum(subsets) / 2, max(subsets)))
    # the printout shows the JSON's figures
    for name, g in groups.items():
        row = re.search(rf"^  {name}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", printout, re.M)
        assert row and tuple(map(int, row.groups())) == counts[name][:4], printout
    total = re.search(r"^  total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", printout, re.M)
    assert tuple(map(int, total.groups())) == (14, 5, 9, 6)
    assert f"the cost model's at full subsets: {night['totals']['gpu_hours_cost_model']:.3g}" in printout
    assert "match_radius auto priced as full matching" in flat(printout) and "num_gpus_per_actor 1" in flat(printout)
    assert "and 3 shards of references (12 in all;" in printout


def test_full_subsets_without_references_cost_what_the_cost_model_says(batch, capsys):
    tmp_path, conf = batch
    _, night = plan(conf, capsys, "references=null", "scoring.max_subset_size=5")  # a: 2 x 5, b: 3, c: 1
    cost = night_cost(load_config(conf, JobConfig, ["references=null", "scoring.max_subset_size=5"]))
    a = next(g for g in night["groups"] if g["group"] == "a")
    assert (a["subsets"], a["references"]) == (2, 0)
    assert a["gpu_hours"] == pytest.approx(cost.gpu_hours(10), rel=1e-9)  # full subsets: the model's figure
    assert night["totals"]["gpu_hours"] < cost.gpu_hours(14) == pytest.approx(night["totals"]["gpu_hours_cost_model"])


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_quick_start_plan_writes_nothing_and_names_the_demo_batch(tmp_path, capsys, monkeypatch):
    """The README's quick-start config on a fresh clone: the demo batch is planned, not generated."""
    monkeypatch.chdir(tmp_path)  # demo_data/ and outputs/ are relative: a fresh folder
    assert main(["--config", str(REPO / "conf" / "local.yaml"), "--plan"]) == 0
    printout = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert re.search(r"^  total\s+64\s+4\s+4\s+0\s", printout, re.M), printout
    assert "the plan names its 64 test images from the generator's config and writes none" in flat(printout)


def test_the_plan_writes_nothing_on_s3_and_says_what_it_could_not_check(s3_bucket, tmp_path, capsys):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for group in ("a", "b"):
        for i in range(3):
            fs.pipe(f"{s3_bucket}/in/{group}/{i}.png", PNG)
    before = sorted(fs.find(s3_bucket))
    conf = tmp_path / "job.yaml"
    conf.write_text(json.dumps({"inputs": {"uris": [f"s3://{s3_bucket}/in"]}, "backbone": BACKBONE,
                                "output": {"prefix": f"s3://{s3_bucket}/out"}}))
    printout, night = plan(conf, capsys)
    fs.invalidate_cache()
    assert sorted(fs.find(s3_bucket)) == before
    assert night["totals"]["images"] == 6 and night["state"] == "new"
    assert "write permission cannot be tested on object storage without writing" in flat(printout)
    missing = ["output.prefix=s3://no-such-bucket-musc/out"]
    assert_same_refusal(conf, capsys, missing, "output.prefix s3://no-such-bucket-musc/out: bucket "
                                               "s3://no-such-bucket-musc does not exist")


def assert_same_refusal(conf: Path, capsys, overrides: list[str], expected: str) -> None:
    """The real run and the plan exit 2 with the same one line."""
    lines = []
    for extra in ([], ["--plan"]):
        assert main(["--config", str(conf), *extra, *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        lines.append(err)
    assert lines[0] == lines[1] and expected in lines[0], lines


@pytest.mark.parametrize("case", ["bad key", "missing input folder", "duplicate names", "output inside input",
                                  "bad backbone layer"])
def test_a_refused_night_is_refused_by_the_plan_with_the_same_line(batch, capsys, case):
    tmp_path, conf = batch
    manifest = tmp_path / "twice.csv"
    manifest.write_text(f"uri\n{tmp_path}/in/a/00.png\n{tmp_path}/in/../in/a/00.png\n")
    overrides, expected = {
        "bad key": (["scoring.max_subset_sise=3"], "max_subset_sise"),
        "missing input folder": ([f"inputs.uris=[{tmp_path}/nowhere]"], "input location not found"),
        "duplicate names": (["inputs.uris=null", f"inputs.manifest={manifest}", "references=null"],
                            "lists 1 image(s) more than once"),
        "output inside input": ([f"output.prefix={tmp_path}/in/out"], "lies where inputs.uris"),
        "bad backbone layer": (["backbone.layers=[3,30]"], "backbone.layers [3, 30] out of range"),
    }[case]
    assert_same_refusal(conf, capsys, overrides, expected)
    assert not (tmp_path / "out").exists() and not (tmp_path / "plan.json").exists()


def test_a_plan_json_that_cannot_be_written_is_refused_before_any_work(batch, capsys):
    tmp_path, conf = batch
    (tmp_path / "report.txt").write_text("a file")
    for target, expected in ((tmp_path, "is a folder; name a file"), (tmp_path / "report.txt" / "plan.json",
                                                                       "report.txt is a file, not a folder")):
        assert main(["--config", str(conf), "--plan-json", str(target)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and expected in captured.err  # refused before the plan is printed


def test_no_model_is_loaded_and_weights_are_only_checked_whole(batch, capsys, monkeypatch):
    tmp_path, conf = batch
    weights = tmp_path / "clip.safetensors"
    save_file({"w": torch.zeros(4)}, str(weights))
    import open_clip

    import pipeline.engine.backbones as backbones
    import pipeline.engine.weights as weights_module

    def loaded(*args, **kwargs):
        raise AssertionError("a model or its weights were loaded")

    for module, name in ((backbones, "build_backbone"), (weights_module, "read_state_dict"),
                         (weights_module, "configured_weights"), (weights_module, "fetch_weights"),
                         (open_clip, "create_model"), (open_clip, "create_model_and_transforms"), (torch, "load")):
        monkeypatch.setattr(module, name, loaded)
    backbone = json.dumps({**BACKBONE, "random_init": False, "weights": str(weights)})
    printout, night = plan(conf, capsys, f"backbone={backbone}")
    assert f"backbone.weights {weights}: present and whole" in flat(printout) and night["totals"]["images"] == 14
    weights.write_bytes(weights.read_bytes()[:-2])  # truncated: the run's refusal, also without loading it
    assert_same_refusal(conf, capsys, [f"backbone={backbone}"], f"backbone.weights {weights}: truncated")


def test_the_plan_never_prints_the_password_of_a_uri(batch, capsys, monkeypatch):
    """The run's manifest and errors drop a URI's user:secret@; the plan's printout and JSON must too."""
    import pipeline.job.preflight as preflight

    monkeypatch.setattr(preflight, "check_weights", lambda *args, **kwargs: None)  # no server behind the URI
    _, conf = batch
    uri = "https://reader:S3CRET@weights.example.com/clip.safetensors"
    printout, night = plan(conf, capsys, f"backbone={json.dumps({**BACKBONE, 'random_init': False, 'weights': uri})}")
    assert "S3CRET" not in printout and "S3CRET" not in json.dumps(night)
    assert "backbone.weights https://<redacted>@weights.example.com/clip.safetensors: present" in flat(printout)


def test_a_resumed_or_finished_run_is_planned_as_such(batch, capsys):
    tmp_path, conf = batch
    _, night = plan(conf, capsys)
    run = tmp_path / "out" / "runs" / night["run_id"]
    run.mkdir(parents=True)
    record = {"run_id": night["run_id"], "run_date": "2026-12-01", "config_hash": None, "inputs": None}
    from pipeline.data.inputs import list_images
    from pipeline.job.identity import config_hash, inputs_fingerprint

    cfg = load_config(conf, JobConfig)
    records = list_images(str(tmp_path / "in"))
    record.update(config_hash=config_hash(cfg), inputs={"count": 14, "fingerprint": inputs_fingerprint(records)})
    (run / "run.json").write_text(json.dumps(record))
    (run / "features").mkdir()
    (run / "features" / "shard-00000.parquet").write_bytes(b"")
    printout, night = plan(conf, capsys)
    assert night["state"] == "resumes" and "1 of 12 shards, 0 of 5 subsets and 0 of 3 groups done" in flat(printout)
    (run / "_SUCCESS").write_bytes(b"")
    printout, night = plan(conf, capsys)
    assert night["state"] == "completed" and night["groups"] == [] and "the run would do nothing" in flat(printout)
    assert len(list(run.rglob("*"))) == 4  # run.json, features/, its shard, _SUCCESS: nothing added
