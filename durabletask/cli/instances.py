"""The instance commands: list, show, history, start, raise, terminate, suspend, resume, rewind,
restart and purge."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import grpc

from durabletask.cli.connection import Connection
from durabletask.cli.errors import FAILED, OK, TIMEOUT, CliError, UsageError
from durabletask.cli.history_view import events_to_json, render_timeline
from durabletask.cli.output import (
    EMPTY,
    ProgressBar,
    format_time,
    iso_time,
    shorten,
    state_to_json,
    table,
    write,
    write_json,
)
from durabletask.cli.parsing import TERMINAL_STATUSES, parse_duration, parse_json, parse_status, parse_time
from durabletask.client import OrchestrationQuery, OrchestrationState, OrchestrationStatus

Command = Callable[[argparse.Namespace, Connection], int]
DEFAULT_PAGE_SIZE = 50
# Instances fetched per query while counting what a purge by filter would remove.
PURGE_SCAN_PAGE = 500


@contextmanager
def about_instance(instance_id: str) -> Iterator[None]:
    """Turn the sidecar's NOT_FOUND for ``instance_id`` into ``instance '<id>' not found``."""
    try:
        yield
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise CliError(f"instance '{instance_id}' not found") from None
        raise


def _state(conn: Connection, instance_id: str, payloads: bool = True) -> OrchestrationState:
    state = conn.client.get_orchestration_state(instance_id, fetch_payloads=payloads)
    if state is None:
        raise CliError(f"instance '{instance_id}' not found")
    return state


# ------------------------------------------------------------------ queries

def _query(args: argparse.Namespace, page_size: int) -> OrchestrationQuery:
    return OrchestrationQuery(
        created_time_from=parse_time(args.created_from, "--created-from") if args.created_from else None,
        created_time_to=parse_time(args.created_to, "--created-to") if args.created_to else None,
        runtime_status=[parse_status(s) for s in args.status] if args.status else None,
        max_instance_count=page_size,
        instance_id_prefix=args.prefix,
        version=args.version,
    )


def cmd_list(args: argparse.Namespace, conn: Connection) -> int:
    """``instances list``: one page (or ``--all``) of instances matching the filters."""
    if args.page_size <= 0:
        raise UsageError(f"--page-size must be a positive number, not {args.page_size}")
    query = _query(args, args.page_size)
    token: str | None = args.continuation_token
    states: list[OrchestrationState] = []
    while True:
        page = conn.client.get_orchestration_state_page(query, token)
        states.extend(s for s in page.items if args.name is None or s.name == args.name)
        token = page.continuation_token
        if not args.all or token is None:
            break
    if args.json:
        write_json({"instances": [state_to_json(s) for s in states], "continuationToken": token})
        return OK
    rows = [[s.instance_id, s.name, s.version or EMPTY, s.runtime_status.name,
             format_time(s.created_at), format_time(s.last_updated_at)] for s in states]
    write(table(["INSTANCE ID", "NAME", "VERSION", "STATUS", "CREATED (UTC)", "UPDATED (UTC)"], rows))
    if token is not None:
        print(f"more instances: add --continuation-token {token} (or --all)", file=sys.stderr)
    return OK


def cmd_show(args: argparse.Namespace, conn: Connection) -> int:
    """``instances show ID``: status, times, input, output, custom status and failure."""
    state = _state(conn, args.instance_id)
    if args.json:
        write_json(state_to_json(state))
        return OK
    failure = state.failure_details
    fields = [
        ("Instance ID", state.instance_id),
        ("Name", state.name),
        ("Version", state.version or EMPTY),
        ("Status", state.runtime_status.name),
        ("Created", format_time(state.created_at)),
        ("Last updated", format_time(state.last_updated_at)),
        ("Completed", format_time(state.completed_at)),
        ("Parent", state.parent_instance_id or EMPTY),
        ("Input", shorten(state.serialized_input, 200)),
        ("Output", shorten(state.serialized_output, 200)),
        ("Custom status", shorten(state.serialized_custom_status, 200)),
        ("Failure", EMPTY if failure is None else shorten(f"{failure.error_type}: {failure.message}", 200)),
    ]
    width = max(len(label) for label, _ in fields)
    write("\n".join(f"{label + ':':<{width + 1}} {value}" for label, value in fields))
    return OK


def cmd_history(args: argparse.Namespace, conn: Connection) -> int:
    """``instances history ID``: the history as a timeline, or ``--json``."""
    _state(conn, args.instance_id, payloads=False)
    with about_instance(args.instance_id):
        events = conn.client.get_orchestration_history(args.instance_id)
    if args.json:
        write_json(events_to_json(events))
    else:
        write(render_timeline(events, include_turns=args.all))
    return OK


