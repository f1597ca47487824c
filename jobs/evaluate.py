"""Entry point of the benchmark evaluation (MuSc or PatchEAD on a dataset in a benchmark layout).

    python jobs/evaluate.py --config conf/eval_demo.yaml [key.path=value ...]

The same as ``python -m pipeline.evaluation``; everything lives in ``pipeline.evaluation``.
"""

from _entry import run

if __name__ == "__main__":
    run("pipeline.evaluation.benchmark")
