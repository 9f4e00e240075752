"""Test helpers: run the real sidecar in-process on an in-memory store.

``create_test_backend(port)`` gives a started backend that a client and a worker can
reach at ``localhost:{port}``; ``stop()`` shuts it down and ``reset()`` empties it.

Without a sidecar: ``run_turn`` runs one orchestrator turn from a given history,
``replay_history`` replays a recorded history against the current code (raising
``NonDeterminismError`` at the first mismatch), ``fetch_histories`` /
``replay_histories`` check that a new version of an orchestrator still replays the
running instances, ``save_history`` / ``load_history`` keep histories in JSON files,
and ``history_builders`` (also re-exported here) builds synthetic histories.
"""

from __future__ import annotations

from durabletask.testing import history_builders
from durabletask.testing.history_builders import (
    DEFAULT_TIME,
    continue_as_new,
    entity_lock_granted,
    entity_lock_requested,
    entity_operation_called,
    entity_operation_completed,
    entity_operation_failed,
    entity_operation_signaled,
    entity_unlock_sent,
    event_raised,
    event_sent,
    execution_completed,
    execution_resumed,
    execution_rewound,
    execution_started,
    execution_suspended,
    execution_terminated,
    generic_event,
    orchestrator_completed,
    orchestrator_started,
    sub_orchestration_completed,
    sub_orchestration_created,
    sub_orchestration_failed,
    task_completed,
    task_failed,
    task_scheduled,
    timer_created,
    timer_fired,
)
from durabletask.testing.history_files import load_history, save_history, to_protobuf
from durabletask.testing.orchestration_replay import (
    Action,
    TurnResult,
    fetch_histories,
    replay_histories,
    replay_history,
    run_turn,
)
from sidecar.dispatch import DispatchOptions
from sidecar.hub import TaskHub
from sidecar.server import SidecarServer
from sidecar.store import MEMORY, open_store


class InMemoryOrchestrationBackend:
    """The sidecar on a fresh store, served on ``port`` (0 picks a free one).

    ``store`` is ``memory`` (the default), a SQLite file path or a ``postgresql://`` URL, as for
    ``durabletask-sidecar --store``. ``max_history_size`` is accepted for compatibility and not enforced.
    """

    def __init__(
        self,
        max_history_size: int = 10000,
        port: int = 50051,
        *,
        host: str = "localhost",
        dispatch_options: DispatchOptions | None = None,
        store: str = MEMORY,
    ) -> None:
        self.max_history_size = max_history_size
        self.port = port
        self.host = host
        self.hub = TaskHub(open_store(store))
        self.store = self.hub.store
        self._dispatch_options = dispatch_options
        self.server: SidecarServer | None = None

    @property
    def address(self) -> str:
        """``localhost:PORT``, the address to give to clients and workers."""
        return f"localhost:{self.port}"

    def start(self) -> str:
        """Start serving (again, after stop). Returns the address."""
        if self.server is None:
            server = SidecarServer(self.hub, host=self.host, dispatch_options=self._dispatch_options, owns_store=False)
            self.port = server.start(self.port)
            self.server = server
        return self.address

    def stop(self, grace: float | None = None) -> None:
        """Stop serving. The stored state survives until reset()."""
        if self.server is not None:
            self.server.stop(grace)
            self.server = None

    def reset(self) -> None:
        """Delete every instance, history, queued event and task."""
        self.store.reset()

    def __enter__(self) -> InMemoryOrchestrationBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_test_backend(port: int = 50051, max_history_size: int = 10000) -> InMemoryOrchestrationBackend:
    """Create and start an in-process sidecar on an in-memory store, listening on ``localhost:port``."""
    backend = InMemoryOrchestrationBackend(max_history_size=max_history_size, port=port)
    backend.start()
    return backend


__all__ = [
    "DEFAULT_TIME",
    "Action",
    "InMemoryOrchestrationBackend",
    "TurnResult",
    "continue_as_new",
    "create_test_backend",
    "entity_lock_granted",
    "entity_lock_requested",
    "entity_operation_called",
    "entity_operation_completed",
    "entity_operation_failed",
    "entity_operation_signaled",
    "entity_unlock_sent",
    "event_raised",
    "event_sent",
    "execution_completed",
    "execution_resumed",
    "execution_rewound",
    "execution_started",
    "execution_suspended",
    "execution_terminated",
    "fetch_histories",
    "generic_event",
    "history_builders",
    "load_history",
    "orchestrator_completed",
    "orchestrator_started",
    "replay_histories",
    "replay_history",
    "run_turn",
    "save_history",
    "sub_orchestration_completed",
    "sub_orchestration_created",
    "sub_orchestration_failed",
    "task_completed",
    "task_failed",
    "task_scheduled",
    "timer_created",
    "timer_fired",
    "to_protobuf",
]
