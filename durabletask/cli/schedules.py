"""The schedule commands: list, show, create, pause, resume and delete (``durabletask.scheduled``).

Changing a schedule runs a small orchestration, so a worker with
``configure_scheduled_tasks()`` must be connected to the sidecar; without one a change
waits until ``--timeout`` and ends with exit code 5.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from durabletask.cli.connection import Connection
from durabletask.cli.errors import OK, TIMEOUT, CliError, UsageError
from durabletask.cli.output import (
    EMPTY,
    format_time,
    iso_time,
    shorten,
    table,
    write,
    write_json,
)
from durabletask.cli.parsing import parse_duration, parse_json, parse_time
from durabletask.scheduled import (
    ScheduleClientValidationError,
    ScheduleCreationOptions,
    ScheduleDescription,
    ScheduledTaskClient,
    ScheduleError,
    ScheduleQuery,
    ScheduleStatus,
)


@contextmanager
def schedule_errors(schedule_id: str, operation: str, timeout: float) -> Iterator[None]:
    """Report schedule errors on one line: invalid options (2), refused (1), no worker in time (5)."""
    try:
        yield
    except ScheduleClientValidationError as exc:
        raise UsageError(str(exc)) from None
    except ScheduleError as exc:
        raise CliError(str(exc)) from None
    except TimeoutError:
        raise CliError(
            f"schedule '{schedule_id}': '{operation}' did not finish within {timeout:g}s "
            "(is a worker with configure_scheduled_tasks() connected?)", TIMEOUT
        ) from None


def _schedules(args: argparse.Namespace, conn: Connection) -> ScheduledTaskClient:
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    return ScheduledTaskClient(conn.client, operation_timeout=args.timeout)


def _interval_text(interval: timedelta) -> str:
    """``1h``, ``1h30m``, ``2d``, ``45s``: whole units, zeros left out."""
    seconds = int(interval.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _when(d: ScheduleDescription) -> str:
    if d.cron:
        return f"cron {d.cron}"
    return f"every {_interval_text(d.interval)}" if d.interval is not None else EMPTY


def _to_json(d: ScheduleDescription) -> dict[str, Any]:
    return {
        "scheduleId": d.schedule_id,
        "orchestrationName": d.orchestration_name,
        "orchestrationInput": d.orchestration_input,
        "orchestrationInstanceId": d.orchestration_instance_id,
        "intervalSeconds": d.interval.total_seconds() if d.interval is not None else None,
        "cron": d.cron,
        "status": d.status.value,
        "startAt": iso_time(d.start_at),
        "endAt": iso_time(d.end_at),
        "lastRunAt": iso_time(d.last_run_at),
        "nextRunAt": iso_time(d.next_run_at),
    }


def cmd_list(args: argparse.Namespace, conn: Connection) -> int:
    """``schedules list``: every schedule (filtered by --prefix and --status)."""
    status = ScheduleStatus(args.status.capitalize()) if args.status else None
    found = _schedules(args, conn).list_schedules(ScheduleQuery(status=status, schedule_id_prefix=args.prefix))
    found.sort(key=lambda d: d.schedule_id)
    if args.json:
        write_json([_to_json(d) for d in found])
        return OK
    rows = [[d.schedule_id, d.orchestration_name or EMPTY, _when(d), d.status.value,
             format_time(d.last_run_at), format_time(d.next_run_at)] for d in found]
    write(table(["SCHEDULE", "ORCHESTRATION", "WHEN", "STATUS", "LAST RUN (UTC)", "NEXT RUN (UTC)"], rows))
    return OK


def cmd_show(args: argparse.Namespace, conn: Connection) -> int:
    """``schedules show ID``: one schedule's configuration and run times."""
    description = _schedules(args, conn).get_schedule(args.schedule_id)
    if description is None:
        raise CliError(f"schedule '{args.schedule_id}' not found")
    if args.json:
        write_json(_to_json(description))
        return OK
    d = description
    write("\n".join([
        f"Schedule:       {d.schedule_id}",
        f"Orchestration:  {d.orchestration_name or EMPTY}",
        f"When:           {_when(d)}",
        f"Status:         {d.status.value}",
        f"Input:          {shorten(repr(d.orchestration_input) if d.orchestration_input is not None else None)}",
        f"Last run:       {format_time(d.last_run_at)}",
        f"Next run:       {format_time(d.next_run_at)}",
    ]))
    return OK


