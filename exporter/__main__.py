"""``python -m exporter`` is the ``parallelism-exporter`` command."""

from exporter.cli import main

main()
