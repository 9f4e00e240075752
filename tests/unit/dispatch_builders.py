"""Shared pieces of the dispatcher's unit tests: an instance to start, and what a stream holds."""

from __future__ import annotations

from datetime import datetime, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.work_streams import WorkStream

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def start(hub: TaskHub, iid: str, now: datetime = T0) -> None:
    """Create orchestration ``iid`` (name "orch", execution "<iid>-e") with its executionStarted."""
    inst = InstanceSnapshot(instance_id=iid, execution_id=f"{iid}-e", name="orch",
                            status=pb.ORCHESTRATION_STATUS_PENDING, created_at=now, last_updated_at=now)
    event = engine_events.new_execution_started(name="orch", instance_id=iid, execution_id=f"{iid}-e", now=now)
    hub.create_instance(inst, event, now, now)


def queued(stream: WorkStream) -> list[pb.WorkItem]:
    """The work items on the stream's queue now, without health pings (nothing is waited for)."""
    items = []
    while stream.queue.qsize():
        item = stream.queue.get(block=False)
        if item is not None and not item.HasField("healthPing"):
            items.append(item)
    return items