def cmd_create(args: argparse.Namespace, conn: Connection) -> int:
    """``schedules create ID ORCHESTRATION --interval D | --cron EXPR``."""
    if (args.interval is None) == (args.cron is None):
        raise UsageError("give exactly one of --interval and --cron")
    schedules = _schedules(args, conn)
    with schedule_errors(args.schedule_id, "create", args.timeout):
        options = ScheduleCreationOptions(
            schedule_id=args.schedule_id,
            orchestration_name=args.orchestration,
            interval=parse_duration(args.interval, "--interval") if args.interval is not None else None,
            cron=args.cron,
            orchestration_input=parse_json(args.input, "--input"),
            orchestration_instance_id=args.instance_id,
            start_at=parse_time(args.start_at, "--start-at") if args.start_at else None,
            end_at=parse_time(args.end_at, "--end-at") if args.end_at else None,
            start_immediately_if_late=args.start_immediately,
        )
        schedules.create_schedule(options)
    write(f"created schedule '{args.schedule_id}'")
    return OK


def _change(verb: str, operation: Callable[[Any], None]) -> Callable[[argparse.Namespace, Connection], int]:
    def run(args: argparse.Namespace, conn: Connection) -> int:
        schedule = _schedules(args, conn).get_schedule_client(args.schedule_id)
        with schedule_errors(args.schedule_id, verb, args.timeout):
            operation(schedule)
        write(f"{verb}d schedule '{args.schedule_id}'")
        return OK

    run.__doc__ = f"``schedules {verb} ID``."
    return run


cmd_pause = _change("pause", lambda s: s.pause())
cmd_resume = _change("resume", lambda s: s.resume())
cmd_delete = _change("delete", lambda s: s.delete())


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the schedule commands to ``commands``."""

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(handler=handler)
        parser.add_argument("--timeout", type=float, default=30.0,
                            help="seconds to wait for the schedule's worker (default 30)")
        return parser

    p = add("list", cmd_list, "list schedules")
    p.add_argument("--prefix", help="only schedule IDs starting with this")
    p.add_argument("--status", choices=["active", "paused"], help="only schedules in this status")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("show", cmd_show, "show one schedule")
    p.add_argument("schedule_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = add("create", cmd_create, "create (or replace) a schedule that starts an orchestration")
    p.add_argument("schedule_id", metavar="ID")
    p.add_argument("orchestration", metavar="ORCHESTRATION", help="name of the orchestration to start")
    p.add_argument("--interval", metavar="DURATION", help="run every DURATION (e.g. 30s, 5m, 1h)")
    p.add_argument("--cron", metavar="EXPR", help="run at the minutes a 5-field cron expression names (UTC)")
    p.add_argument("--input", metavar="JSON", help="orchestration input as JSON")
    p.add_argument("--instance-id", metavar="ID", help="instance ID of every run (default: <ID>-<due time>)")
    p.add_argument("--start-at", metavar="TIME", help="first run no earlier than this (ISO 8601, UTC)")
    p.add_argument("--end-at", metavar="TIME", help="no runs after this (ISO 8601, UTC)")
    p.add_argument("--start-immediately", action="store_true", help="run at once if the start time has passed")

    for name, handler, help_text in (("pause", cmd_pause, "pause a schedule"),
                                     ("resume", cmd_resume, "resume a paused schedule"),
                                     ("delete", cmd_delete, "delete a schedule")):
        p = add(name, handler, help_text)
        p.add_argument("schedule_id", metavar="ID")
