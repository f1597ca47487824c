"""MuSc zero-shot anomaly scoring: the library behind the Ray jobs."""
