"""Session fixtures: the official SDK's worker (every scenario function registered) and clients.

These scenarios run Microsoft's official ``durabletask`` package (its client and worker) against
our sidecar; ``compat/run.py`` starts the sidecar and passes its address in
``DURABLETASK_COMPAT_ADDRESS``.

Scenarios that need a sidecar of their own (to kill and restart it, or to connect only workers
with raised message limits) start one with ``private_sidecar`` (``compat/compat_sidecar.py``, run
with the main environment's interpreter, given in ``DURABLETASK_COMPAT_SIDECAR_PYTHON``).

Pending, to be added with the features in later issues: rewind, orchestration versioning,
work-item filters, durable entities, schedules (``durabletask.scheduled``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
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
sys.path.insert(0, str(REPO_ROOT / "compat"))

from compat_sidecar import SIDECAR_PYTHON_VARIABLE, OurSidecar  # noqa: E402 - needs the path above

START_TIMEOUT = 60.0


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
