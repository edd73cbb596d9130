"""Prometheus: the collector of the last results, the textfile writer and telemetry app,
and ``probe --push``.
"""
