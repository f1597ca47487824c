"""Entry point of a Ray Tune sweep of a trained detector (ViTAD, Dinomaly).

    python jobs/sweep.py --config conf/sweep_vitad.yaml
    ray job submit --working-dir . -- python jobs/sweep.py --config conf/sweep_dinomaly.yaml

Everything lives in ``pipeline.tuning``; exit code 0 when every trial finished, 1 when some
errored (run the same command again to resume), 2 for a bad config.
"""

from _entry import run

if __name__ == "__main__":
    run("pipeline.tuning.sweep")
