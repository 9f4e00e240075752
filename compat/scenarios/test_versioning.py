"""Orchestration versioning with the official worker's ``use_versioning`` on our sidecar.

Each test has a sidecar of its own: the session worker takes any version and would compete for
these instances.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compat_support import completed, new_id, wait_until
from compat_versioned import labelled, recording_logger

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import (
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
)

STRICT, CURRENT_OR_OLDER = VersionMatchStrategy.STRICT, VersionMatchStrategy.CURRENT_OR_OLDER
FAIL, REJECT = VersionFailureStrategy.FAIL, VersionFailureStrategy.REJECT


def versioned_worker(
    label: str, options: VersioningOptions
) -> Callable[[TaskHubGrpcWorker], None]:
    """Registers ``labelled(label)``'s functions and applies ``options``."""
    register = labelled(label)

    def setup(worker: TaskHubGrpcWorker) -> None:
        register(worker)
        worker.use_versioning(options)

    return setup


def start(hub: TaskHubGrpcClient, version: str | None, name: str = "versioned") -> str:
    """Starts ``name`` at ``version`` (``None``: no version)."""
    return hub.schedule_new_orchestration(name, instance_id=new_id(f"v{version}"), version=version)


def test_strict_fail(private_sidecar: Any, official_worker: Any) -> None:
    address = private_sidecar().address
    official_worker(address, versioned_worker("w1", VersioningOptions(version="1.0", match_strategy=STRICT, failure_strategy=FAIL)))
    hub = TaskHubGrpcClient(host_address=address)
    try:
        ids = {version: start(hub, version) for version in ("1.0", "2.0", "0.9", None)}
        matching = completed(hub, ids["1.0"])
        assert matching.runtime_status == OrchestrationStatus.COMPLETED
        assert matching.get_output() == {"version": "1.0", "orchestrator": "w1", "activity": "w1"}
        for version in ("2.0", "0.9", None):
            state = completed(hub, ids[version])
            assert state.runtime_status == OrchestrationStatus.FAILED, version
            assert state.failure_details is not None and state.failure_details.error_type == "VersionMismatch"
            assert f"'{version}'" in state.failure_details.message and "'1.0'" in state.failure_details.message
    finally:
        hub.close()


def test_current_or_older_fail(private_sidecar: Any, official_worker: Any) -> None:
    address = private_sidecar().address
    options = VersioningOptions(version="2.0", default_version="2.0", match_strategy=CURRENT_OR_OLDER, failure_strategy=FAIL)
    official_worker(address, versioned_worker("w2", options))
    hub = TaskHubGrpcClient(host_address=address)
    try:
        ids = {version: start(hub, version) for version in ("1.0", "1.10", "2.0", "10.0", None)}
        for version in ("1.0", "1.10", "2.0", None):
            state = completed(hub, ids[version])
            assert state.runtime_status == OrchestrationStatus.COMPLETED, version
            assert state.get_output() == {"version": version, "orchestrator": "w2", "activity": "w2"}
        # Versions compare as versions, not strings: 10.0 is newer than 2.0.
        newer = completed(hub, ids["10.0"])
        assert newer.runtime_status == OrchestrationStatus.FAILED
        assert newer.failure_details is not None and newer.failure_details.error_type == "VersionMismatch"
        assert "'10.0'" in newer.failure_details.message

        # A sub-orchestration started without a version gets the worker's default_version.
        parent = completed(hub, start(hub, "1.0", name="versioned_parent"))
        assert parent.runtime_status == OrchestrationStatus.COMPLETED
        assert parent.get_output() == {
            "version": "1.0",
            "child": {"version": "2.0", "orchestrator": "w2", "activity": "w2"},
        }
    finally:
        hub.close()


def test_strict_fail_reaches_the_parent(private_sidecar: Any, official_worker: Any) -> None:
    address = private_sidecar().address
    # The default version of sub-orchestrations (3.0) is one this STRICT worker refuses.
    options = VersioningOptions(version="1.0", default_version="3.0", match_strategy=STRICT, failure_strategy=FAIL)
    official_worker(address, versioned_worker("w1", options))
    hub = TaskHubGrpcClient(host_address=address)
    try:
        parent = completed(hub, start(hub, "1.0", name="versioned_parent"))
        assert parent.runtime_status == OrchestrationStatus.FAILED
        assert parent.failure_details is not None
        assert "'3.0'" in parent.failure_details.message
    finally:
        hub.close()


def test_reject_hands_the_instance_to_a_matching_worker(private_sidecar: Any, official_worker: Any) -> None:
    address = private_sidecar().address
    logger, log = recording_logger("compat-v1-rejecting")
    official_worker(
        address,
        versioned_worker("w1", VersioningOptions(version="1.0", match_strategy=STRICT, failure_strategy=REJECT)),
        logger=logger,
    )
    hub = TaskHubGrpcClient(host_address=address)
    try:
        newer = start(hub, "2.0")
        wait_until(lambda: log.saw(f"Abandoning orchestration. InstanceId = '{newer}'"), "the v1 worker to reject the v2 instance")
        state = hub.get_orchestration_state(newer)
        assert state is not None and state.runtime_status == OrchestrationStatus.PENDING

        # Started right away: the sidecar's back-off after a rejection is still short.
        official_worker(
            address, versioned_worker("w2", VersioningOptions(version="2.0", match_strategy=STRICT, failure_strategy=REJECT))
        )
        done = completed(hub, newer)
        assert done.runtime_status == OrchestrationStatus.COMPLETED
        output = done.get_output()
        assert (output["version"], output["orchestrator"]) == ("2.0", "w2")
        # With both workers connected, a v1 instance still ends up on the v1 worker.
        older = completed(hub, start(hub, "1.0"))
        assert older.runtime_status == OrchestrationStatus.COMPLETED
        assert (older.get_output()["version"], older.get_output()["orchestrator"]) == ("1.0", "w1")
    finally:
        hub.close()
