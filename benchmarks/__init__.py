"""Benchmarks: speed figures as JSON lines (never timed tests). Run scripts from the repository root."""
