"""The house rules that keep the layout readable and runs resumable across code moves.

- A run's objects keep their names (a run in flight resumes after an upgrade): pinned literally,
  values taken from the code before the package restructure; issue 14 renamed the partition key
  ``group`` (reserved in SQL) to ``group_name``, together with issue 12's new run identities.
- A run's identity (config hash) of the shipped configs is pinned the same way, so renaming a key
  or moving a section cannot silently start new runs. The values change only on purpose: issue 12's
  data plan (subsets before extraction, PLAN_VERSION 2) and int8 feature shards made them new.
- Packages import only downward (errors < settings, storage < data, engine < reporting < evaluation <
  detectors < job < tuning), there are no import cycles, and no module grows past 400 lines.
"""

import ast
from pathlib import Path

import pytest

from pipeline.job.identity import config_hash
from pipeline.job.layout import RunLayout
from pipeline.settings import (
    JobConfig,
    PatchEADConfig,
    SOWAConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipeline"
LAYERS = ["errors", "settings", "storage", "data", "engine", "reporting", "evaluation", "detectors", "job", "tuning"]
SAME_LEVEL = {("data", "engine"), ("engine", "data")}  # neither imports the other today; both sit on storage


def test_run_object_names_are_unchanged():
    run = RunLayout("s3://factory/musc", "2026-11-22-4eb497fd", "2026-11-22")
    base = "s3://factory/musc"
    prefix = f"{base}/runs/2026-11-22-4eb497fd"
    group = "line 1/cap A"
    assert run.scores(group) == (f"{base}/scores/run_date=2026-11-22/group_name=line%201%2Fcap%20A/"
                                 "part-2026-11-22-4eb497fd.parquet")
    assert run.heatmap(group, "s3://factory/in/line 1/cap A/img_007.png") == (
        f"{base}/heatmaps/run_date=2026-11-22/group_name=line%201%2Fcap%20A/run_id=2026-11-22-4eb497fd/"
        "cap A_img_007-fd5b1c67.png")
    assert run.heatmap("solo", "frame.png") == (
        f"{base}/heatmaps/run_date=2026-11-22/group_name=solo/run_id=2026-11-22-4eb497fd/frame-1870aaba.png")
    assert run.metrics_table == f"{base}/metrics/run_date=2026-11-22/part-2026-11-22-4eb497fd.parquet"
    assert run.group_summary(group) == f"{prefix}/groups/line%201%2Fcap%20A.json"
    assert run.subset(group, 3) == f"{prefix}/subsets/line%201%2Fcap%20A/subset-00003.parquet"
    assert run.features == f"{prefix}/features"
    assert run.detections == f"{prefix}/detections"  # trained detectors: records and scores per shard
    assert (run.record, run.manifest, run.success, run.metrics_text) == (
        f"{prefix}/run.json", f"{prefix}/manifest.json", f"{prefix}/_SUCCESS", f"{prefix}/metrics.txt")
    # added for issue 13: the empty object that keeps groups text, and names too long for one segment
    assert run.text_group_marker == (f"{base}/scores/run_date=2026-11-22/group_name=~group-is-text/"
                                     "types-2026-11-22-4eb497fd.parquet")
    assert run.group_summary("検" * 40) == f"{prefix}/groups/{'%E6%A4%9C' * 20}~8adf682e0cd0e1bd.json"
    assert run.heatmap("g", f"s3://f/in/{'x' * 240}.png").endswith(f"/in_{'x' * 184}-1b0a847d.png")


# changed on purpose for issue 21: the job's MuSc defaults moved to snamd + match_radius auto + rscon
@pytest.mark.parametrize("name, expected", [
    ("local.yaml", "c7e2bc260002da85390ec89d6d9df8d72d9750835a90cb9bf3770e8c55f5012c"),
    ("nightly.yaml", "3040384f7ecaa3347e7b77de3b9c9c885bf79b992bd13ab1f8785f5ff515a796"),
])
def test_shipped_configs_keep_their_run_identity(name, expected):
    assert config_hash(load_config(REPO / "conf" / name, JobConfig)) == expected


def test_a_renamed_key_is_read_under_its_former_name_and_hashed_under_it(caplog):
    old = config_from_dict(PatchEADConfig, {"fewshot_prompts": 2})
    assert old.reference_images == 2 and "now 'reference_images'" in caplog.text
    assert config_from_dict(SOWAConfig, {"shots": 3}).reference_images == 3  # checkpoints written before
    with pytest.raises(ValueError, match="former name"):
        config_from_dict(PatchEADConfig, {"fewshot_prompts": 2, "reference_images": 2})
    job = config_from_dict(JobConfig, {"inputs": {"uris": ["x"]}, "patchead": {"reference_images": 2}})
    assert "reference_images" in config_to_dict(job)["patchead"]
    from pipeline.settings import identity_view

    assert identity_view(job)["patchead"]["fewshot_prompts"] == 2


def test_a_key_added_later_enters_the_run_identity_only_when_set():
    from pipeline.settings import identity_view, with_values

    base = config_from_dict(JobConfig, {"inputs": {"uris": ["x"]}})
    assert "reference_runs" not in identity_view(base)  # every earlier config keeps its run id
    assert identity_view(with_values(base, {"reference_runs": 2}))["reference_runs"] == 2
    assert config_hash(with_values(base, {"reference_runs": 2})) != config_hash(base)


def _imports(path: Path, module: str) -> set[str]:
    """pipeline modules imported by one module (relative imports resolved)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.update(t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t.startswith("pipeline"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline"))
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for path in PIPELINE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_packages_import_downward_only_and_without_cycles():
    modules = _modules()
    graph = {m: {t for t in _imports(p, m) if t in modules and t != m} for m, p in modules.items()}
    layer = {name: i for i, name in enumerate(LAYERS)}
    for module, targets in graph.items():
        for target in targets:
            a, b = module.split(".")[1], target.split(".")[1]
            if a != b and (a, b) not in SAME_LEVEL:
                assert layer[b] < layer[a], f"{module} imports {target}: {a} may not depend on {b}"
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path[path.index(nxt):] + [nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_top_level_holds_packages_storage_and_errors_and_modules_stay_small():
    top = sorted(p.name for p in PIPELINE.iterdir() if not p.name.startswith((".", "__pycache__")))
    modules = ("storage", "errors")  # one module each: the URIs, and the error contract under every layer
    assert top == sorted(["__init__.py", *(f"{name}.py" for name in modules),
                          *(name for name in LAYERS if name not in modules)])
    for path in PIPELINE.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 400, f"{path.relative_to(REPO)} has {lines} lines"
