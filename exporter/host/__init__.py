"""Reading the host: CPUs, cgroups, the kernel's counters and /proc.

Facts of the machine in the machine's own terms; nothing of our vocabulary.
"""
