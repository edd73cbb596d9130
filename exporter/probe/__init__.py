"""The parent side of a probe: starting the runner, reading the kernel's counters around
every timed window, containment of the runner's process tree, its memory limit, and
waiting for a quiet host.
"""
