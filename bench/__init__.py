"""Benchmarks: `make bench` (or `.venv/bin/python bench/run.py [--quick]`) prints a table and writes JSON."""
