"""The entity RPCs of the sidecar's servicer: signal, get, query, clean, and the worker's batch calls.

Choices where the protocol leaves room:

- Entity instance IDs must be ``@name@key`` (neither part empty, no other '@'); the name
  is lower-cased, as every SDK does, so ``@Counter@a`` and ``@counter@a`` are one entity.
- GetEntity reports an entity that exists (has state, a lock or a message due now);
  ``exists=false`` otherwise: a delayed signal alone does not make an entity exist before its
  time. ``lockedBy`` is the orchestration instance holding the lock.
- QueryEntities: ``instanceIdStartsWith`` gets a leading '@' when missing (and its name part
  lower-cased); ``lastModifiedTo`` is exclusive; without ``includeTransient`` only entities
  with state are listed, with it every entity GetEntity would find.
- CleanEntityStorage does all the work in one call (no continuation token).
- ``SignalEntityRequest.parentTraceContext`` is kept with the queued signal and handed to the
  worker as the operation's ``OperationRequest.traceContext`` (see ``work_streams.to_work_item``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.dispatch import Dispatcher
from sidecar.engine_events import new_event, to_timestamp
from sidecar.entity_scheduler import EntityIdError, normalize_entity_id, normalize_prefix
from sidecar.hub import TaskHub
from sidecar.servicer_util import (
    BadRequest,
    check_instance_id,
    check_name,
    check_token,
    check_trace_context,
    mapped_errors,
    optional_string,
    optional_time,
)
from sidecar.store.base import DEFAULT_PAGE_SIZE, EntityQueryFilter, EntitySnapshot

log = logging.getLogger("durabletask-sidecar")


def check_entity_id(value: str, field: str = "instanceId") -> str:
    """The canonical form of an entity instance ID from a request; BadRequest naming the problem."""
    check_instance_id(value, field)
    try:
        return normalize_entity_id(value)
    except EntityIdError as exc:
        raise BadRequest(f"{field}: {exc}") from None


def to_metadata(entity: EntitySnapshot) -> pb.EntityMetadata:
    """The wire form of an entity record (state only when the snapshot carries it)."""
    metadata = pb.EntityMetadata(
        instanceId=entity.instance_id,
        lastModifiedTime=to_timestamp(entity.last_modified_at),
        backlogQueueSize=entity.backlog,
    )
    if entity.locked_by is not None:
        metadata.lockedBy.value = entity.locked_by
    if entity.state is not None:
        metadata.serializedState.value = entity.state
    return metadata


class EntityServicerMixin:
    """Entity RPCs of :class:`sidecar.server.SidecarServicer`."""

    hub: TaskHub
    dispatcher: Dispatcher
    clock: Callable[[], datetime]

    @mapped_errors
    def SignalEntity(self, request: pb.SignalEntityRequest, context: grpc.ServicerContext) -> Any:
        entity_id = check_entity_id(request.instanceId)
        check_name(request.name, "name", "the operation to signal")
        trace = check_trace_context(request)
        now = self.clock()
        event = new_event(now)
        signaled = event.entityOperationSignaled
        signaled.requestId = request.requestId or uuid.uuid4().hex
        signaled.operation = request.name
        signaled.targetInstanceId.value = entity_id
        if request.HasField("input"):
            signaled.input.CopyFrom(request.input)
        scheduled = optional_time(request, "scheduledTime")
        if scheduled is not None:
            signaled.scheduledTime.CopyFrom(request.scheduledTime)
        visible_at = scheduled if scheduled is not None and scheduled > now else now
        self.hub.signal_entity(entity_id, event, visible_at, now, trace)
        return pb.SignalEntityResponse()

    @mapped_errors
    def GetEntity(self, request: pb.GetEntityRequest, context: grpc.ServicerContext) -> Any:
        entity_id = check_entity_id(request.instanceId)
        entity = self.hub.get_entity(entity_id, self.clock(), request.includeState)
        if entity is None:
            return pb.GetEntityResponse(exists=False)
        return pb.GetEntityResponse(exists=True, entity=to_metadata(entity))

    @mapped_errors
    def QueryEntities(self, request: pb.QueryEntitiesRequest, context: grpc.ServicerContext) -> Any:
        q = request.query
        prefix = optional_string(q, "instanceIdStartsWith")
        query = EntityQueryFilter(
            instance_id_prefix=normalize_prefix(prefix) if prefix else None,
            modified_from=optional_time(q, "lastModifiedFrom"),
            modified_to=optional_time(q, "lastModifiedTo"),
            include_state=q.includeState,
            include_transient=q.includeTransient,
        )
        page_size = DEFAULT_PAGE_SIZE
        if q.HasField("pageSize"):
            if q.pageSize.value < 0:
                raise BadRequest(f"query.pageSize must not be negative (got {q.pageSize.value})")
            page_size = q.pageSize.value or DEFAULT_PAGE_SIZE
        continuation = optional_string(q, "continuationToken") or None
        items, token = self.hub.query_entities(query, page_size, continuation, self.clock())
        response = pb.QueryEntitiesResponse(entities=[to_metadata(e) for e in items])
        if token is not None:
            response.continuationToken.value = token
        return response

    @mapped_errors
    def CleanEntityStorage(self, request: pb.CleanEntityStorageRequest, context: grpc.ServicerContext) -> Any:
        removed, released = self.hub.clean_entity_storage(
            request.removeEmptyEntities, request.releaseOrphanedLocks, self.clock()
        )
        if removed or released:
            log.info("clean entity storage: %d empty entities removed, %d orphaned locks released", removed, released)
        return pb.CleanEntityStorageResponse(emptyEntitiesRemoved=removed, orphanedLocksReleased=released)

    @mapped_errors
    def CompleteEntityTask(self, request: pb.EntityBatchResult, context: grpc.ServicerContext) -> Any:
        check_token(request.completionToken)
        self.dispatcher.complete_entity(request)
        return pb.CompleteTaskResponse()

    @mapped_errors
    def AbandonTaskEntityWorkItem(self, request: pb.AbandonEntityTaskRequest, context: grpc.ServicerContext) -> Any:
        self.dispatcher.abandon_entity(check_token(request.completionToken))
        return pb.AbandonEntityTaskResponse()
