"""The monitoring mixin: dashboards, Prometheus rules and deployment files, generated from Python."""
