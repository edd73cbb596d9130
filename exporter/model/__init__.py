"""The vocabulary: modes, probe results, the results document and its schema, verdicts,
metric families, snapshots and schedules.

Data types and what they say in words; no execution, no I/O, no configuration. Every other
part reads the model; the model reads only ``exporter.stats`` and ``exporter.host``'s types.
"""
