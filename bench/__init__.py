"""Benchmark harness: AnySync against restic and borg on the same data (bench/README.md)."""
