"""``parallelism-exporter serve``: the parts wired into one process, run until a signal.

The daemon (probe rounds), the services watcher, the web server with the metrics, the
status pages and the lifecycle API; SIGHUP reloads, SIGTERM and SIGINT stop cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter import __version__
from exporter.config.loader import load_config
from exporter.config.webconfig import load_web_config
from exporter.export.exposition import TelemetryApp
from exporter.logs import log_kv, setup_logging
from exporter.pages.handlers import PAGES, StatusPages
from exporter.serve.daemon import Daemon
from exporter.serve.malloc import thread_caches_off, use_one_malloc_arena
from exporter.services.collector import ServiceCollector
from exporter.web.listen import check_web_flags, start_web_server

log = logging.getLogger(__name__)


def telemetry_app(daemon: Daemon) -> TelemetryApp:
    """Our families plus the usual process_/python_ ones, as every exporter has."""
    live = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=live)
    live.register(ServiceCollector(daemon.services.snapshot))  # its own window, read like the process collector's
    return TelemetryApp(daemon.snapshot, live)


def serve(args: argparse.Namespace) -> int:
    """``parallelism-exporter serve``: returns the exit code."""
    setup_logging(args.log_level, args.log_format)
    config = load_config(args.config_file)
    web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    check_web_flags(args.listen_address, args.telemetry_path, PAGES)  # as the web server will, before anything starts
    if args.config_check:
        print(f"config OK: {args.config_file or '(built-in defaults)'}"
              + (f"; web config OK: {args.web_config_file}" if web_config else ""))
        return 0
    one_malloc_arena = use_one_malloc_arena()  # before the first thread starts
    daemon = Daemon(config, args.config_file, args.history_limit, args.history_file)
    pages = StatusPages(daemon, telemetry_path=args.telemetry_path, web_config=web_config,
                        config_path=args.config_file)
    stop = threading.Event()
    server = start_web_server(args.listen_address, telemetry_app(daemon),
                              telemetry_path=args.telemetry_path, web_config=web_config,
                              is_ready=daemon.ready.is_set, reload=daemon.reload, quit=stop.set,
                              enable_lifecycle=args.enable_lifecycle, max_requests=args.max_requests,
                              routes=pages.routes())
    log_kv(log, logging.INFO, "starting", version=__version__, telemetry=server.url + args.telemetry_path,
           interpreters=",".join(i.name for i in config.interpreter_list()),
           malloc_arenas="1" if one_malloc_arena else "default",
           malloc_thread_caches="off" if thread_caches_off() else "default")
    reload_wanted = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_wanted.set())
    daemon.start()
    while not stop.wait(0.2):
        if reload_wanted.is_set():
            reload_wanted.clear()
            daemon.reload()  # never raises: a failed reload is logged and exported
    log_kv(log, logging.INFO, "shutting down")
    daemon.stop()
    server.shutdown()
    return 0
