"""``python -m pipeline.evaluation --config FILE [key.path=value ...]``: the benchmark evaluation command."""

import sys

from .benchmark import main

sys.exit(main())
