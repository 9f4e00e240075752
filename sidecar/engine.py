"""The sidecar's pure engine: (instance, history, new events, worker response) -> change set.

No I/O here. Everything is unit-tested with synthetic histories.
PLACEHOLDER signatures; implementation pending.
"""

from __future__ import annotations

from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import InstanceSnapshot, TurnInput, TurnResult


def apply_turn(turn: TurnInput) -> TurnResult:
    """Validate the worker's actions and compute the change set of one orchestration turn.

    Raises InvalidTurnError (nothing applied) when the response is invalid.
    """
    raise NotImplementedError


def terminate(instance: InstanceSnapshot, output: str | None, now: datetime) -> TurnResult:
    """Change set that terminates a non-terminal instance directly (no worker involved)."""
    raise NotImplementedError


def select_new_events(
    past_events: list[pb.HistoryEvent], inbox: list[pb.HistoryEvent]
) -> tuple[list[int], list[int]]:
    """Split inbox events (by index) into (deliver, drop): duplicates of resolved tasks/timers are dropped."""
    raise NotImplementedError
