"""Where orchestrator code made a call, and how non-determinism messages show it.

The replay context notes, for each action, the file and line of the orchestrator
statement that issued it (the first frame outside the SDK, found by walking
``sys._getframe`` a few frames up). The engine quotes those sites, and the history
event they failed to match, when replay and history disagree.
"""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType
from typing import NamedTuple

from durabletask.internal import orchestrator_service_pb2 as pb

_SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_MAX_FRAMES = 40
_MAX_TEXT = 160


class CallSite(NamedTuple):
    """A statement of orchestrator code: its file, line and function (a tuple: cheap to make per call)."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{clip(self.filename, _MAX_TEXT, keep_end=True)}:{self.lineno} (in {clip(self.function, 60)})"


def find_call_site(frame: FrameType | None, stop_codes: frozenset[CodeType]) -> CallSite | None:
    """The first frame from ``frame`` upward that lies outside the SDK.

    The walk stops at a frame running one of ``stop_codes`` (the engine code that runs
    the orchestrator): when only SDK frames lie below it, the innermost of those is the
    orchestrator (an SDK-provided one) and is returned.
    """
    last_sdk: FrameType | None = None
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        code = frame.f_code
        if code in stop_codes:
            return _site(last_sdk) if last_sdk is not None else None
        if not code.co_filename.startswith(_SDK_DIR):
            return _site(frame)
        last_sdk = frame
        frame = frame.f_back
    return None


def caller_frame(depth: int) -> FrameType | None:
    """``sys._getframe(depth + 1)``, or None when the stack is not that deep."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None


def generator_site(frame: FrameType | None) -> CallSite | None:
    """Where a suspended orchestrator generator waits (its frame's current line)."""
    return _site(frame) if frame is not None else None


def _site(frame: FrameType) -> CallSite:
    return CallSite(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


def clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    return "..." + text[-(limit - 3):] if keep_end else text[: limit - 3] + "..."


def describe_recorded(event: pb.HistoryEvent) -> str:
    """A history event's kind, event ID and time, e.g. ``taskScheduled event ID 1 at 2024-01-01T12:00:00 UTC``."""
    kind = event.WhichOneof("eventType") or "unknown"
    text = f"{kind} event ID {event.eventId}"
    if event.HasField("timestamp") and (event.timestamp.seconds or event.timestamp.nanos):
        text += f" at {event.timestamp.ToDatetime().isoformat()} UTC"
    return text


def code_line(call: str, site: CallSite | None) -> str:
    """The message line naming the code's call and where it was made."""
    where = f" at {site}" if site is not None else " (call site unknown)"
    return f"\n  code:    {clip(call, _MAX_TEXT)}{where}"


def history_line(expected: str, event: pb.HistoryEvent) -> str:
    """The message line naming what history expects and the event that records it."""
    return f"\n  history: {clip(expected, _MAX_TEXT)}, from {describe_recorded(event)}"
