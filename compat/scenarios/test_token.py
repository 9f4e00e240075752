"""The official SDK against a sidecar that requires a bearer token (issue 10 point 5).

The official Python client and worker take ``metadata=[("authorization", "Bearer <token>")]`` and send
it with every call, the worker's stream and completions included: an orchestration with activities
runs. Without the metadata, or with a wrong token, the official client gets UNAUTHENTICATED and
nothing is created.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import compat_functions as fn
import grpc
import pytest
from compat_sidecar import SIDECAR_PYTHON_VARIABLE, OurSidecar
from compat_support import completed, new_id

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

TOKEN = "compat-token"
WITH_TOKEN = [("authorization", f"Bearer {TOKEN}")]
START_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def token_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A sidecar of its own that requires the token; yields its address."""
    python = os.environ.get(SIDECAR_PYTHON_VARIABLE)
    if not python:
        raise RuntimeError(f"{SIDECAR_PYTHON_VARIABLE} is not set: run the scenarios through compat/run.py")
    directory: Path = tmp_path_factory.mktemp("token")
    (directory / "token").write_text(TOKEN + "\n")
    sidecar = OurSidecar(
        python, directory / "token.db", directory / "sidecar.log", extra_args=("--token-file", str(directory / "token"))
    )
    try:
        yield sidecar.wait_address(START_TIMEOUT)
    finally:
        sidecar.stop()


def test_official_client_and_worker_with_the_token(token_sidecar: str) -> None:
    worker = TaskHubGrpcWorker(host_address=token_sidecar, metadata=WITH_TOKEN)
    fn.register(worker)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=token_sidecar, metadata=WITH_TOKEN) as hub:
            instance_id = hub.schedule_new_orchestration(fn.chain, input=["a", "b"], instance_id=new_id("token"))
            state = completed(hub, instance_id)
    finally:
        worker.stop()
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.serialized_output == '["Hello, a!", "Hello, b!"]'


@pytest.mark.parametrize("metadata", [None, [("authorization", "Bearer wrong")]], ids=["no-token", "wrong-token"])
def test_official_client_without_the_token_is_refused(token_sidecar: str, metadata: list[tuple[str, str]] | None) -> None:
    instance_id = new_id("refused")
    with TaskHubGrpcClient(host_address=token_sidecar, metadata=metadata) as refused:
        with pytest.raises(grpc.RpcError) as error:
            refused.schedule_new_orchestration(fn.chain, input=["x"], instance_id=instance_id)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with TaskHubGrpcClient(host_address=token_sidecar, metadata=WITH_TOKEN) as hub:
        assert hub.get_orchestration_state(instance_id) is None
