"""TLS, mutual TLS and the bearer token, end to end: our client and worker against an in-process sidecar
that requires them, and raw calls that lack them refused with nothing changed (issue 10 point 5)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcChannelOptions, GrpcTlsOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from durabletask.internal.async_client import AsyncTaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from sidecar.grpc_auth import MISSING_TOKEN, WRONG_TOKEN
from sidecar.security import AccessToken, load_server_tls
from sidecar.server import SidecarServer
from tests.e2e.conftest import fast_sidecar, official_backend_mode
from tests.e2e.tls_files import TlsFiles, make_tls_files

pytestmark = pytest.mark.skipif(official_backend_mode(), reason="security options are this repository's sidecar's")

TOKEN = "s3cret-token"
GOOD = [("authorization", f"Bearer {TOKEN}")]
WRONG = [("authorization", "Bearer not-the-token")]
TIMEOUT = 30.0


def greet(_: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def greeting(ctx: task.OrchestrationContext, name: str) -> Any:
    return (yield ctx.call_activity(greet, input=name))


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(greeting)
    worker.add_activity(greet)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def token_sidecar() -> Iterator[tuple[SidecarServer, str]]:
    """Plaintext, token required."""
    with fast_sidecar(token=AccessToken(TOKEN)) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_sidecar(tls_files: TlsFiles) -> Iterator[tuple[SidecarServer, str]]:
    """Mutual TLS and a token."""
    tls = load_server_tls(tls_files.server_cert, tls_files.server_key, tls_files.ca)
    with fast_sidecar(tls=tls, token=AccessToken(TOKEN)) as running:
        yield running


def _run_greeting(address: str, metadata: list[tuple[str, str]], options: GrpcChannelOptions | None = None) -> None:
    """Our worker and client, both sending ``metadata``, run one orchestration with an activity."""
    with TaskHubGrpcWorker(host_address=address, metadata=metadata, channel_options=options) as worker:
        register(worker)
        worker.start()
        with TaskHubGrpcClient(host_address=address, metadata=metadata, channel_options=options) as client:
            instance_id = client.schedule_new_orchestration(greeting, input="token")
            state = client.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.serialized_output == '"hello token"'


# --- the token ------------------------------------------------------------------------------------


def test_client_and_worker_with_the_token_run_an_orchestration(token_sidecar: tuple[SidecarServer, str]) -> None:
    _run_greeting(token_sidecar[1], GOOD)


def test_async_client_sends_the_token(token_sidecar: tuple[SidecarServer, str]) -> None:
    async def main() -> tuple[str, Any]:
        client = AsyncTaskHubGrpcClient(host_address=token_sidecar[1], metadata=GOOD)
        try:
            instance_id = await client.schedule_new_orchestration("never-runs", instance_id=f"async-{uuid.uuid4().hex}")
            return instance_id, await client.get_orchestration_state(instance_id)
        finally:
            await client.close()

    instance_id, state = asyncio.run(main())
    assert state is not None and state.instance_id == instance_id


@pytest.mark.parametrize(("metadata", "details"), [(None, MISSING_TOKEN), (WRONG, WRONG_TOKEN)])
def test_calls_without_the_token_are_refused_and_change_nothing(
    token_sidecar: tuple[SidecarServer, str], metadata: list[tuple[str, str]] | None, details: str
) -> None:
    server, address = token_sidecar
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        batches = batches_grpc.WorkBatchesStub(channel)
        kept = f"kept-{uuid.uuid4().hex}"
        stub.StartInstance(pb.CreateInstanceRequest(instanceId=kept, name="x"), metadata=GOOD, timeout=TIMEOUT)
        refused_id = f"refused-{uuid.uuid4().hex}"
        calls: list[tuple[str, Any]] = [
            ("Hello", lambda: stub.Hello(empty_pb2.Empty(), metadata=metadata, timeout=TIMEOUT)),
            ("StartInstance", lambda: stub.StartInstance(
                pb.CreateInstanceRequest(instanceId=refused_id, name="x"), metadata=metadata, timeout=TIMEOUT)),
            ("GetInstance", lambda: stub.GetInstance(
                pb.GetInstanceRequest(instanceId=kept), metadata=metadata, timeout=TIMEOUT)),
            ("TerminateInstance", lambda: stub.TerminateInstance(
                pb.TerminateRequest(instanceId=kept, output=wrappers_pb2.StringValue(value="x")),
                metadata=metadata, timeout=TIMEOUT)),
            ("DeleteTaskHub", lambda: stub.DeleteTaskHub(pb.DeleteTaskHubRequest(), metadata=metadata, timeout=TIMEOUT)),
            ("GetWorkItems", lambda: next(iter(stub.GetWorkItems(
                pb.GetWorkItemsRequest(), metadata=metadata, timeout=TIMEOUT)))),
            ("StreamInstanceHistory", lambda: list(stub.StreamInstanceHistory(
                pb.StreamInstanceHistoryRequest(instanceId=kept), metadata=metadata, timeout=TIMEOUT))),
            ("CompleteActivityTask", lambda: stub.CompleteActivityTask(
                pb.ActivityResponse(instanceId=kept, completionToken="t"), metadata=metadata, timeout=TIMEOUT)),
            ("GetWorkItemBatches", lambda: next(iter(batches.GetWorkItemBatches(
                pb.GetWorkItemsRequest(), metadata=metadata, timeout=TIMEOUT)))),
            ("CompleteOrchestratorTasks", lambda: batches.CompleteOrchestratorTasks(
                batches_pb.OrchestratorResultBatch(), metadata=metadata, timeout=TIMEOUT)),
            ("CompleteActivityTasks", lambda: batches.CompleteActivityTasks(
                batches_pb.ActivityResultBatch(), metadata=metadata, timeout=TIMEOUT)),
            ("OpenWorkChannel", lambda: next(iter(batches.OpenWorkChannel(
                iter([batches_pb.ChannelRequest(open=pb.GetWorkItemsRequest())]), metadata=metadata,
                timeout=TIMEOUT)))),
        ]
        for rpc, call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
            assert refused.value.details() == details, rpc
        assert server.hub.get_instance(refused_id) is None
        survivor = server.hub.get_instance(kept)
        assert survivor is not None and survivor.status == pb.ORCHESTRATION_STATUS_PENDING
        assert server.dispatcher.open_streams() == 0, "no refused call opened a work-item stream"


def test_worker_with_a_wrong_token_is_refused(
    token_sidecar: tuple[SidecarServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger(f"test-wrong-token-{uuid.uuid4().hex}")
    refused = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "UNAUTHENTICATED" in record.getMessage() or "not accepted" in record.getMessage():
                refused.set()

    logger.addHandler(Watch())
    with TaskHubGrpcWorker(host_address=token_sidecar[1], metadata=WRONG, logger=logger) as worker:
        register(worker)
        worker.start()
        assert refused.wait(TIMEOUT), "the worker never reported the refusal"
        assert token_sidecar[0].dispatcher.open_streams() == 0


# --- TLS and mutual TLS ---------------------------------------------------------------------------


def _tls(files: TlsFiles, client: bool = True, ca: str | None = None) -> GrpcChannelOptions:
    return GrpcChannelOptions(tls=GrpcTlsOptions(
        root_certificates_file=ca or files.ca,
        client_certificate_file=files.client_cert if client else None,
        client_key_file=files.client_key if client else None,
    ))


def test_client_and_worker_over_mutual_tls_with_the_token(
    mtls_sidecar: tuple[SidecarServer, str], tls_files: TlsFiles
) -> None:
    _run_greeting(mtls_sidecar[1], GOOD, _tls(tls_files))


def _hello(address: str, options: GrpcChannelOptions, metadata: list[tuple[str, str]] | None = GOOD) -> None:
    with TaskHubGrpcClient(host_address=address, channel_options=options, metadata=metadata) as client:
        client.get_orchestration_state("any-id")


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_sidecar: tuple[SidecarServer, str], tls_files: TlsFiles
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _hello(mtls_sidecar[1], _tls(tls_files, client=False))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_with_the_token_still_needs_the_token(mtls_sidecar: tuple[SidecarServer, str], tls_files: TlsFiles) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _hello(mtls_sidecar[1], _tls(tls_files), metadata=None)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_client_refuses_a_server_its_ca_did_not_sign(
    mtls_sidecar: tuple[SidecarServer, str], tls_files: TlsFiles
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _hello(mtls_sidecar[1], _tls(tls_files, ca=tls_files.other_ca))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_cannot_talk_to_a_tls_sidecar(mtls_sidecar: tuple[SidecarServer, str]) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _hello(mtls_sidecar[1], GrpcChannelOptions())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_tls_without_client_ca_serves_clients_without_certificates(tls_files: TlsFiles) -> None:
    tls = load_server_tls(tls_files.server_cert, tls_files.server_key, None)
    with fast_sidecar(tls=tls) as (_, address):
        _hello(address, _tls(tls_files, client=False), metadata=None)


def test_tls_options_with_a_missing_file_name_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ValueError, match="root_certificates_file: cannot read"):
        TaskHubGrpcClient(host_address="localhost:1", channel_options=GrpcChannelOptions(
            tls=GrpcTlsOptions(root_certificates_file=missing)))
    with pytest.raises(ValueError, match="give both or neither"):
        GrpcTlsOptions(client_certificate_file=missing)


def test_https_address_trusts_the_ca_named_by_grpc_default_roots_variable(tls_files: TlsFiles) -> None:
    """gRPC's own $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH works with a plain https:// address (read once per
    process, hence a subprocess)."""
    tls = load_server_tls(tls_files.server_cert, tls_files.server_key, None)
    script = (
        "import sys\nfrom durabletask.client import TaskHubGrpcClient\n"
        "with TaskHubGrpcClient(host_address=sys.argv[1]) as c:\n"
        "    print(c.get_orchestration_state('none'))\n"
    )
    root = Path(__file__).resolve().parents[2]
    with fast_sidecar(tls=tls) as (server, _):
        env = dict(os.environ, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=tls_files.ca, PYTHONPATH=str(root))
        done = subprocess.run(
            [sys.executable, "-c", script, f"https://localhost:{server.port}"],
            capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=root,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
