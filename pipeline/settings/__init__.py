"""Typed, validated settings: one module per program's schema, each section validating its own fields.

``python -m pipeline.settings`` prints every key of the three programs with its type, default and
documentation. Import schemas and the loader from here.
"""

from .backbone import BackboneConfig, ForegroundConfig
from .command_line import config_from_command_line, run_program
from .data import DatasetConfig, SyntheticConfig
from .detectors import (
    DetectorConfig,
    DinomalyConfig,
    SOWAConfig,
    TrainingConfig,
    ViTADConfig,
)
from .evaluation import EvalConfig
from .job import (
    MISSING_SAMPLE,
    ZERO_SHOT_DETECTORS,
    ExtractionConfig,
    FlaggingConfig,
    InputsConfig,
    JobConfig,
    OutputConfig,
    ScoringConfig,
)
from .schema import (
    ConfigError,
    FieldError,
    Section,
    config_from_dict,
    config_to_dict,
    describe,
    identity_view,
    load_config,
    setting,
    validate,
    with_values,
)
from .scorers import AlignmentConfig, MuscConfig, PatchEADConfig
from .sweep import SEARCH_TYPES, PseudoLabelConfig, SchedulerConfig, SweepConfig
from .trends import TrendsConfig

__all__ = [
    "AlignmentConfig", "BackboneConfig", "ConfigError", "DatasetConfig", "DetectorConfig", "DinomalyConfig",
    "EvalConfig", "ExtractionConfig", "FieldError", "FlaggingConfig", "ForegroundConfig", "InputsConfig",
    "JobConfig", "MISSING_SAMPLE", "MuscConfig", "OutputConfig", "PatchEADConfig", "PseudoLabelConfig", "SEARCH_TYPES",
    "SOWAConfig", "SchedulerConfig", "ScoringConfig", "Section", "SweepConfig", "SyntheticConfig",
    "TrainingConfig", "TrendsConfig", "ViTADConfig", "ZERO_SHOT_DETECTORS", "config_from_command_line",
    "config_from_dict",
    "config_to_dict", "describe", "identity_view", "load_config", "run_program", "setting", "validate", "with_values",
]