# ------------------------------------------------------------------ actions

def cmd_start(args: argparse.Namespace, conn: Connection) -> int:
    """``instances start NAME``: schedule a new instance and print its ID."""
    data = parse_json(args.input, "--input")
    start_at = parse_time(args.start_at, "--start-at") if args.start_at else None
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    instance_id = conn.client.schedule_new_orchestration(
        args.name, input=data, instance_id=args.id, start_at=start_at, version=args.version
    )
    if not args.wait:
        write_json({"instanceId": instance_id}) if args.json else write(instance_id)
        return OK
    try:
        state = conn.client.wait_for_orchestration_completion(instance_id, timeout=args.timeout)
    except TimeoutError:
        raise CliError(f"instance '{instance_id}' did not finish within {args.timeout:g}s", TIMEOUT) from None
    if state is None:
        raise CliError(f"instance '{instance_id}' not found")
    if args.json:
        write_json(state_to_json(state))
    else:
        write(f"{instance_id} {state.runtime_status.name} output={shorten(state.serialized_output, 200)}")
    return OK if state.runtime_status == OrchestrationStatus.COMPLETED else FAILED


def cmd_raise(args: argparse.Namespace, conn: Connection) -> int:
    """``raise ID EVENT``: send an external event."""
    data = parse_json(args.data, "--data")
    with about_instance(args.instance_id):
        conn.client.raise_orchestration_event(args.instance_id, args.event, data=data)
    write(f"raised event '{args.event}' on instance '{args.instance_id}'")
    return OK


def cmd_terminate(args: argparse.Namespace, conn: Connection) -> int:
    """``terminate ID``: end an instance (and its sub-orchestrations unless --no-recursive)."""
    output = parse_json(args.output, "--output")
    with about_instance(args.instance_id):
        conn.client.terminate_orchestration(args.instance_id, output=output, recursive=not args.no_recursive)
    write(f"terminated instance '{args.instance_id}'")
    return OK


def _simple(verb: str, action: Callable[[Connection, argparse.Namespace], None]) -> Command:
    def run(args: argparse.Namespace, conn: Connection) -> int:
        with about_instance(args.instance_id):
            action(conn, args)
        write(f"{verb} instance '{args.instance_id}'")
        return OK

    run.__doc__ = f"``{verb}``: act on one instance."
    return run


cmd_suspend = _simple("suspended", lambda c, a: c.client.suspend_orchestration(a.instance_id, reason=a.reason))
cmd_resume = _simple("resumed", lambda c, a: c.client.resume_orchestration(a.instance_id, reason=a.reason))
cmd_rewind = _simple("rewound", lambda c, a: c.client.rewind_orchestration(a.instance_id, reason=a.reason))


def cmd_restart(args: argparse.Namespace, conn: Connection) -> int:
    """``restart ID``: run the instance again with its input; prints the (new) instance ID."""
    with about_instance(args.instance_id):
        new_id = conn.client.restart_orchestration(args.instance_id, restart_with_new_instance_id=args.new_id)
    write(new_id)
    return OK


# ------------------------------------------------------------------ purge

def _matching_ids(conn: Connection, query: OrchestrationQuery) -> list[str]:
    ids: list[str] = []
    token: str | None = None
    while True:
        page = conn.client.get_orchestration_state_page(query, token)
        ids.extend(s.instance_id for s in page.items)
        token = page.continuation_token
        if token is None:
            return ids


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_purge(args: argparse.Namespace, conn: Connection) -> int:
    """``purge ID`` or ``purge --older-than D [--status S]``: delete finished instances."""
    by_filter = args.older_than is not None or bool(args.status) or args.prefix is not None
    if args.instance_id and by_filter:
        raise UsageError("give an instance ID or filters (--older-than, --status, --prefix), not both")
    if args.instance_id:
        with about_instance(args.instance_id):
            result = conn.client.purge_orchestration(args.instance_id, recursive=not args.no_recursive)
        if result.deleted_instance_count == 0:
            raise CliError(f"instance '{args.instance_id}' not found (nothing purged)")
        write(f"purged {result.deleted_instance_count} instance(s)")
        return OK
    if not by_filter:
        raise UsageError("purge needs an instance ID, or filters: --older-than, --status, --prefix")
    statuses = [parse_status(s) for s in args.status] if args.status else list(TERMINAL_STATUSES)
    for status in statuses:
        if status not in TERMINAL_STATUSES:
            raise UsageError(f"--status {status.name.lower()}: only finished instances can be purged "
                             "(completed, failed, terminated)")
    older_than = parse_duration(args.older_than) if args.older_than is not None else None
    created_to = datetime.now(timezone.utc) - older_than if older_than is not None else None
    query = OrchestrationQuery(created_time_to=created_to, runtime_status=statuses,
                               max_instance_count=PURGE_SCAN_PAGE, instance_id_prefix=args.prefix)
    ids = _matching_ids(conn, query)
    names = ", ".join(s.name.lower() for s in statuses)
    since = f", created before {iso_time(created_to)}" if created_to else ""
    prefix = f", ID starting with '{args.prefix}'" if args.prefix is not None else ""
    print(f"{len(ids)} instance(s) match: status {names}{since}{prefix}", file=sys.stderr)
    if not ids:
        write("purged 0 instance(s)")
        return OK
    if not args.yes and not _confirm(f"Purge {len(ids)} instance(s)?"):
        raise CliError("purge cancelled; nothing was purged")
    bar = ProgressBar(len(ids), "purging")
    deleted = 0
    try:
        for instance_id in ids:
            deleted += conn.client.purge_orchestration(instance_id, recursive=not args.no_recursive).deleted_instance_count
            bar.advance()
    finally:
        bar.finish()
    write(f"purged {deleted} instance(s)")
    return OK


