"""The entity commands: list, show, signal and clean."""

from __future__ import annotations

import argparse
from typing import Any

from durabletask.cli.connection import Connection
from durabletask.cli.errors import OK, CliError
from durabletask.cli.output import EMPTY, format_time, iso_time, payload, shorten, table, write, write_json
from durabletask.cli.parsing import parse_entity_id, parse_json, parse_time
from durabletask.client import EntityQuery
from durabletask.entities import EntityMetadata


def _to_json(entity: EntityMetadata) -> dict[str, Any]:
    return {
        "id": str(entity.id),
        "name": entity.id.entity,
        "key": entity.id.key,
        "lastModified": iso_time(entity.last_modified),
        "backlogQueueSize": entity.backlog_queue_size,
        "lockedBy": entity.locked_by,
        "state": payload(entity.get_state()) if entity.includes_state else None,
    }


def cmd_list(args: argparse.Namespace, conn: Connection) -> int:
    """``entities list``: every entity (whose ID starts with --prefix)."""
    query = EntityQuery(instance_id_starts_with=args.prefix, include_state=True)
    found = conn.client.get_all_entities(query)
    if args.json:
        write_json([_to_json(e) for e in found])
        return OK
    rows = [[str(e.id), format_time(e.last_modified), str(e.backlog_queue_size), e.locked_by or EMPTY,
             shorten(e.get_state(), 50)] for e in found]
    write(table(["ENTITY", "MODIFIED (UTC)", "QUEUE", "LOCKED BY", "STATE"], rows))
    return OK


def cmd_show(args: argparse.Namespace, conn: Connection) -> int:
    """``entities show @name@key``: an entity's state, lock holder and queue length."""
    entity_id = parse_entity_id(args.entity_id)
    entity = conn.client.get_entity(entity_id, include_state=True)
    if entity is None:
        raise CliError(f"entity '{entity_id}' not found")
    if args.json:
        write_json(_to_json(entity))
        return OK
    write("\n".join([
        f"Entity:        {entity.id}",
        f"Modified:      {format_time(entity.last_modified)}",
        f"Queue length:  {entity.backlog_queue_size}",
        f"Locked by:     {entity.locked_by or EMPTY}",
        f"State:         {shorten(entity.get_state(), 500)}",
    ]))
    return OK


def cmd_signal(args: argparse.Namespace, conn: Connection) -> int:
    """``entities signal @name@key OP``: send a one-way operation."""
    entity_id = parse_entity_id(args.entity_id)
    data = parse_json(args.input, "--input")
    signal_time = parse_time(args.at, "--at") if args.at else None
    conn.client.signal_entity(entity_id, args.operation, input=data, signal_time=signal_time)
    write(f"signaled '{args.operation}' to entity '{entity_id}'")
    return OK


def cmd_clean(args: argparse.Namespace, conn: Connection) -> int:
    """``entities clean``: remove empty entities and release orphaned locks."""
    result = conn.client.clean_entity_storage(
        remove_empty_entities=not args.keep_empty, release_orphaned_locks=not args.keep_locks
    )
    if args.json:
        write_json({"emptyEntitiesRemoved": result.empty_entities_removed,
                    "orphanedLocksReleased": result.orphaned_locks_released})
    else:
        write(f"removed {result.empty_entities_removed} empty entities, "
              f"released {result.orphaned_locks_released} orphaned locks")
    return OK


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the entity commands to ``commands``."""

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(handler=handler)
        return parser

    p = add("list", cmd_list, "list entities")
    p.add_argument("--prefix", help="only entity IDs starting with this (e.g. @counter@)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("show", cmd_show, "show one entity")
    p.add_argument("entity_id", metavar="@NAME@KEY")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = add("signal", cmd_signal, "send a one-way operation to an entity")
    p.add_argument("entity_id", metavar="@NAME@KEY")
    p.add_argument("operation", metavar="OP")
    p.add_argument("--input", metavar="JSON", help="operation input as JSON")
    p.add_argument("--at", metavar="TIME", help="deliver no earlier than this time (ISO 8601, UTC)")

    p = add("clean", cmd_clean, "remove empty entities and release locks held by finished orchestrations")
    p.add_argument("--keep-empty", action="store_true", help="do not remove empty entities")
    p.add_argument("--keep-locks", action="store_true", help="do not release orphaned locks")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
