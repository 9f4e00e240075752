"""Worker options, filters, versioning rules, registration and the stream request."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import FrozenInstanceError

import pytest

from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.protocol_extensions import KEEPS_REPLAY_STATE
from durabletask.internal.registry import (
    ActivityNotRegisteredError as RegistryActivityError,
)
from durabletask.worker import (
    ActivityNotRegisteredError,
    ActivityWorkItemFilter,
    ConcurrencyOptions,
    EntityNotRegisteredError,
    EntityWorkItemFilter,
    OrchestrationWorkItemFilter,
    OrchestratorNotRegisteredError,
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
    WorkItemFilters,
    compare_versions,
    version_mismatch,
)


def orchestrator(ctx, _):
    return "done"


def activity(ctx, value):
    return value


def counter(ctx, _):
    return None


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrency_defaults_follow_cpu_count() -> None:
    cpus = os.cpu_count() or 1
    options = ConcurrencyOptions()
    assert options.maximum_concurrent_activity_work_items == 100 * cpus
    assert options.maximum_concurrent_orchestration_work_items == 100 * cpus
    assert options.maximum_concurrent_entity_work_items == 100 * cpus
    assert options.maximum_thread_pool_workers == cpus + 4


def test_concurrency_explicit_values_and_validation() -> None:
    options = ConcurrencyOptions(
        maximum_concurrent_activity_work_items=3,
        maximum_concurrent_orchestration_work_items=4,
        maximum_concurrent_entity_work_items=5,
        maximum_thread_pool_workers=6,
    )
    assert (
        options.maximum_concurrent_activity_work_items,
        options.maximum_concurrent_orchestration_work_items,
        options.maximum_concurrent_entity_work_items,
        options.maximum_thread_pool_workers,
    ) == (3, 4, 5, 6)
    with pytest.raises(ValueError, match="maximum_concurrent_activity_work_items"):
        ConcurrencyOptions(maximum_concurrent_activity_work_items=0)
    with pytest.raises(ValueError, match="maximum_thread_pool_workers"):
        ConcurrencyOptions(maximum_thread_pool_workers=-1)


def test_errors_are_the_registry_errors_and_value_errors() -> None:
    assert ActivityNotRegisteredError is RegistryActivityError
    for error in (OrchestratorNotRegisteredError, ActivityNotRegisteredError, EntityNotRegisteredError):
        assert issubclass(error, ValueError)


def test_versioning_options_and_enums() -> None:
    options = VersioningOptions(
        version="1.0",
        default_version="0.9",
        match_strategy=VersionMatchStrategy.STRICT,
        failure_strategy=VersionFailureStrategy.FAIL,
    )
    assert (options.version, options.default_version) == ("1.0", "0.9")
    assert [m.name for m in VersionMatchStrategy] == ["NONE", "STRICT", "CURRENT_OR_OLDER"]
    assert [f.name for f in VersionFailureStrategy] == ["REJECT", "FAIL"]
    assert VersioningOptions().match_strategy is None


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (None, None, 0),
        ("", None, 0),
        (None, "1.0", -1),
        ("1.0", None, 1),
        ("1.0", "1.0.0", 0),
        ("1.2", "1.10", -1),
        ("2.0", "1.10", 1),
        ("beta", "alpha", 1),
    ],
)
def test_compare_versions(left, right, expected) -> None:
    assert compare_versions(left, right) == expected


def test_version_mismatch_rules() -> None:
    strict = VersioningOptions(version="1.5", match_strategy=VersionMatchStrategy.STRICT)
    assert version_mismatch(strict, "1.5") is None
    assert "does not match" in (version_mismatch(strict, "1.4") or "")
    older = VersioningOptions(version="1.5", match_strategy=VersionMatchStrategy.CURRENT_OR_OLDER)
    assert version_mismatch(older, "1.4") is None
    assert version_mismatch(older, None) is None
    assert "greater" in (version_mismatch(older, "2.0") or "")
    assert version_mismatch(VersioningOptions(version="1", match_strategy=VersionMatchStrategy.NONE), "9") is None
    assert version_mismatch(None, "9") is None


def test_version_gate_fail_and_reject() -> None:
    worker = TaskHubGrpcWorker()
    assert worker._version_gate("anything") is None
    worker.use_versioning(
        VersioningOptions(
            version="2", match_strategy=VersionMatchStrategy.STRICT, failure_strategy=VersionFailureStrategy.FAIL
        )
    )
    verdict = worker._version_gate("1")
    assert verdict is not None and not verdict.reject
    assert verdict.details.errorType == "VersionMismatch"
    assert verdict.details.isNonRetriable
    assert worker._version_gate("2") is None
    worker.use_versioning(VersioningOptions(version="2", match_strategy=VersionMatchStrategy.STRICT))
    rejected = worker._version_gate("3")
    assert rejected is not None and rejected.reject


def test_filters_are_frozen_and_entity_names_lowercased() -> None:
    f = EntityWorkItemFilter("Counter")
    assert f.name == "counter"
    with pytest.raises(FrozenInstanceError):
        f.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        EntityWorkItemFilter("")
    with pytest.raises(ValueError):
        EntityWorkItemFilter("a@b")
    assert OrchestrationWorkItemFilter("o").versions == []
    assert WorkItemFilters().orchestrations == []


def test_filters_to_wire() -> None:
    filters = WorkItemFilters(
        orchestrations=[OrchestrationWorkItemFilter("orch", ["1", "2"])],
        activities=[ActivityWorkItemFilter("act")],
        entities=[EntityWorkItemFilter("Ent")],
    )
    wire = filters._to_grpc()
    assert [(o.name, list(o.versions)) for o in wire.orchestrations] == [("orch", ["1", "2"])]
    assert [(a.name, list(a.versions)) for a in wire.activities] == [("act", [])]
    assert [e.name for e in wire.entities] == ["ent"]


def test_request_carries_limits_capabilities_and_no_filters_by_default() -> None:
    worker = TaskHubGrpcWorker(
        concurrency_options=ConcurrencyOptions(
            maximum_concurrent_activity_work_items=7,
            maximum_concurrent_orchestration_work_items=8,
            maximum_concurrent_entity_work_items=9,
        )
    )
    worker.add_capability(pb.WORKER_CAPABILITY_SCHEDULED_TASKS)
    request = worker._build_request()
    assert request.maxConcurrentActivityWorkItems == 7
    assert request.maxConcurrentOrchestrationWorkItems == 8
    assert request.maxConcurrentEntityWorkItems == 9
    assert list(request.capabilities) == [pb.WORKER_CAPABILITY_SCHEDULED_TASKS, KEEPS_REPLAY_STATE]
    assert not request.HasField("workItemFilters")
    assert request.worker_instance_id


def test_the_replay_cache_capability_goes_with_the_cache() -> None:
    assert KEEPS_REPLAY_STATE in TaskHubGrpcWorker()._build_request().capabilities
    assert not TaskHubGrpcWorker(maximum_cached_orchestrations=0)._build_request().capabilities
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="cache size"):
            TaskHubGrpcWorker(maximum_cached_orchestrations=bad)  # type: ignore[arg-type]


def test_derived_filters_follow_registrations_and_strict_version() -> None:
    worker = TaskHubGrpcWorker()
    worker.add_orchestrator(orchestrator)
    worker.add_activity(activity)
    worker.add_entity(counter, "Counter")
    worker.use_work_item_filters()
    wire = worker._build_request().workItemFilters
    assert [o.name for o in wire.orchestrations] == ["orchestrator"]
    assert [a.name for a in wire.activities] == ["activity"]
    assert [e.name for e in wire.entities] == ["counter"]
    assert list(wire.orchestrations[0].versions) == []

    worker.use_versioning(VersioningOptions(version="3.1", match_strategy=VersionMatchStrategy.STRICT))
    wire = worker._build_request().workItemFilters
    assert list(wire.orchestrations[0].versions) == ["3.1"]
    assert list(wire.activities[0].versions) == ["3.1"]


def test_explicit_filters_and_clearing_them() -> None:
    worker = TaskHubGrpcWorker()
    worker.use_work_item_filters(WorkItemFilters(activities=[ActivityWorkItemFilter("only_this")]))
    wire = worker._build_request().workItemFilters
    assert [a.name for a in wire.activities] == ["only_this"]
    assert list(wire.orchestrations) == []
    worker.use_work_item_filters(None)
    assert not worker._build_request().HasField("workItemFilters")
    with pytest.raises(TypeError):
        worker.use_work_item_filters("orchestrator")


def test_registration_returns_names() -> None:
    worker = TaskHubGrpcWorker()
    assert worker.add_orchestrator(orchestrator) == "orchestrator"
    assert worker.add_activity(activity) == "activity"
    assert worker.add_entity(counter) == "counter"
    assert worker.add_entity(counter, name="Other") == "other"
    with pytest.raises(ValueError):
        worker.add_activity(lambda ctx, x: x)


def test_properties() -> None:
    worker = TaskHubGrpcWorker(payload_store=None, emit_trace_spans=False, exception_properties_provider=None)
    assert worker.maximum_timer_interval is not None and worker.maximum_timer_interval.days == 3
    assert worker.emit_trace_spans is False
    assert isinstance(worker.concurrency_options, ConcurrencyOptions)


def test_logger_configuration() -> None:
    handler = logging.StreamHandler()
    formatter = logging.Formatter("%(message)s")
    worker = TaskHubGrpcWorker(log_handler=handler, log_formatter=formatter)
    try:
        assert worker._logger.name == "durabletask-worker"
        assert handler in worker._logger.handlers
        assert handler.formatter is formatter
    finally:
        logging.getLogger("durabletask-worker").removeHandler(handler)
    custom = logging.getLogger("my-app")
    assert TaskHubGrpcWorker(logger=custom)._logger is custom
    with pytest.raises(ValueError):
        TaskHubGrpcWorker(logger=custom, log_handler=handler)


def test_running_worker_refuses_changes_and_stops_promptly_without_a_sidecar() -> None:
    worker = TaskHubGrpcWorker(
        host_address=f"localhost:{unused_port()}",
        resiliency_options=GrpcWorkerResiliencyOptions(
            reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.2
        ),
    )
    worker.add_orchestrator(orchestrator)
    with worker:
        worker.start()
        assert worker.is_running
        with pytest.raises(RuntimeError):
            worker.start()
        with pytest.raises(RuntimeError):
            worker.add_orchestrator(activity)
        with pytest.raises(RuntimeError):
            worker.add_activity(activity)
        with pytest.raises(RuntimeError):
            worker.add_entity(counter)
        with pytest.raises(RuntimeError):
            worker.use_work_item_filters()
        with pytest.raises(RuntimeError):
            worker.use_versioning(VersioningOptions())
        with pytest.raises(RuntimeError):
            worker.add_capability(1)
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert not worker.is_running
    worker.stop()  # a second stop is a no-op
    worker.add_activity(activity)  # registration works again once stopped
