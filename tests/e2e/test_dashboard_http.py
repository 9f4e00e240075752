"""The dashboard's HTTP port itself: what a stopped dashboard leaves open, and which Host names a dashboard on
loopback answers (a web page whose name was re-pointed at 127.0.0.1, DNS rebinding, must not reach it)."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from sidecar.dashboard import http_server
from sidecar.server import SidecarServer
from tests.e2e.conftest import official_backend_mode, test_store_spec
from tests.e2e.dashboard_support import TIMEOUT

pytestmark = pytest.mark.skipif(official_backend_mode(), reason="the dashboard is this repository's sidecar's")


@pytest.fixture
def server() -> Iterator[SidecarServer]:
    """A sidecar without a token, its dashboard on a free loopback port."""
    sidecar = SidecarServer(test_store_spec(), host="localhost", dashboard_port=0)
    sidecar.start(0)
    try:
        yield sidecar
    finally:
        sidecar.stop(grace=0.2)


def _get(conn: http.client.HTTPConnection, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Host": host} if host is not None else {})
    answer = conn.getresponse()
    return answer.status, answer.read()


def test_a_kept_alive_connection_is_closed_when_the_dashboard_stops(server: SidecarServer) -> None:
    assert server.dashboard is not None
    conn = http.client.HTTPConnection("127.0.0.1", server.dashboard.port, timeout=TIMEOUT)
    try:
        assert _get(conn, "/api/backlog")[0] == 200
        server.dashboard.stop()
        # The connection stayed open and its thread kept answering API calls after stop().
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _get(conn, "/api/backlog")
    finally:
        conn.close()


def test_a_dashboard_on_loopback_answers_only_loopback_host_names(server: SidecarServer) -> None:
    assert server.dashboard is not None
    port = server.dashboard.port
    client = TaskHubGrpcClient(host_address=f"localhost:{server.port}")
    try:
        instance_id = client.schedule_new_orchestration("no-such-orchestrator", instance_id="rebind-1")
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "[::1", ""):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            try:
                status, body = _get(conn, "/api/instances", host=host)
                assert status == 403 and b"Host" in body, (host, status, body)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
                conn.request("POST", f"/api/instances/{instance_id}/terminate", body=b"{}",
                             headers={"Host": host, "Origin": f"http://{host}", "Content-Type": "application/json"})
                assert conn.getresponse().status == 403, host
            finally:
                conn.close()
        state = client.get_orchestration_state(instance_id)
        assert state is not None and state.runtime_status == OrchestrationStatus.PENDING
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"LOCALHOST:{port}", f"[::1]:{port}"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            try:
                assert _get(conn, "/api/backlog", host=host)[0] == 200, host
            finally:
                conn.close()
    finally:
        client.close()


def test_a_silent_connection_is_closed_after_the_idle_timeout(
    server: SidecarServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each connection holds a thread: one that never sends a request must not hold it for ever.
    assert server.dashboard is not None and server.dashboard.port is not None
    monkeypatch.setattr(http_server, "IDLE_TIMEOUT", 0.3)
    with socket.create_connection(("127.0.0.1", server.dashboard.port), timeout=TIMEOUT) as silent:
        assert silent.recv(1) == b""  # closed by the server (a timeout here raises instead)
