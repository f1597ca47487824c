"""Config validation: every bad key, type and value is rejected with a message naming the key."""

import dataclasses
from pathlib import Path

import pytest

from pipeline.settings import (
    ConfigError,
    DetectorConfig,
    EvalConfig,
    JobConfig,
    SweepConfig,
    config_from_dict,
    describe,
    load_config,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("path", sorted(CONF.glob("eval_*.yaml")), ids=lambda p: p.name)
def test_shipped_eval_configs_load(path):
    cfg = load_config(path, EvalConfig)
    assert isinstance(cfg, EvalConfig)


@pytest.mark.parametrize("name", ["local.yaml", "nightly.yaml"])
def test_shipped_job_configs_load(name):
    cfg = load_config(CONF / name, JobConfig)
    assert cfg.inputs.manifest or cfg.inputs.uris


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'musc\.topmin_maxx' \(did you mean 'musc\.topmin_max'\?\)"):
        config_from_dict(EvalConfig, {"musc": {"topmin_maxx": 0.3}})


def test_unknown_top_level_key_lists_known_keys():
    with pytest.raises(ConfigError, match="unknown config key 'zzz'.*known keys"):
        config_from_dict(EvalConfig, {"zzz": 1})


@pytest.mark.parametrize(
    "data,match",
    [
        ({"backbone": {"image_size": "big"}}, r"'backbone\.image_size': expected an integer"),
        ({"backbone": {"family": "keras"}}, r"'backbone\.family': 'keras' is not one of"),
        ({"musc": {"aggregation_degrees": [1, 2]}}, r"'musc\.aggregation_degrees': must be odd"),
        ({"musc": {"topmin_max": 1.5}}, r"'musc\.topmin_max'"),
        ({"musc": {"topmin_min": 0.4}}, r"'musc\.topmin_min'"),
        ({"musc": {"rscin_windows": [0]}}, r"'musc\.rscin_windows'"),
        ({"musc": {"rscon_windows": [0, 7]}}, r"'musc\.rscon_windows': windows must be >= 1"),
        ({"musc": {"snamd_temperature": 0}}, r"'musc\.snamd_temperature': must be a positive number or 'auto'"),
        ({"musc": {"snamd_temperature": "hot"}}, r"'musc\.snamd_temperature': 'hot' matches no allowed type"),
        ({"divide_num": 0}, r"'divide_num': must be >= 1"),
        ({"backbone": {"mean": [0.5, 0.5]}}, r"'backbone\.mean': needs 3 values"),
        ({"backbone": {"device": "tpu"}}, r"'backbone\.device'"),
        ({"backbone": {"random_init": "yes"}}, r"'backbone\.random_init': expected true or false"),
        ({"musc": {"aggregation_degrees": [1, "3"]}}, r"'musc\.aggregation_degrees\[1\]': expected an integer"),
        ({"backbone": []}, r"'backbone': expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(EvalConfig, data)


def test_overrides_and_int_to_float():
    cfg = config_from_dict(EvalConfig, {"musc": {"topmin_max": 1}}, ["divide_num=3", "musc.rscin_windows=[1, 8, 9]"])
    assert cfg.divide_num == 3 and cfg.musc.rscin_windows == [1, 8, 9]
    assert isinstance(cfg.musc.topmin_max, float)
    with pytest.raises(ConfigError, match="key.path=value"):
        config_from_dict(EvalConfig, {}, ["divide_num"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", EvalConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad, EvalConfig)


@pytest.mark.parametrize("name", ["sweep_vitad.yaml", "sweep_dinomaly.yaml", "sweep_sowa.yaml"])
def test_shipped_sweep_configs_load_and_every_sample_is_a_valid_detector(name):
    import random

    from pipeline.tuning.sweep import trial_config

    cfg = load_config(CONF / name, SweepConfig)
    assert cfg.search_space and cfg.detector.kind in name
    rng = random.Random(0)
    for _ in range(5):  # values drawn from each dimension make valid detector configs
        params = {k: rng.choice(s["values"]) if s["type"] == "choice" else s["low"] for k, s in cfg.search_space.items()}
        assert isinstance(trial_config(cfg.detector, params, cfg.evaluations), DetectorConfig)


@pytest.mark.parametrize("root", [EvalConfig, JobConfig, SweepConfig])
def test_every_key_is_documented(root):
    text = describe(root)

    def walk(cls, prefix=""):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{prefix}{f.name} has no documentation"
            assert f"{prefix}{f.name}" in text
            if dataclasses.is_dataclass(f.default_factory):
                walk(f.default_factory, f"{prefix}{f.name}.")

    walk(root)


def test_described_defaults_are_those_of_the_section():
    text = describe(SweepConfig)
    assert "detector.sowa.clip.name (str, default 'ViT-L-14-336')" in text
    assert "detector.vitad.encoder.image_size (int, default 256)" in text
    assert "auxiliary.root (str, default 'auxiliary_data')" in text
