"""The dashboard's JSON API: each request becomes a call of the same servicer method the gRPC RPC runs.

So every check and rule of the gRPC API holds here too (validation, status transitions, purge
rules); the servicer's gRPC status becomes the HTTP status (INVALID_ARGUMENT 400, NOT_FOUND 404,
FAILED_PRECONDITION and ALREADY_EXISTS 409, ...). Reads that have no RPC (the connected workers,
the backlog) come from the dispatcher and the store's inspection methods, read-only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote

import grpc

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.dashboard.views import (
    SCHEDULE_ENTITY_PREFIX,
    entity_json,
    event_json,
    instance_json,
    schedule_json,
    timeline,
    worker_json,
)
from sidecar.dispatch import utcnow

# How many instances a list returns at most, and how many store pages a name filter reads for them.
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
_MAX_NAME_FILTER_PAGES = 20

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ApiError(Exception):
    """Answer the request with this HTTP status and a JSON error naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _LocalCall:
    """The parts of ``grpc.ServicerContext`` the servicer uses, for a call made by the dashboard."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def peer(self) -> str:
        return "dashboard"

    def add_callback(self, callback: Callable[[], object]) -> bool:
        return False

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise ApiError(_HTTP_STATUS.get(code, 500), details)


def _parse_time(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name}: not an ISO 8601 date and time: {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _parse_statuses(value: str) -> list[int]:
    statuses = []
    for name in filter(None, (part.strip().upper() for part in value.split(","))):
        try:
            statuses.append(pb.OrchestrationStatus.Value(f"ORCHESTRATION_STATUS_{name}"))
        except ValueError:
            allowed = ", ".join(n.removeprefix("ORCHESTRATION_STATUS_") for n in pb.OrchestrationStatus.keys())
            raise ApiError(400, f"status: unknown status {name!r} (one of {allowed})") from None
    return statuses


def _page_size(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ApiError(400, f"page_size: must be a whole number from 1 to {MAX_PAGE_SIZE}, not {value!r}")
    return int(value)


def _json_text(body: Mapping[str, Any], key: str) -> str | None:
    """``body[key]`` as the JSON text the SDKs exchange (None when absent)."""
    return json.dumps(body[key]) if body.get(key) is not None else None


_R = TypeVar("_R", pb.SuspendRequest, pb.ResumeRequest)


def _with_reason(request: _R, body: Mapping[str, Any]) -> _R:
    """``request`` with the body's optional ``reason`` text set."""
    reason = _text_field(body, "reason")
    if reason is not None:
        request.reason.value = reason
    return request


def _text_field(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"{key}: required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key}: must be a string, not {type(value).__name__}")
    return value


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"{key}: must be true or false, not {value!r}")
    return value


