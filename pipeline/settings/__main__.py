"""``python -m pipeline.settings``: every key of the three programs with its type, default and documentation."""

from . import EvalConfig, JobConfig, SweepConfig, describe

print("# python jobs/musc.py (JobConfig)")
print(describe(JobConfig))
print("\n# python -m pipeline.evaluation (EvalConfig)")
print(describe(EvalConfig))
print("\n# python jobs/sweep.py (SweepConfig)")
print(describe(SweepConfig))
