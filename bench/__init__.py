"""Benchmarks: each prints our figures beside the peers' measured in the same run."""
