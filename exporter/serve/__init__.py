"""``parallelism-exporter serve``: the daemon. Probe rounds on a schedule, reloads, the
serving process's malloc, and the wiring of the parts into one process.
"""
