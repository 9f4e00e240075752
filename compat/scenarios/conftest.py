"""Session fixtures: the official SDK's worker (every scenario function registered) and clients.

These scenarios run Microsoft's official ``durabletask`` package (its client and worker) against
our sidecar; ``compat/run.py`` starts the sidecar and passes its address in
``DURABLETASK_COMPAT_ADDRESS``.

Pending, to be added with the features in later issues: rewind, restart, orchestration
versioning, work-item filters, durable entities, schedules (``durabletask.scheduled``).
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import compat_functions
import pytest
from compat_support import sidecar_address

import durabletask
from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_VERSION = "1.12.0"


def pytest_configure(config: pytest.Config) -> None:
    """Refuses to run unless ``durabletask`` is the official package, not this repository's."""
    location = Path(durabletask.__file__).resolve()
    if location.parent == REPO_ROOT / "durabletask":
        raise pytest.UsageError(f"'durabletask' resolves to this repository ({location}), not the official package")
    installed = metadata.version("durabletask")
    if installed != OFFICIAL_VERSION:
        raise pytest.UsageError(f"official durabletask {OFFICIAL_VERSION} expected, found {installed}")


@pytest.fixture(scope="session")
def address() -> str:
    """The sidecar's ``host:port``."""
    return sidecar_address()


@pytest.fixture(scope="session")
def worker(address: str) -> Iterator[TaskHubGrpcWorker]:
    """One official worker for the whole session."""
    w = TaskHubGrpcWorker(host_address=address)
    compat_functions.register(w)
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="session")
def hub(address: str, worker: TaskHubGrpcWorker) -> Iterator[TaskHubGrpcClient]:
    """The official synchronous client, with the worker running."""
    c = TaskHubGrpcClient(host_address=address)
    yield c
    c.close()
