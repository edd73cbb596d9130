"""``parallelism-exporter compare``: the upgrade gate. Judges two results documents step by
step and prints its table; exit 1 on a regression and nothing else.
"""
