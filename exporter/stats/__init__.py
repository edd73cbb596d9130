"""Measurement arithmetic: pairs, speedup and its interval, free cores, the rank test.

Pure arithmetic on numbers already measured, standard library only: the runner imports it
inside the interpreter under test, the parent and the gate on this side.
"""
