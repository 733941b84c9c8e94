"""The pytest plugin of the benchmark suite: the run session (options, plan, records), progress
lines and device names."""
