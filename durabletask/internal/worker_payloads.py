"""What the worker reports when a result holds a payload over the payload store's limit.

Such a result can never be stored, so sending it again would fail the same way: the activity
fails, the orchestration ends FAILED, or the entity batch's operations fail, each with a
non-retriable failure of type ``PayloadTooLarge`` that names the part, its size and the limit
(``LargePayloadStorageOptions.max_stored_payload_bytes``). The helpers here only name the part
and build the failure details; ``worker_completions`` builds the replacement messages.
"""

from __future__ import annotations

from google.protobuf import message as pb_message
from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entity_executor import to_batch_request
from durabletask.payload.helpers import payload_fields
from durabletask.payload.store import PayloadStore, PayloadTooLargeError

PAYLOAD_TOO_LARGE_ERROR_TYPE = "PayloadTooLarge"


def payload_too_large_details(part: str, error: PayloadTooLargeError) -> pb.TaskFailureDetails:
    """Non-retriable failure details: ``part`` (e.g. "the result of activity 'x'") is too large to store."""
    return pb.TaskFailureDetails(
        errorType=PAYLOAD_TOO_LARGE_ERROR_TYPE,
        errorMessage=(
            f"{part} is {error.size} bytes, over the limit of {error.limit} bytes set by "
            "LargePayloadStorageOptions.max_stored_payload_bytes"
        ),
        isNonRetriable=True,
    )


def _over_limit(message: pb_message.Message, store: PayloadStore) -> bool:
    """Whether ``message`` holds a payload (not a token) longer than the store's limit."""
    limit = store.options.max_stored_payload_bytes
    fields = [message] if isinstance(message, wrappers_pb2.StringValue) else payload_fields(message)
    return any(
        len(field.value.encode("utf-8")) > limit for field in fields if not store.is_known_token(field.value)
    )


def _action_part(action: pb.OrchestratorAction) -> str:
    if action.HasField("completeOrchestration"):
        return "the output"
    if action.HasField("scheduleTask"):
        return f"the input of activity '{action.scheduleTask.name}'"
    if action.HasField("createSubOrchestration"):
        return f"the input of sub-orchestration '{action.createSubOrchestration.name}'"
    if action.HasField("sendEvent"):
        return f"the data of event '{action.sendEvent.name}'"
    if action.HasField("sendEntityMessage"):
        return "an entity message"
    return f"a {action.WhichOneof('orchestratorActionType') or 'blank'} action"


def oversize_turn_part(response: pb.OrchestratorResponse, store: PayloadStore) -> str:
    """Names the part of an orchestration turn whose payload is over the limit."""
    owner = f"orchestration '{response.instanceId}'"
    if response.HasField("customStatus") and _over_limit(response.customStatus, store):
        return f"the custom status of {owner}"
    for action in response.actions:
        if _over_limit(action, store):
            return f"{_action_part(action)} of {owner}"
    return f"a payload of {owner}"


def oversize_batch_part(
    req: pb.EntityBatchRequest | pb.EntityRequest, result: pb.EntityBatchResult, store: PayloadStore
) -> str:
    """Names the part of an entity batch's result whose payload is over the limit."""
    owner = f"entity '{req.instanceId}'"
    batch = req if isinstance(req, pb.EntityBatchRequest) else to_batch_request(req)[0]
    for position, outcome in enumerate(result.results):
        if _over_limit(outcome, store):
            name = f"'{batch.operations[position].operation}'" if position < len(batch.operations) else f"#{position + 1}"
            return f"the result of operation {name} of {owner}"
    if result.HasField("entityState") and _over_limit(result.entityState, store):
        return f"the state of {owner}"
    if any(_over_limit(action, store) for action in result.actions):
        return f"a message sent by {owner}"
    return f"a payload of {owner}"
