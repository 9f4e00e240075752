"""Test helpers: run the real sidecar in-process on an in-memory store.

``create_test_backend(port)`` gives a started backend that a client and a worker can
reach at ``localhost:{port}``; ``stop()`` shuts it down and ``reset()`` empties it.
"""

from __future__ import annotations

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


__all__ = ["InMemoryOrchestrationBackend", "create_test_backend"]
