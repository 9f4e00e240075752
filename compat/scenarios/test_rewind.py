"""Rewind through the official client, carried out by the official worker on our sidecar."""

from __future__ import annotations

import compat_functions as fn
import grpc
import pytest
from compat_support import completed, new_id

from durabletask import history
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient


def test_rewind_keeps_good_results_and_reruns_the_failed_activity(hub: TaskHubGrpcClient) -> None:
    key = new_id("rw")
    fn.set_broken(key, True)
    instance_id = hub.schedule_new_orchestration(fn.rewindable, input=key)
    failed = completed(hub, instance_id)
    assert failed.runtime_status == OrchestrationStatus.FAILED
    assert failed.failure_details is not None and f"{key} is broken" in failed.failure_details.message
    assert (fn.attempts_of(f"counted:{key}"), fn.attempts_of(f"switch:{key}")) == (1, 1)

    fn.set_broken(key, False)
    hub.rewind_orchestration(instance_id, reason="repaired")
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == [f"good {key}", f"repaired {key}"]
    assert state.failure_details is None
    # The successful activity's result was kept; only the failed one ran again.
    assert (fn.attempts_of(f"counted:{key}"), fn.attempts_of(f"switch:{key}")) == (1, 2)
    events = hub.get_orchestration_history(instance_id)
    rewound = [e for e in events if isinstance(e, history.ExecutionRewoundEvent)]
    assert [e.reason for e in rewound] == ["repaired"]
    assert not any(isinstance(e, history.TaskFailedEvent) for e in events)


def test_rewind_a_failed_sub_orchestration_recursively(hub: TaskHubGrpcClient) -> None:
    key = new_id("rwtree")
    fn.set_broken(key, True)
    instance_id = hub.schedule_new_orchestration(fn.rewindable_parent, input=key, instance_id=key)
    child_id = f"{instance_id}-child"
    parent_failed = completed(hub, instance_id)
    assert parent_failed.runtime_status == OrchestrationStatus.FAILED
    assert completed(hub, child_id).runtime_status == OrchestrationStatus.FAILED
    assert fn.attempts_of(f"counted:{key}-parent") == 1

    fn.set_broken(key, False)
    hub.rewind_orchestration(instance_id, reason="child repaired")
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == {
        "parent": f"good {key}-parent",
        "child": [f"good {key}", f"repaired {key}"],
    }
    child = completed(hub, child_id)
    assert child.runtime_status == OrchestrationStatus.COMPLETED
    assert child.get_output() == [f"good {key}", f"repaired {key}"]
    # Neither the parent's nor the child's good activity ran again; the failed one ran once more.
    assert fn.attempts_of(f"counted:{key}-parent") == 1
    assert (fn.attempts_of(f"counted:{key}"), fn.attempts_of(f"switch:{key}")) == (1, 2)
    child_events = hub.get_orchestration_history(child_id)
    assert any(isinstance(e, history.ExecutionRewoundEvent) for e in child_events)


def test_rewind_refuses_an_instance_that_did_not_fail(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.chain, input=["done"])
    assert completed(hub, instance_id).runtime_status == OrchestrationStatus.COMPLETED
    with pytest.raises(grpc.RpcError) as refused:
        hub.rewind_orchestration(instance_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert instance_id in (refused.value.details() or "")
    state = hub.get_orchestration_state(instance_id)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == ["Hello, done!"]


def test_rewind_of_an_unknown_instance_is_not_found(hub: TaskHubGrpcClient) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        hub.rewind_orchestration(new_id("nobody"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
