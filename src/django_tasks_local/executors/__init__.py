"""Executors that know nothing of Django tasks: they take callables and return futures."""