class DashboardApi:
    """Answers ``/api/...`` requests with JSON, through the servicer, dispatcher and store of one sidecar."""

    def __init__(self, servicer: Any) -> None:
        self.servicer = servicer
        self.dispatcher = servicer.dispatcher
        self.hub = servicer.hub

    def _call(self, rpc: str, request: Any) -> Any:
        return getattr(self.servicer, rpc)(request, _LocalCall())

    # --- routing -----------------------------------------------------------------------------

    def get(self, path: str, query: Mapping[str, str]) -> Any:
        """The answer to ``GET /api/<path>``."""
        parts = [unquote(p) for p in path.split("/")]
        if parts == ["instances"]:
            return self.list_instances(query)
        if len(parts) == 2 and parts[0] == "instances":
            return self.instance(parts[1])
        if len(parts) == 3 and parts[0] == "instances" and parts[2] == "history":
            return self.history(parts[1])
        if parts == ["entities"]:
            return self.entities(query.get("prefix", ""))
        if parts == ["schedules"]:
            return self.schedules()
        if parts == ["workers"]:
            return {"workers": [worker_json(v) for v in self.dispatcher.stream_views()]}
        if parts == ["backlog"]:
            return self.backlog()
        raise ApiError(404, f"no such API resource: GET /api/{path}")

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        """The answer to ``POST /api/instances/<id>/<action>`` with a JSON object body."""
        parts = [unquote(p) for p in path.split("/")]
        if len(parts) != 3 or parts[0] != "instances":
            raise ApiError(404, f"no such API action: POST /api/{path}")
        instance_id, action = parts[1], parts[2]
        handler = self._actions().get(action)
        if handler is None:
            raise ApiError(404, f"unknown action {action!r} (one of {', '.join(sorted(self._actions()))})")
        return handler(instance_id, body)

    def _actions(self) -> dict[str, Callable[[str, Mapping[str, Any]], Any]]:
        return {
            "terminate": self.terminate,
            "suspend": self.suspend,
            "resume": self.resume,
            "raise-event": self.raise_event,
            "rewind": self.rewind,
            "restart": self.restart,
            "purge": self.purge,
        }

    # --- reads -------------------------------------------------------------------------------

    def list_instances(self, query: Mapping[str, str]) -> dict[str, Any]:
        """A page of instances, newest first within the store's order, with the filters applied."""
        request = pb.QueryInstancesRequest()
        q = request.query
        q.runtimeStatus.extend(_parse_statuses(query.get("status", "")))
        if query.get("created_from"):
            q.createdTimeFrom.FromDatetime(_parse_time(query["created_from"], "created_from"))
        if query.get("created_to"):
            q.createdTimeTo.FromDatetime(_parse_time(query["created_to"], "created_to"))
        if query.get("prefix"):
            q.instanceIdPrefix.value = query["prefix"]
        if query.get("continuation"):
            q.continuationToken.value = query["continuation"]
        page_size = _page_size(query.get("page_size"))
        name = query.get("name", "").strip()
        q.maxInstanceCount = page_size
        items: list[dict[str, Any]] = []
        token: str | None = None
        # The protocol has no name filter: pages are read and filtered here until one is full.
        for _ in range(_MAX_NAME_FILTER_PAGES if name else 1):
            response = self._call("QueryInstances", request)
            items.extend(
                instance_json(s) for s in response.orchestrationState if not name or s.name.lower() == name.lower()
            )
            token = response.continuationToken.value if response.HasField("continuationToken") else None
            if token is None or len(items) >= page_size:
                break
            q.continuationToken.value = token
        return {"instances": items, "continuation": token}

    def instance(self, instance_id: str) -> dict[str, Any]:
        """One instance with its input, output, custom status and failure; 404 when unknown."""
        response = self._call("GetInstance", pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True))
        if not response.exists:
            raise ApiError(404, f"no orchestration instance with ID {instance_id!r}")
        return instance_json(response.orchestrationState)

    def history(self, instance_id: str) -> dict[str, Any]:
        """The instance's history events and its timeline."""
        chunks: Iterable[pb.HistoryChunk] = self._call(
            "StreamInstanceHistory", pb.StreamInstanceHistoryRequest(instanceId=instance_id)
        )
        events = [event for chunk in chunks for event in chunk.events]
        return {"events": [event_json(e) for e in events], "timeline": timeline(events)}

    def _query_entities(self, prefix: str) -> list[pb.EntityMetadata]:
        request = pb.QueryEntitiesRequest()
        request.query.includeState = True
        request.query.includeTransient = True
        if prefix:
            request.query.instanceIdStartsWith.value = prefix
        found: list[pb.EntityMetadata] = []
        while True:
            response = self._call("QueryEntities", request)
            found.extend(response.entities)
            if not response.HasField("continuationToken") or len(found) >= MAX_PAGE_SIZE:
                return found[:MAX_PAGE_SIZE]
            request.query.continuationToken.value = response.continuationToken.value

    def entities(self, prefix: str) -> dict[str, Any]:
        """Entities (at most MAX_PAGE_SIZE) whose ID starts with ``prefix``: state, lock holder, queue length."""
        return {"entities": [entity_json(e) for e in self._query_entities(prefix)]}

    def schedules(self) -> dict[str, Any]:
        """The schedules of durabletask.scheduled, read from their entities."""
        found = (schedule_json(e) for e in self._query_entities(SCHEDULE_ENTITY_PREFIX))
        return {"schedules": [s for s in found if s is not None]}

    def backlog(self) -> dict[str, Any]:
        """Work waiting by kind, open streams, and work in flight on them."""
        in_flight = {"orchestration": 0, "activity": 0, "entity": 0}
        for view in self.dispatcher.stream_views():
            for kind, count in view.in_flight.items():
                in_flight[kind] += count
        return {
            "backlog": self.hub.store.backlog(utcnow()),
            "in_flight": in_flight,
            "open_streams": self.dispatcher.open_streams(),
        }

    # --- actions -----------------------------------------------------------------------------

    def terminate(self, instance_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = pb.TerminateRequest(instanceId=instance_id, recursive=_flag(body, "recursive"))
        output = _json_text(body, "reason")
        if output is not None:
            request.output.value = output
        self._call("TerminateInstance", request)
        return {"instance_id": instance_id, "terminated": True}

    def suspend(self, instance_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._call("SuspendInstance", _with_reason(pb.SuspendRequest(instanceId=instance_id), body))
        return {"instance_id": instance_id, "suspended": True}

    def resume(self, instance_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._call("ResumeInstance", _with_reason(pb.ResumeRequest(instanceId=instance_id), body))
        return {"instance_id": instance_id, "resumed": True}

    def raise_event(self, instance_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = _text_field(body, "name", required=True)
        request = pb.RaiseEventRequest(instanceId=instance_id, name=name)
        data = _json_text(body, "data")
        if data is not None:
            request.input.value = data
        self.instance(instance_id)  # an unknown instance is 404, not a silently dropped event
        self._call("RaiseEvent", request)
        return {"instance_id": instance_id, "raised": name}

    def rewind(self, instance_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = pb.RewindInstanceRequest(instanceId=instance_id)
        reason = _text_field(body, "reason")
        if reason is not None:
            request.reason.value = reason
        self._call("RewindInstance", request)
        return {"instance_id": instance_id, "rewound": True}

    def restart(self, instance_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = pb.RestartInstanceRequest(
            instanceId=instance_id, restartWithNewInstanceId=_flag(body, "new_instance_id")
        )
        response = self._call("RestartInstance", request)
        return {"instance_id": response.instanceId, "restarted": True}

    def purge(self, instance_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = pb.PurgeInstancesRequest(instanceId=instance_id, recursive=_flag(body, "recursive"))
        response = self._call("PurgeInstances", request)
        if response.deletedInstanceCount == 0:
            self.instance(instance_id)  # 404 when unknown
            raise ApiError(409, f"orchestration instance {instance_id!r} was not purged: it has not finished")
        return {"instance_id": instance_id, "purged": response.deletedInstanceCount}
