"""Helpers shared by the compatibility scenarios."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from durabletask import client

ADDRESS_VARIABLE = "DURABLETASK_COMPAT_ADDRESS"
DEFAULT_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


def sidecar_address() -> str:
    """The address of the sidecar under test, given by the runner."""
    address = os.environ.get(ADDRESS_VARIABLE)
    if not address:
        raise RuntimeError(f"{ADDRESS_VARIABLE} is not set: run the scenarios through compat/run.py")
    return address


def new_id(prefix: str) -> str:
    """A fresh instance ID starting with ``prefix``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Re-checks ``condition`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(POLL_INTERVAL)


def wait_for_status(
    hub: client.TaskHubGrpcClient,
    instance_id: str,
    status: client.OrchestrationStatus,
    timeout: float = DEFAULT_TIMEOUT,
) -> client.OrchestrationState:
    """Waits until ``instance_id`` reports ``status`` and returns its state."""

    def reached() -> client.OrchestrationState | None:
        state = hub.get_orchestration_state(instance_id)
        return state if state is not None and state.runtime_status == status else None

    return wait_until(reached, f"{instance_id} to be {status.name}", timeout)


def completed(
    hub: client.TaskHubGrpcClient, instance_id: str, timeout: float = DEFAULT_TIMEOUT
) -> client.OrchestrationState:
    """Waits for ``instance_id`` to finish and returns its state (asserting it exists)."""
    state = hub.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None, f"{instance_id} not found"
    return state
