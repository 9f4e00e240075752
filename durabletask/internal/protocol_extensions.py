"""Our additions to the Durable Task protocol; other SDKs and backends ignore them safely.

Replay state kept between turns: a worker that keeps each orchestration's replayed state in
memory lists :data:`KEEPS_REPLAY_STATE` among the capabilities of its ``GetWorkItems`` request
(an enum value no official SDK or backend knows, which they ignore). A sidecar that knows the
stream still holds the state of the turn it last committed for an instance may then leave out
the past events the worker has already processed: ``pastEvents`` holds only the events after
them, and the request's ``properties`` say how many were left out under
:data:`PAST_EVENTS_OMITTED`. A worker that no longer has that state (evicted, restarted) reads
the full history with ``StreamInstanceHistory`` instead. Without the capability nothing changes.
"""

from __future__ import annotations

from durabletask.internal import orchestrator_service_pb2 as pb

KEEPS_REPLAY_STATE = 1001
PAST_EVENTS_OMITTED = "durabletask.pastEventsOmitted"


def omitted_past_events(request: pb.OrchestratorRequest) -> int:
    """How many leading past events the sidecar left out of ``request`` (0: it holds them all)."""
    value = request.properties.get(PAST_EVENTS_OMITTED)
    if value is None or value.WhichOneof("kind") != "number_value":
        return 0
    count = value.number_value
    return int(count) if count >= 1 and count == int(count) else 0


def mark_omitted(request: pb.OrchestratorRequest, count: int) -> None:
    """Record in ``request`` that its first ``count`` past events were left out."""
    request.properties[PAST_EVENTS_OMITTED].number_value = count
