"""A sample application for the parallelism gate (docs/catch-regressions-before-upgrade.md)."""
