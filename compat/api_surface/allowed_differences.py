"""Known, deliberate differences from the official API surface, each with its reason.

A key is a dotted name as ``compare_api_surface.py`` prints it (a module, ``module.Name``,
``module.Name.member`` or ``...(parameter)``); it also covers everything under it. Keys with ``*``
are ``fnmatch`` patterns. An entry that no longer matches any difference fails the comparison.
"""

from __future__ import annotations

SCHEDULE_CODEC = (
    "internal plumbing of scheduled tasks: our ScheduleOperationRequest is a dataclass the data converter "
    "carries as is, and ScheduleState.from_json reads the stored (.NET-compatible) form without a converter"
)
ENTITY_OPERATION_INPUT = (
    "an entity operation of the schedule entity; our dispatcher passes the input positionally, so the "
    "parameter's name is not part of the API"
)

ALLOWED: dict[str, str] = {
    "durabletask.worker.ExecutionResults": (
        "the official orchestration executor's internal result type (protobuf actions); user code never sees it"
    ),
    "durabletask.testing*.InMemoryOrchestrationBackend.[A-Z]*": (
        "the official test backend is a gRPC servicer whose RPC handlers are methods; ours runs our sidecar "
        "and serves the same RPCs from it, so the handlers are not methods of the backend object"
    ),
    **{
        f"durabletask.testing.in_memory_backend.{name}": (
            "bookkeeping classes inside the official in-memory backend; ours keeps that state in the sidecar's store"
        )
        for name in (
            "ActivityWorkItem", "EntityState", "EntityWorkItem", "OrchestrationInstance", "PendingLockRequest",
            "StateWaiter",
        )
    },
    "durabletask.scheduled*.ScheduleOperationRequest.to_json": SCHEDULE_CODEC,
    "durabletask.scheduled*.ScheduleOperationRequest.from_json": SCHEDULE_CODEC,
    "durabletask.scheduled*.ScheduleState.from_json(converter)": SCHEDULE_CODEC,
    "durabletask.scheduled.schedule_entity.Schedule.delete(input)": ENTITY_OPERATION_INPUT,
    "durabletask.scheduled.schedule_entity.Schedule.pause_schedule(_)": ENTITY_OPERATION_INPUT,
    "durabletask.scheduled.schedule_entity.Schedule.resume_schedule(_)": ENTITY_OPERATION_INPUT,
}
