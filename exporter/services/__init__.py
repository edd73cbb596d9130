"""The passive watcher of running Python services: reads /proc (no ptrace), groups
processes, judges each window, and exports ``pyparallel_service_*``. It never starts a process.
"""
