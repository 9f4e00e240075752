"""Response parsing shared by the sync and async clients: wire messages to the client's types."""

from __future__ import annotations

from collections.abc import Sequence

from durabletask import history
from durabletask.entities import EntityMetadata
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.client_requests import has_failure
from durabletask.internal.client_types import (
    OrchestrationState,
    OrchestrationStatus,
    Page,
    PurgeInstancesResult,
)
from durabletask.internal.proto_helpers import failure_details_from_pb
from durabletask.serialization import DataConverter, default_converter


def parse_orchestration_state(
    state: pb.OrchestrationState, data_converter: DataConverter | None = None
) -> OrchestrationState:
    """Convert a wire OrchestrationState."""

    def optional(name: str) -> str | None:
        return getattr(state, name).value if state.HasField(name) else None

    return OrchestrationState(
        state.instanceId,
        state.name,
        OrchestrationStatus(state.orchestrationStatus),
        state.createdTimestamp.ToDatetime(),
        state.lastUpdatedTimestamp.ToDatetime(),
        optional("input"),
        optional("output"),
        optional("customStatus"),
        failure_details_from_pb(state.failureDetails) if has_failure(state.failureDetails) else None,
        data_converter if data_converter is not None else default_converter(),
        version=optional("version"),
        tags=dict(state.tags),
        completed_at=state.completedTimestamp.ToDatetime() if state.HasField("completedTimestamp") else None,
        parent_instance_id=optional("parentInstanceId"),
    )


def new_orchestration_state(
    instance_id: str, res: pb.GetInstanceResponse, data_converter: DataConverter | None = None
) -> OrchestrationState | None:
    """The state in a GetInstance-style response, or None when the instance does not exist."""
    if not res.exists:
        return None
    parsed = parse_orchestration_state(res.orchestrationState, data_converter)
    parsed.instance_id = instance_id
    return parsed


def new_purge_instances_result(response: pb.PurgeInstancesResponse) -> PurgeInstancesResult:
    """Convert a PurgeInstancesResponse, keeping 'not reported' distinct from False."""
    is_complete = response.isComplete.value if response.HasField("isComplete") else None
    return PurgeInstancesResult(response.deletedInstanceCount, is_complete)


def new_instance_id_page(response: pb.ListInstanceIdsResponse) -> Page[str]:
    """Convert a ListInstanceIdsResponse."""
    token = response.lastInstanceKey.value if response.HasField("lastInstanceKey") else None
    return Page(items=list(response.instanceIds), continuation_token=token or None)


def entity_metadata_from_pb(entity: pb.EntityMetadata, include_state: bool, converter: DataConverter) -> EntityMetadata:
    """Convert a wire EntityMetadata."""
    return EntityMetadata.from_entity_metadata(entity, include_state, converter)


def history_from_chunks(chunks: Sequence[pb.HistoryChunk]) -> list[history.HistoryEvent]:
    """Flatten history chunks into ``durabletask.history`` events, oldest first."""
    return [history.from_protobuf(event) for chunk in chunks for event in chunk.events]
