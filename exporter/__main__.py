"""``python -m exporter`` is the ``parallelism-exporter`` command."""

from exporter.entry import main

main()
