"""Benchmarks for django-tasks-local: run ``make bench`` (see docs/benchmarks.md)."""
