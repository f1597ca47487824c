"""Entry point of the benchmark evaluation (MuSc or PatchEAD on a dataset in a benchmark layout).

    python jobs/evaluate.py --config conf/eval_demo.yaml [key.path=value ...]

The same as ``python -m pipeline.evaluation``; everything lives in ``pipeline.evaluation``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