# ------------------------------------------------------------------ parser

def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the instance commands (``list`` and friends) to ``commands``."""

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(handler=handler)
        return parser

    def json_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = add("list", cmd_list, "list instances, filtered by status, name, ID prefix, creation time and version")
    p.add_argument("--status", action="append", metavar="STATUS",
                   help="only this runtime status (repeatable): running, completed, failed, terminated, pending, ...")
    p.add_argument("--name", help="only instances of this orchestration name")
    p.add_argument("--prefix", help="only instance IDs starting with this")
    p.add_argument("--created-from", metavar="TIME", help="created at or after this time (ISO 8601, UTC)")
    p.add_argument("--created-to", metavar="TIME", help="created at or before this time (ISO 8601, UTC)")
    p.add_argument("--version", help="only instances of this version")
    p.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help=f"instances per page (default {DEFAULT_PAGE_SIZE})")
    p.add_argument("--continuation-token", metavar="TOKEN", help="start from this page (printed after a page)")
    p.add_argument("--all", action="store_true", help="follow pages to the end")
    json_flag(p)

    p = add("show", cmd_show, "show one instance's state")
    p.add_argument("instance_id", metavar="ID")
    json_flag(p)

    p = add("history", cmd_history, "show one instance's history as a timeline")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--all", action="store_true", help="also show the start and end of every turn")
    json_flag(p)

    p = add("start", cmd_start, "start a new instance and print its ID")
    p.add_argument("name", metavar="NAME", help="orchestration name")
    p.add_argument("--input", metavar="JSON", help="input as JSON (e.g. '{\"a\": 1}' or '\"text\"')")
    p.add_argument("--id", metavar="ID", help="instance ID (default: a new random one)")
    p.add_argument("--version", help="orchestration version")
    p.add_argument("--start-at", metavar="TIME", help="start no earlier than this time (ISO 8601, UTC)")
    p.add_argument("--wait", action="store_true", help="wait for it to finish and print its outcome")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to --wait (default 60)")
    json_flag(p)

    p = add("raise", cmd_raise, "send an external event to an instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("event", metavar="EVENT", help="event name")
    p.add_argument("--data", metavar="JSON", help="event data as JSON")

    p = add("terminate", cmd_terminate, "terminate an instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--output", metavar="JSON", help="output to record, as JSON")
    p.add_argument("--no-recursive", action="store_true", help="leave its sub-orchestrations running")

    for name, handler, help_text in (("suspend", cmd_suspend, "suspend an instance"),
                                     ("resume", cmd_resume, "resume a suspended instance"),
                                     ("rewind", cmd_rewind, "rewind a failed instance")):
        p = add(name, handler, help_text)
        p.add_argument("instance_id", metavar="ID")
        p.add_argument("--reason", help="reason to record")

    p = add("restart", cmd_restart, "run an instance again with its original input")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--new-id", action="store_true", help="under a new instance ID (printed)")

    p = add("purge", cmd_purge, "delete finished instances: one by ID, or all matching --older-than/--status/--prefix")
    p.add_argument("instance_id", metavar="ID", nargs="?")
    p.add_argument("--older-than", metavar="DURATION", help="created longer ago than this (e.g. 7d, 12h, 30m)")
    p.add_argument("--status", action="append", metavar="STATUS",
                   help="only this status (repeatable; default completed, failed and terminated)")
    p.add_argument("--prefix", help="only instance IDs starting with this")
    p.add_argument("--no-recursive", action="store_true", help="keep their sub-orchestrations")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
