"""How replay names actions and history events in its non-determinism messages (a leaf module)."""

from __future__ import annotations

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph


def describe_action(action: pb.OrchestratorAction) -> str:
    """How the orchestrator code produced an action, e.g. ``call_activity('a')``."""
    kind = action.WhichOneof("orchestratorActionType")
    if kind == "scheduleTask":
        return f"call_activity('{action.scheduleTask.name}')"
    if kind == "createSubOrchestration":
        return f"call_sub_orchestrator('{action.createSubOrchestration.name}')"
    if kind == "createTimer":
        return f"create_timer({ph.to_datetime(action.createTimer.fireAt).isoformat()})"
    if kind == "sendEvent":
        return f"send_event('{action.sendEvent.instance.instanceId}', '{action.sendEvent.name}')"
    if kind == "sendEntityMessage":
        return describe_entity_action(action)
    if kind == "completeOrchestration":
        return "the orchestration's completion"
    return str(kind)


def describe_event(event: pb.HistoryEvent) -> str:
    """A history event as named in error messages, e.g. ``a taskScheduled('a')``."""
    kind = event.WhichOneof("eventType")
    if kind == "taskScheduled":
        return f"a taskScheduled('{event.taskScheduled.name}')"
    if kind == "subOrchestrationInstanceCreated":
        return f"a subOrchestrationInstanceCreated('{event.subOrchestrationInstanceCreated.name}')"
    if kind == "eventSent":
        return f"an eventSent('{event.eventSent.instanceId}', '{event.eventSent.name}')"
    return f"a {kind}"


def describe_expected_call(event: pb.HistoryEvent) -> str:
    """The call a scheduling history event records, e.g. ``call_activity('a') with task id 1``."""
    kind = event.WhichOneof("eventType")
    if kind == "taskScheduled":
        call = f"call_activity('{event.taskScheduled.name}')"
    elif kind == "subOrchestrationInstanceCreated":
        call = f"call_sub_orchestrator('{event.subOrchestrationInstanceCreated.name}')"
    elif kind == "timerCreated":
        call = f"create_timer({ph.to_datetime(event.timerCreated.fireAt).isoformat()})"
    elif kind == "eventSent":
        call = f"send_event('{event.eventSent.instanceId}', '{event.eventSent.name}')"
    else:
        call = f"a call recorded as {kind}"
    return f"{call} with task id {event.eventId}"


def describe_entity_action(action: pb.OrchestratorAction) -> str:
    """How the orchestrator code produced a sendEntityMessage action."""
    message = action.sendEntityMessage
    kind = message.WhichOneof("EntityMessageType")
    if kind == "entityOperationCalled":
        m = message.entityOperationCalled
        return f"call_entity('{m.targetInstanceId.value}', '{m.operation}')"
    if kind == "entityOperationSignaled":
        s = message.entityOperationSignaled
        return f"signal_entity('{s.targetInstanceId.value}', '{s.operation}')"
    if kind == "entityLockRequested":
        return f"lock_entities({list(message.entityLockRequested.lockSet)})"
    if kind == "entityUnlockSent":
        return f"the release of the lock on '{message.entityUnlockSent.targetInstanceId.value}'"
    return "an entity message"
