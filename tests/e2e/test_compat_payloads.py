"""The official SDK and ours read each other's large payloads in one Azure Blob container (``make compat``).

Azurite (the Azure Storage emulator) serves the container; one of our sidecars serves both SDKs.
First the official client (Microsoft's ``durabletask`` 1.12 with its ``BlobPayloadStore``, in the
compatibility interpreter: ``compat/official_payloads.py client``) starts an orchestration with an
input above the threshold that OUR worker (with our ``BlobPayloadStore``) runs, with an activity
result and an output above it too, and the official client reads the output. Then OUR client
starts an orchestration that the official worker (``compat/official_payloads.py worker``) runs,
and reads its output. Each time the sidecar's history must hold tokens of that container, never
the payloads. Only one SDK's worker is connected at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.extensions.azure_blob_payloads import BlobPayloadStore, BlobPayloadStoreOptions
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import REPO_ROOT, compat_python, fast_sidecar
from tests.e2e.test_large_payloads import raw_history
from tests.payload_support import azurite_blob_service

pytestmark = [pytest.mark.compat, pytest.mark.our_sidecar("both SDKs on our sidecar, sharing an Azurite container")]

SCRIPT = REPO_ROOT / "compat" / "official_payloads.py"
CONTAINER = "compat-payloads"
THRESHOLD = 1024
SIZE = 5000  # above THRESHOLD
WAIT = 30.0


def compat_payload_double(ctx: task.ActivityContext, text: str) -> str:
    return text.upper() * 2


def compat_payload_flow(ctx: task.OrchestrationContext, text: str) -> Generator[task.Task[Any], Any, dict[str, Any]]:
    doubled = yield ctx.call_activity(compat_payload_double, input=text)
    return {"input": len(text), "activity": len(doubled), "echo": text, "doubled": doubled, "by": "ours"}


@pytest.fixture(scope="module")
def azurite() -> Iterator[str]:
    try:
        with azurite_blob_service() as connection_string:
            yield connection_string
    except FileNotFoundError as missing:
        pytest.skip(f"{missing} (make tests/azurite/node_modules/.installed)")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with fast_sidecar() as (_, address):
        yield address


@pytest.fixture
def store(azurite: str) -> Iterator[BlobPayloadStore]:
    options = BlobPayloadStoreOptions(connection_string=azurite, container_name=CONTAINER, threshold_bytes=THRESHOLD)
    with BlobPayloadStore(options) as store:
        yield store


def official(mode: str, address: str, azurite: str, *extra: str) -> list[str]:
    python = compat_python()
    assert python is not None
    return [python, "-P", str(SCRIPT), mode, "--address", address, "--connection-string", azurite,
            "--container", CONTAINER, "--threshold-bytes", str(THRESHOLD), *extra]


def official_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def assert_tokens_stored(address: str, iid: str, store: BlobPayloadStore) -> None:
    """Every large payload in the sidecar's history is a token of the shared container under the instance."""
    events = raw_history(address, iid)
    payloads = {
        "executionStarted": [e.executionStarted.input.value for e in events if e.HasField("executionStarted")],
        "taskScheduled": [e.taskScheduled.input.value for e in events if e.HasField("taskScheduled")],
        "taskCompleted": [e.taskCompleted.result.value for e in events if e.HasField("taskCompleted")],
        "executionCompleted": [e.executionCompleted.result.value for e in events if e.HasField("executionCompleted")],
    }
    for kind, values in payloads.items():
        assert values, f"no {kind} in the history of {iid}"
        assert all(v.startswith(f"blob:v1:{CONTAINER}:{iid}/") for v in values), f"{kind} holds {[v[:60] for v in values]}"
        assert all(store.is_known_token(v) for v in values)
    assert all(len(e.SerializeToString()) < THRESHOLD for e in events), "no large payload inline"


def test_the_official_client_starts_and_our_worker_runs(address: str, azurite: str, store: BlobPayloadStore) -> None:
    iid = f"official-{uuid.uuid4().hex[:10]}"
    worker = TaskHubGrpcWorker(host_address=address, payload_store=store)
    worker.add_orchestrator(compat_payload_flow)
    worker.add_activity(compat_payload_double)
    with worker:
        worker.start()
        proc = subprocess.run(
            official("client", address, azurite, "--name", "compat_payload_flow", "--instance-id", iid,
                     "--input-size", str(SIZE), "--timeout", str(WAIT)),
            capture_output=True, text=True, timeout=WAIT + 30, cwd=str(REPO_ROOT / "compat"), env=official_env(),
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["status"] == "COMPLETED", report
    text = "p" * SIZE
    assert report["output"] == {"input": SIZE, "activity": 2 * SIZE, "echo": text, "doubled": text.upper() * 2,
                                "by": "ours"}, "the official client read our worker's output through its store"
    assert report["stored_output"].startswith(f"blob:v1:{CONTAINER}:{iid}/"), "a client without a store sees the token"
    assert_tokens_stored(address, iid, store)


def test_our_client_starts_and_the_official_worker_runs(address: str, azurite: str, store: BlobPayloadStore) -> None:
    proc = subprocess.Popen(
        official("worker", address, azurite), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=str(REPO_ROOT / "compat"), env=official_env(),
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready and json.loads(ready) == {"ready": True}, (proc.stderr.read() if proc.stderr else "")[-3000:]
        text = "q" * SIZE
        with TaskHubGrpcClient(host_address=address, payload_store=store) as client:
            iid = client.schedule_new_orchestration("official_payload_flow", input=text,
                                                    instance_id=f"ours-{uuid.uuid4().hex[:10]}")
            state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
            assert state.get_output() == {"input": SIZE, "activity": 2 * SIZE, "echo": text,
                                          "doubled": text.upper() * 2, "by": "official"}
            assert state.get_input() == text
    finally:
        try:
            stderr = proc.communicate(input="", timeout=30)[1]  # closing its standard input stops the worker
        except subprocess.TimeoutExpired:
            proc.kill()
            stderr = proc.communicate()[1]
    assert proc.returncode == 0, stderr[-3000:]
    assert_tokens_stored(address, iid, store)
