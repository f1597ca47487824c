"""The nightly Ray job: preflight, first stage over shards, subsets, groups, the run's records (see ``run``)."""
