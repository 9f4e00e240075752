"""Recorded histories in and out: ``durabletask.history`` events to protobuf, and to and from JSON files.

``save_history(path, events)`` writes a history (as returned by
``get_orchestration_history``) to a JSON file and ``load_history(path)`` reads it
back as the same event objects, so a test can replay it later. The file holds each
event in the protobuf JSON form of the wire ``HistoryEvent``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from durabletask import history
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.task import FailureDetails

FILE_FORMAT = "durabletask-history"
FILE_VERSION = 1

HistoryInput = history.HistoryEvent | pb.HistoryEvent


def _kinds_by_type() -> dict[type[history.HistoryEvent], str]:
    kinds: dict[type[history.HistoryEvent], str] = {}
    for field in pb.HistoryEvent.DESCRIPTOR.oneofs_by_name["eventType"].fields:
        probe = pb.HistoryEvent()
        getattr(probe, field.name).SetInParent()
        try:
            kinds[type(history.from_protobuf(probe))] = field.name
        except ValueError:
            continue
    return kinds


_KIND_OF_TYPE = _kinds_by_type()
EVENT_KINDS = frozenset(_KIND_OF_TYPE.values())


def to_protobuf(event: HistoryInput) -> pb.HistoryEvent:
    """The wire ``HistoryEvent`` of a ``durabletask.history`` event (a wire event is returned as is).

    Raises TypeError for anything else.
    """
    if isinstance(event, pb.HistoryEvent):
        return event
    kind = _KIND_OF_TYPE.get(type(event)) if isinstance(event, history.HistoryEvent) else None
    if kind is None:
        raise TypeError(f"not a history event: {type(event).__name__} {event!r:.80}")
    result = pb.HistoryEvent(eventId=event.event_id, timestamp=ph.new_timestamp(event.timestamp))
    body = getattr(result, kind)
    body.SetInParent()
    _fill(body, event, skip=("event_id", "timestamp"))
    return result


def to_protobuf_list(events: Iterable[Any]) -> list[pb.HistoryEvent]:
    """``to_protobuf`` of each event; a TypeError names the position of a bad one."""
    if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
        raise TypeError(f"a history is a list of history events, not {type(events).__name__}")
    converted = []
    for index, event in enumerate(events):
        try:
            converted.append(to_protobuf(event))
        except TypeError as exc:
            raise TypeError(f"history event {index}: {exc}") from None
    return converted


def _fill(message: Message, source: Any, *, skip: Sequence[str] = ()) -> None:
    fields = _fields_by_plain_name(message.DESCRIPTOR)
    for field in dataclasses.fields(source):
        value = getattr(source, field.name)
        if field.name in skip or value is None:
            continue
        target = fields.get(field.name.replace("_", "").lower())
        if target is None:
            raise TypeError(f"{type(source).__name__}.{field.name} has no wire field")
        _set(message, target, value)


def _fields_by_plain_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.name.lower(): f for f in descriptor.fields}


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    name = field.name
    if field.message_type is None:
        if isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
        return
    sub = getattr(message, name)
    type_name = field.message_type.full_name
    if type_name == "google.protobuf.StringValue":
        sub.value = value
    elif type_name == "google.protobuf.Timestamp" and isinstance(value, datetime):
        sub.CopyFrom(ph.new_timestamp(value))
    elif isinstance(value, FailureDetails):
        sub.CopyFrom(ph.failure_details_to_pb(value))
    elif field.message_type.GetOptions().map_entry:
        sub.update(value)
    elif isinstance(value, dict):
        json_format.ParseDict(value, sub)
    elif dataclasses.is_dataclass(value):
        sub.SetInParent()
        _fill(sub, value)
    else:
        raise TypeError(f"cannot put a {type(value).__name__} in wire field '{name}'")


# ------------------------------------------------------------------ JSON files


def history_to_json(events: Iterable[HistoryInput]) -> dict[str, Any]:
    """The JSON document ``save_history`` writes, as a dict."""
    return {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "events": [json_format.MessageToDict(e) for e in to_protobuf_list(events)],
    }


def history_from_json(document: Any, *, source: str = "history") -> list[history.HistoryEvent]:
    """The history events of a document written by ``history_to_json`` (a bare list of events is accepted).

    Raises ValueError naming the first problem (``source`` names the document in it).
    """
    events = document
    if isinstance(document, dict):
        if document.get("format") != FILE_FORMAT:
            raise ValueError(f"{source}: not a saved history (its 'format' is not '{FILE_FORMAT}')")
        if document.get("version") != FILE_VERSION:
            raise ValueError(f"{source}: unsupported history file version {document.get('version')!r}")
        events = document.get("events")
    if not isinstance(events, list):
        raise ValueError(f"{source}: expected a list of history events, found {type(events).__name__}")
    return [_event_from_json(item, f"{source}: event {index}") for index, item in enumerate(events)]


def _event_from_json(item: Any, where: str) -> history.HistoryEvent:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is a {type(item).__name__}, not an object")
    kinds = [key for key in item if key not in ("eventId", "timestamp")]
    unknown = [key for key in kinds if key not in EVENT_KINDS]
    if unknown:
        raise ValueError(f"{where} has an unknown event kind {unknown[0]!r:.80}")
    if len(kinds) != 1:
        raise ValueError(f"{where} must hold exactly one event kind, found {len(kinds)}")
    try:
        message = json_format.ParseDict(item, pb.HistoryEvent())
    except json_format.ParseError as exc:
        raise ValueError(f"{where} ({kinds[0]}) does not parse: {exc}") from None
    return history.from_protobuf(message)


def save_history(path: str | os.PathLike[str], events: Iterable[HistoryInput]) -> None:
    """Write a history (``durabletask.history`` or wire events) to a JSON file."""
    document = history_to_json(events)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=1)
        out.write("\n")


def load_history(path: str | os.PathLike[str]) -> list[history.HistoryEvent]:
    """Read a history written by ``save_history``; ValueError names the file and what is wrong."""
    with open(path, encoding="utf-8") as source:
        try:
            document = json.load(source)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{os.fspath(path)}: not JSON ({exc})") from None
    return history_from_json(document, source=os.fspath(path))
