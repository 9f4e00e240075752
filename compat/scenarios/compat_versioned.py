"""Per-worker orchestrations and activities for the versioning and work-item filter scenarios.

Each worker gets its own copies, labelled, under the same names, so an output shows which worker
ran the orchestration and which ran its activity.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

from durabletask import task
from durabletask.worker import TaskHubGrpcWorker

Gen = Generator[task.Task[Any], Any, Any]


def labelled(label: str, name: str = "versioned", activity_name: str = "whoami") -> Callable[[TaskHubGrpcWorker], None]:
    """A worker setup registering orchestrator ``name`` (and ``<name>_parent``, which runs ``name`` as a
    sub-orchestration without a version) and activity ``activity_name``, all reporting ``label``."""

    def whoami(ctx: task.ActivityContext, _: Any) -> str:
        return label

    def versioned(ctx: task.OrchestrationContext, _: Any) -> Gen:
        ran_by = yield ctx.call_activity(activity_name)
        return {"version": ctx.version, "orchestrator": label, "activity": ran_by}

    def versioned_parent(ctx: task.OrchestrationContext, _: Any) -> Gen:
        child = yield ctx.call_sub_orchestrator(name)
        return {"version": ctx.version, "child": child}

    def setup(worker: TaskHubGrpcWorker) -> None:
        worker.add_activity(_named(whoami, activity_name))
        worker.add_orchestrator(_named(versioned, name))
        worker.add_orchestrator(_named(versioned_parent, f"{name}_parent"))

    return setup


def _named(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    function.__name__ = name
    function.__qualname__ = name
    return function


class RecordingHandler(logging.Handler):
    """Keeps the messages a worker logs, to wait for one of them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._messages: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self._messages.append(record.getMessage())

    def saw(self, fragment: str) -> bool:
        """Whether a logged message contains ``fragment``."""
        with self._lock:
            return any(fragment in message for message in self._messages)


def recording_logger(name: str) -> tuple[logging.Logger, RecordingHandler]:
    """A logger of its own (not registered globally) that records every message."""
    handler = RecordingHandler()
    logger = logging.Logger(name, logging.DEBUG)
    logger.addHandler(handler)
    return logger, handler
