"""The child side: what runs inside the interpreter under test.

The runner reads one request, times the workers in pools of warmed threads, processes,
subinterpreters or one event loop, and writes JSON events back. Standard library only (and
``exporter.stats``): other interpreters, free-threaded builds among them, import it without
any of our dependencies.
"""
