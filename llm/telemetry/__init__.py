"""Metric records and where they go. The schema module imports neither torch nor deepspeed."""
