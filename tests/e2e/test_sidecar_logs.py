"""Logs that help (issue 10 point 6): an undecodable request is one WARNING line naming the peer and the
method, and a client's text in a log line is bounded and kept on one line."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from durabletask import entities
from durabletask.client import TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.worker import TaskHubGrpcWorker
from sidecar.quoting import LOG_TEXT_LIMIT
from tests.e2e.conftest import fast_sidecar, official_backend_mode

pytestmark = pytest.mark.skipif(official_backend_mode(), reason="the log lines are this repository's sidecar's")

TIMEOUT = 30.0
HUGE_FAILURE = "first line\nsecond line\n" + "x" * 1_000_000


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with fast_sidecar() as (_, address):
        yield address


class SidecarRecords(logging.Handler):
    """Collects the sidecar's log records; ``wait`` for one that matches."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def wait(self, text: str, timeout: float = TIMEOUT) -> logging.LogRecord:
        def found() -> logging.LogRecord | None:
            return next((r for r in self.records if text in r.getMessage()), None)

        with self._changed:
            assert self._changed.wait_for(lambda: found() is not None, timeout), f"no log line with {text!r}"
            record = found()
            assert record is not None
            return record


@pytest.fixture
def records() -> Iterator[SidecarRecords]:
    handler = SidecarRecords()
    logger = logging.getLogger("durabletask-sidecar")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_undecodable_request_is_one_warning_with_peer_and_method(address: str, records: SidecarRecords) -> None:
    with grpc.insecure_channel(address) as channel:
        start = channel.unary_unary("/TaskHubSidecarService/StartInstance")
        with pytest.raises(grpc.RpcError) as failed:
            start(b"\xff\xff\xff\xff", timeout=TIMEOUT)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    line = records.wait("undecodable request")
    message = line.getMessage()
    assert line.levelno == logging.WARNING
    assert "/TaskHubSidecarService/StartInstance" in message
    assert "from ipv4:127.0.0.1:" in message or "from ipv6:[::1]:" in message  # the peer
    assert line.exc_info is None
    assert [r for r in records.records if r.levelno >= logging.ERROR] == []
    assert [r for r in records.records if "undecodable" in r.getMessage()] == [line]


def failing(ctx: entities.EntityContext, _: Any) -> None:
    raise ValueError(HUGE_FAILURE)


def test_a_huge_failure_message_is_logged_bounded_on_one_line(address: str, records: SidecarRecords) -> None:
    key = uuid.uuid4().hex[:10]
    with TaskHubGrpcWorker(host_address=address) as worker:
        worker.add_entity(failing)
        worker.start()
        with TaskHubGrpcClient(host_address=address) as client:
            client.signal_entity(EntityInstanceId("failing", key), "explode")
            line = records.wait(f"on entity '@failing@{key}'")
    message = line.getMessage()
    assert "first line\\x0asecond line" in message
    assert "\n" not in message
    assert len(message) < 3 * LOG_TEXT_LIMIT
    assert "characters)" in message  # says how long the text was
