"""python-parallelism-exporter: measure how well this Python runs CPU-bound work in parallel.

This package's ``__init__`` and the runner-side modules (``workloads``, ``runner``) use only
the standard library, because the runner is imported by other interpreters (for example a
free-threaded 3.13t build) that may have none of our dependencies installed.
"""

__version__ = "0.1.0"
