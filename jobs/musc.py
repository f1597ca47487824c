"""Entry point of the nightly MuSc job, for ``ray job submit`` and for one machine.

    python jobs/musc.py --config conf/local.yaml
    ray job submit --working-dir . -- python jobs/musc.py --config conf/nightly.yaml run_date=2026-11-22

Everything lives in ``pipeline.job``; this file only makes the uploaded working directory's
``pipeline`` package importable (``ray job submit --working-dir`` runs it from there) and exits with
the job's code: 0 done, 1 a stage failed beyond its retries, 2 the config or inputs cannot work.
"""

from _entry import run

if __name__ == "__main__":
    run("pipeline.job.run")
