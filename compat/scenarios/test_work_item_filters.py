"""Work-item filters (``use_work_item_filters``) of official workers, applied by our sidecar's routing.

Each test has a sidecar of its own, with only the workers it starts. The workers fail (``FAIL``)
what does not match them, or have not registered it, so an instance routed to the wrong worker
would end ``FAILED``: ``COMPLETED`` with the right labels proves the routing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compat_support import completed, new_id
from compat_versioned import labelled

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import (
    ActivityWorkItemFilter,
    OrchestrationWorkItemFilter,
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
    WorkItemFilters,
)


def filtered_worker(
    label: str,
    filters: WorkItemFilters | None = None,
    version: str | None = None,
    name: str = "versioned",
    activity_name: str = "whoami",
) -> Callable[[TaskHubGrpcWorker], None]:
    """``labelled`` functions; STRICT/FAIL versioning when ``version`` is given; the filters derived
    from the registrations when ``filters`` is None, else those."""
    register = labelled(label, name=name, activity_name=activity_name)

    def setup(worker: TaskHubGrpcWorker) -> None:
        register(worker)
        if version is not None:
            worker.use_versioning(
                VersioningOptions(
                    version=version,
                    match_strategy=VersionMatchStrategy.STRICT,
                    failure_strategy=VersionFailureStrategy.FAIL,
                )
            )
        if filters is None:
            worker.use_work_item_filters()
        else:
            worker.use_work_item_filters(filters)

    return setup


def test_derived_filters_keep_each_version_on_its_worker(private_sidecar: Any, official_worker: Any) -> None:
    address = private_sidecar().address
    official_worker(address, filtered_worker("w1", version="1"))
    official_worker(address, filtered_worker("w2", version="2"))
    hub = TaskHubGrpcClient(host_address=address)
    try:
        versions = ["1", "2"] * 4
        ids = [hub.schedule_new_orchestration("versioned", instance_id=new_id(f"v{v}"), version=v) for v in versions]
        for version, instance_id in zip(versions, ids, strict=True):
            state = completed(hub, instance_id)
            assert state.runtime_status == OrchestrationStatus.COMPLETED, (version, state.failure_details)
            # The activity, queued under its orchestration's version, went to the same worker.
            assert state.get_output() == {"version": version, "orchestrator": f"w{version}", "activity": f"w{version}"}
    finally:
        hub.close()


def test_derived_filters_route_by_name(private_sidecar: Any, official_worker: Any) -> None:
    address = private_sidecar().address
    official_worker(address, filtered_worker("alpha-worker", name="alpha", activity_name="alpha_step"))
    official_worker(address, filtered_worker("beta-worker", name="beta", activity_name="beta_step"))
    hub = TaskHubGrpcClient(host_address=address)
    try:
        names = ["alpha", "beta"] * 3
        ids = [hub.schedule_new_orchestration(name, instance_id=new_id(name)) for name in names]
        for name, instance_id in zip(names, ids, strict=True):
            state = completed(hub, instance_id)
            # Without filters, the other worker would be offered it and fail it as not registered.
            assert state.runtime_status == OrchestrationStatus.COMPLETED, (name, state.failure_details)
            assert state.get_output() == {"version": None, "orchestrator": f"{name}-worker", "activity": f"{name}-worker"}
    finally:
        hub.close()


def test_explicit_filters(private_sidecar: Any, official_worker: Any) -> None:
    address = private_sidecar().address
    only_v2 = WorkItemFilters(
        orchestrations=[OrchestrationWorkItemFilter("versioned", ["2"])],
        activities=[ActivityWorkItemFilter("whoami", ["2"])],
    )
    official_worker(address, filtered_worker("explicit-v2", filters=only_v2))
    official_worker(address, filtered_worker("w1", version="1"))
    hub = TaskHubGrpcClient(host_address=address)
    try:
        unclaimed = hub.schedule_new_orchestration("versioned", instance_id=new_id("v3"), version="3")
        ids = {v: hub.schedule_new_orchestration("versioned", instance_id=new_id(f"v{v}"), version=v) for v in ("2", "1")}
        for version, label in (("2", "explicit-v2"), ("1", "w1")):
            state = completed(hub, ids[version])
            assert state.runtime_status == OrchestrationStatus.COMPLETED, (version, state.failure_details)
            assert state.get_output() == {"version": version, "orchestrator": label, "activity": label}
        # Nobody asked for version 3: it waits, PENDING, though started before the others finished...
        waiting = hub.get_orchestration_state(unclaimed)
        assert waiting is not None and waiting.runtime_status == OrchestrationStatus.PENDING

        # ...until a worker whose explicit filters name it connects.
        only_v3 = WorkItemFilters(
            orchestrations=[OrchestrationWorkItemFilter("versioned", ["3"])],
            activities=[ActivityWorkItemFilter("whoami", ["3"])],
        )
        official_worker(address, filtered_worker("explicit-v3", filters=only_v3))
        state = completed(hub, unclaimed)
        assert state.runtime_status == OrchestrationStatus.COMPLETED
        assert state.get_output() == {"version": "3", "orchestrator": "explicit-v3", "activity": "explicit-v3"}
    finally:
        hub.close()
