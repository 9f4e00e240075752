"""Session fixtures: the official SDK's worker (every scenario function registered) and clients.

These scenarios run Microsoft's official ``durabletask`` package (its client and worker) against
our sidecar; ``compat/run.py`` starts the sidecar and passes its address in
``DURABLETASK_COMPAT_ADDRESS``. The session worker runs the functions of ``compat_functions`` and
the entities of ``compat_entities``, with scheduled tasks configured (``durabletask.scheduled``).

Scenarios that need a sidecar of their own (to kill and restart it, to connect only workers
with raised message limits, or to run workers with versioning or work-item filters that the
unfiltered session worker would compete with) start one with ``private_sidecar``
(``compat/compat_sidecar.py``, run with the main environment's interpreter, given in
``DURABLETASK_COMPAT_SIDECAR_PYTHON``), and their own official workers with ``official_worker``.

Nothing of issue 5's list is pending: rewind, versioning, work-item filters, entities and schedules
have their scenarios (``test_rewind``, ``test_versioning``, ``test_work_item_filters``,
``test_entities``, ``test_schedules``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import compat_entities
import compat_functions
import pytest
from compat_support import sidecar_address

import durabletask
from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_VERSION = "1.12.0"
sys.path.insert(0, str(REPO_ROOT / "compat"))

from compat_sidecar import SIDECAR_PYTHON_VARIABLE, OurSidecar  # noqa: E402 - needs the path above

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


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
    compat_entities.register(w)
    w.configure_scheduled_tasks()
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="session")
def hub(address: str, worker: TaskHubGrpcWorker) -> Iterator[TaskHubGrpcClient]:
    """The official synchronous client, with the worker running."""
    c = TaskHubGrpcClient(host_address=address)
    yield c
    c.close()


@pytest.fixture
def private_sidecar(tmp_path: Path) -> Iterator[Callable[..., OurSidecar]]:
    """Starts sidecars of this test's own: ``start(db_name="own.db", port=0)``; all stopped at teardown."""
    python = os.environ.get(SIDECAR_PYTHON_VARIABLE)
    if not python:
        raise RuntimeError(f"{SIDECAR_PYTHON_VARIABLE} is not set: run the scenarios through compat/run.py")
    started: list[OurSidecar] = []

    def start(db_name: str = "own.db", port: int = 0) -> OurSidecar:
        sidecar = OurSidecar(python, tmp_path / db_name, tmp_path / "sidecar.log", port=port)
        started.append(sidecar)
        sidecar.wait_address(START_TIMEOUT)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop()


@pytest.fixture
def official_worker() -> Iterator[Callable[..., TaskHubGrpcWorker]]:
    """Starts official workers of this test's own: ``start(address, setup)`` creates a worker,
    passes it to ``setup`` (to register functions, versioning, filters) and starts it; all are
    stopped at teardown."""
    started: list[TaskHubGrpcWorker] = []

    def start(address: str, setup: Callable[[TaskHubGrpcWorker], None], **options: Any) -> TaskHubGrpcWorker:
        w = TaskHubGrpcWorker(host_address=address, **options)
        setup(w)
        w.start()
        started.append(w)
        return w

    yield start
    # Each stop waits about a second for the worker's stream to wind down: stop them together.
    stoppers = [threading.Thread(target=w.stop) for w in started]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join(STOP_TIMEOUT)
