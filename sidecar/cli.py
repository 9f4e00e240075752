"""Command line of the standalone sidecar: ``durabletask-sidecar`` or ``python -m sidecar``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sidecar.dispatch import DispatchOptions
from sidecar.quoting import BoundedFormatter
from sidecar.security import (
    TOKEN_VARIABLE,
    TlsError,
    TokenError,
    describe_protection,
    exposure_warning,
    load_server_tls,
    load_token,
)
from sidecar.server import DEFAULT_MAX_MESSAGE_SIZE, SidecarServer
from sidecar.store import MEMORY, STORE_VARIABLE, SqliteStore, StoreError, open_store
from sidecar.store.urls import redact

DEFAULT_STORE = str(Path(".durabletask") / "sidecar.db")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durabletask-sidecar",
        description="Durable Task sidecar: a TaskHubSidecarService gRPC backend with durable state.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4001, help="port to listen on (default: 4001)")
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_VARIABLE) or DEFAULT_STORE,
        help=f"'{MEMORY}', the path of a SQLite file (created as needed), or a postgresql://user@host:port/db URL "
        f"shared by several sidecars (default: ${STORE_VARIABLE}, else {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=DispatchOptions.orchestration_lease.total_seconds(),
        metavar="SECONDS",
        help="how long a work item handed to a worker stays leased without renewal; the sidecar renews it "
        "while the worker's stream lives, and after a crash another sidecar takes it over once it runs "
        "out (default: %(default)g)",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help=f"largest gRPC message accepted or sent, in bytes (default: {DEFAULT_MAX_MESSAGE_SIZE})",
    )
    parser.add_argument(
        "--turn-max-hold",
        type=float,
        default=DispatchOptions.orchestration_max_hold.total_seconds(),
        metavar="SECONDS",
        help="how long a worker may hold an orchestration turn or entity batch without completing it "
        "before it is handed out again (default: %(default)g)",
    )
    parser.add_argument(
        "--activity-max-hold",
        type=float,
        default=DispatchOptions.activity_max_hold.total_seconds(),
        metavar="SECONDS",
        help="how long a worker may hold an activity without completing it before it is handed out "
        "again; longer-running activities run twice (default: %(default)g)",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate (chain); needs --tls-key")
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="mutual TLS: clients must present a certificate signed by this CA (needs --tls-cert/--tls-key)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"require 'authorization: Bearer <token>' on every call, the token being this file's first line "
        f"(default: ${TOKEN_VARIABLE}, else no token)",
    )
    parser.add_argument(
        "--dashboard-port",
        type=int,
        metavar="PORT",
        help="serve the web dashboard (/), its JSON API (/api/...) and Prometheus metrics (/metrics) on this "
        "HTTP port, with the TLS and token of the gRPC port (default: off)",
    )
    parser.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        help="interface of the dashboard port (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sidecar until SIGINT or SIGTERM. Returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(BoundedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    if args.max_message_size <= 0:
        print("error: --max-message-size must be positive", file=sys.stderr)
        return 2
    for flag, value in (
        ("--turn-max-hold", args.turn_max_hold),
        ("--activity-max-hold", args.activity_max_hold),
        ("--lease", args.lease),
    ):
        if not value > 0:
            print(f"error: {flag} must be a positive number of seconds", file=sys.stderr)
            return 2
    if args.dashboard_port is not None and not 0 <= args.dashboard_port <= 65535:
        print(f"error: --dashboard-port must be a port number from 0 to 65535, not {args.dashboard_port}",
              file=sys.stderr)
        return 2
    try:
        tls = load_server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
        token = load_token(args.token_file)
    except (TlsError, TokenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    turn_hold = timedelta(seconds=args.turn_max_hold)
    lease = timedelta(seconds=args.lease)
    options = DispatchOptions(
        orchestration_lease=lease,
        activity_lease=lease,
        entity_lease=lease,
        orchestration_max_hold=turn_hold,
        entity_max_hold=turn_hold,
        activity_max_hold=timedelta(seconds=args.activity_max_hold),
    )
    try:
        store = open_store(args.store)
    except (StoreError, OSError, ImportError) as exc:
        print(f"error: cannot open store '{redact(args.store)}': {exc}", file=sys.stderr)
        return 1
    server = SidecarServer(
        store,
        host=args.host,
        max_message_size=args.max_message_size,
        dispatch_options=options,
        owns_store=True,
        tls=tls,
        token=token,
        dashboard_port=args.dashboard_port,
        dashboard_host=args.dashboard_host,
    )
    try:
        server.start(args.port)
    except OSError as exc:
        store.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    print(f"durabletask sidecar listening on {server.address}", flush=True)
    print(f"store: {store.describe()}", flush=True)
    print(describe_protection(tls, token), flush=True)
    warning = exposure_warning(args.host, tls, token)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if server.dashboard is not None:
        print(f"dashboard and metrics on {server.dashboard.url}", flush=True)
        warning = exposure_warning(args.dashboard_host, tls, token)
        if warning:
            print(f"{warning} (the dashboard)", file=sys.stderr, flush=True)
    if isinstance(store, SqliteStore) and store.cleared_leases:
        print(f"released {store.cleared_leases} leases left by a previous run", flush=True)
    while not stop.wait(1.0):
        pass
    print("stopping", flush=True)
    server.stop(grace=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
