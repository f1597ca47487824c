"""Ray Tune sweeps of the trained detectors and the pseudo-normal training sets they can use."""
