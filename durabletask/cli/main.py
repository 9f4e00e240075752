"""Entry point of the ``durabletask`` command: the argument parser and ``main(argv)``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import grpc

import durabletask.cli.entities as entities
import durabletask.cli.instances as instances
import durabletask.cli.schedules as schedules
from durabletask.cli.connection import (
    ADDRESS_VARIABLE,
    TIMEOUT_VARIABLE,
    TLS_CA_VARIABLE,
    TLS_CERT_VARIABLE,
    TLS_KEY_VARIABLE,
    TLS_VARIABLE,
    TOKEN_FILE_VARIABLE,
    TOKEN_VARIABLE,
    Connection,
    settings_from,
)
from durabletask.cli.errors import FAILED, USAGE, CliError, UsageError, from_rpc_error, one_line

EPILOG = f"""\
environment: {ADDRESS_VARIABLE}, {TLS_VARIABLE}=1, {TLS_CA_VARIABLE}, {TLS_CERT_VARIABLE}, {TLS_KEY_VARIABLE},
{TOKEN_VARIABLE} (the token itself) or {TOKEN_FILE_VARIABLE}; options win over them.
exit codes: 0 ok, 1 the operation failed (e.g. instance not found), 2 usage or input error,
3 sidecar unreachable, 4 token or certificate refused, 5 timed out.
The instance commands also work without the word 'instances' (durabletask terminate ID).
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become one-line CliErrors (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _connection_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The global options; on subcommands their default is ``SUPPRESS`` so they may come anywhere."""
    group = parser.add_argument_group("connection")
    group.add_argument("--address", default=default,
                       help=f"sidecar address host:port; https:// means TLS (default ${ADDRESS_VARIABLE} or localhost:4001)")
    group.add_argument("--tls", action="store_true", default=default, help="connect with TLS")
    group.add_argument("--tls-ca", metavar="FILE", default=default, help="PEM file of the CA that signed the sidecar's certificate")
    group.add_argument("--tls-cert", metavar="FILE", default=default, help="client certificate (PEM) for mutual TLS")
    group.add_argument("--tls-key", metavar="FILE", default=default, help="client private key (PEM) for mutual TLS")
    group.add_argument("--token-file", metavar="FILE", default=default,
                       help=f"file whose first line is the bearer token (default ${TOKEN_VARIABLE})")
    group.add_argument("--rpc-timeout", type=float, metavar="SECONDS", default=default,
                       help=f"deadline of each call to the sidecar that sets none itself "
                       f"(default ${TIMEOUT_VARIABLE} or 30)")
    group.add_argument("--verbose", "-v", action="store_true", default=default, help="log the client's calls to stderr")


def build_parser() -> argparse.ArgumentParser:
    """The full ``durabletask`` argument parser."""
    common = _Parser(add_help=False)
    _connection_options(common, argparse.SUPPRESS)
    parser = _Parser(
        prog="durabletask",
        description="Inspect and manage Durable Task instances, entities and schedules on a sidecar.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(parser, None)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_text in (("instances", instances, "orchestration instances"),
                                    ("entities", entities, "durable entities"),
                                    ("schedules", schedules, "recurring schedules")):
        group = top.add_parser(name, help=help_text, description=help_text)
        module.register(group.add_subparsers(dest="action", metavar="ACTION", required=True,
                                             parser_class=_Parser), common)
    instances.register(top, common)
    return parser


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:   # --help
        return int(exit_request.code or 0)
    if getattr(args, "handler", None) is None:
        raise UsageError("missing command (see: durabletask --help)")
    settings = settings_from(args)
    with Connection(settings, verbose=bool(args.verbose)) as conn:
        try:
            return int(args.handler(args, conn))
        except grpc.RpcError as error:
            raise from_rpc_error(error, settings.address) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``durabletask`` command; returns the exit code (errors are printed on one line)."""
    try:
        return _run(argv)
    except CliError as error:
        print(f"error: {one_line(error.message)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return FAILED
    except (ValueError, TypeError) as error:   # the client refused an input value
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return USAGE


def console_main() -> None:
    """The console script: ``sys.exit(main())``."""
    sys.exit(main())
