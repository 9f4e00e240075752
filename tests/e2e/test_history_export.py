"""History export end to end: our in-process sidecar, our worker, jobs exporting to Azurite or to memory."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durabletask import task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.extensions.history_export import (
    AsyncExportHistoryClient,
    ExportDestination,
    ExportFormat,
    ExportFormatKind,
    ExportHistoryClient,
    ExportJobCreationOptions,
    ExportJobDescription,
    ExportJobInvalidTransitionError,
    ExportJobNotFoundError,
    ExportJobQuery,
    ExportJobStatus,
    ExportMode,
)
from durabletask.extensions.history_export import orchestrator as export_orchestrator
from durabletask.history import ExecutionStartedEvent
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import eventually
from tests.payload_support import azurite_blob_service

WAIT = 15.0


@dataclass
class MemoryWriter:
    """A HistoryWriter keeping files in memory; fails the instances named in ``failing``."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(
        self,
        *,
        instance_id: str,
        container: str,
        blob_name: str,
        payload: bytes,
        content_type: str,
        content_encoding: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if instance_id in self.failing:
            raise OSError(f"disk full writing {instance_id}")
        with self.lock:
            self.files[f"{container}/{blob_name}"] = {
                "payload": payload, "content_type": content_type, "encoding": content_encoding,
                "metadata": dict(metadata or {}),
            }


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def ok_orchestrator(ctx: task.OrchestrationContext, name: str) -> Any:
    return (yield ctx.call_activity(greet, input=name))


def failing_orchestrator(ctx: task.OrchestrationContext, _: Any) -> Any:
    raise ValueError("boom")
    yield  # pragma: no cover


def waiting_orchestrator(ctx: task.OrchestrationContext, _: Any) -> Any:
    return (yield ctx.wait_for_external_event("never"))


def entity_caller(ctx: task.OrchestrationContext, args: dict[str, str]) -> Any:
    """Calls an operation of an export-job entity (to see what the entity refuses)."""
    return (yield ctx.call_entity(task.EntityInstanceId("ExportJobEntity", args["job"]), args["op"]))


@dataclass
class Env:
    client: TaskHubGrpcClient
    export: ExportHistoryClient
    writer: Any
    address: str



@contextmanager
def export_env(address: str, writer: Any) -> Iterator[Env]:
    """A client, and a started worker with the export extension and the test orchestrations."""
    client = TaskHubGrpcClient(host_address=address)
    export = ExportHistoryClient(client, writer)
    worker = TaskHubGrpcWorker(host_address=address)
    export.register_worker(worker)
    for fn in (ok_orchestrator, failing_orchestrator, waiting_orchestrator, entity_caller):
        worker.add_orchestrator(fn)
    worker.add_activity(greet)
    with worker:
        worker.start()
        try:
            yield Env(client, export, writer, address)
        finally:
            client.close()


def run_instances(env: Env) -> dict[str, OrchestrationStatus]:
    """One completed, one failed and one terminated instance; their IDs and statuses."""
    started = {
        env.client.schedule_new_orchestration(ok_orchestrator, input="ada"): OrchestrationStatus.COMPLETED,
        env.client.schedule_new_orchestration(failing_orchestrator): OrchestrationStatus.FAILED,
    }
    waiting = env.client.schedule_new_orchestration(waiting_orchestrator)
    env.client.wait_for_orchestration_start(waiting, timeout=WAIT)
    env.client.terminate_orchestration(waiting, output="stopped")
    started[waiting] = OrchestrationStatus.TERMINATED
    for iid, status in started.items():
        state = env.client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status is status
    return started


def window(**kwargs: Any) -> ExportJobCreationOptions:
    now = datetime.now(timezone.utc)
    values: dict[str, Any] = {
        "mode": ExportMode.BATCH,
        "completed_time_from": now - timedelta(minutes=5),
        "completed_time_to": now + timedelta(minutes=5),
        "destination": ExportDestination(container="exports", prefix="run1/"),
    }
    values.update(kwargs)
    return ExportJobCreationOptions(**values)


def expected_name(state: Any, prefix: str, ext: str) -> str:
    when = state.last_updated_at.astimezone(timezone.utc)
    stamp = f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond:06d}0+00:00"
    return f"{prefix}{hashlib.sha256(f'{stamp}|{state.instance_id}'.encode()).hexdigest()}{ext}"


@pytest.fixture(scope="module")
def azurite() -> Iterator[str]:
    try:
        with azurite_blob_service() as connection_string:
            yield connection_string
    except FileNotFoundError as missing:
        pytest.skip(f"{missing} (make tests/azurite/node_modules/.installed)")


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_orchestrator, "_BATCH_RETRY_BACKOFF_OVERRIDE", timedelta(milliseconds=200))
    monkeypatch.setattr(export_orchestrator, "_CONTINUOUS_IDLE_DELAY_OVERRIDE", timedelta(milliseconds=300))


def test_a_batch_job_exports_completed_failed_and_terminated_instances_to_azurite(sidecar: Any, azurite: str) -> None:
    from azure.storage.blob import BlobServiceClient

    from durabletask.extensions.history_export.azure_blob import (
        AzureBlobHistoryExportWriter,
        AzureBlobHistoryExportWriterOptions,
    )

    options = AzureBlobHistoryExportWriterOptions(container_name="exports", connection_string=azurite)
    with AzureBlobHistoryExportWriter(options) as writer, export_env(sidecar.address, writer) as env:
        instances = run_instances(env)
        job = env.export.create_job(window(), job_id="azure-job")
        assert job.orchestrator_instance_id == "export-job-azure-job"
        done = env.export.get_job_client("azure-job").wait(timeout=WAIT, poll_interval=0.1)
        assert done.status is ExportJobStatus.COMPLETED, done.last_error
        assert (done.scanned_instances, done.exported_instances, done.failed_instances) == (3, 3, 0)
        assert done.checkpoint is not None and done.last_checkpoint_time is not None
        # the job entity is marked completed by the orchestrator's last turn, which commits just after
        orchestration = env.client.wait_for_orchestration_completion("export-job-azure-job", timeout=WAIT)
        assert orchestration is not None and orchestration.name == "export_job_orchestrator"
        assert orchestration.runtime_status is OrchestrationStatus.COMPLETED
        assert orchestration.get_output()["totals"] == {"scanned": 3, "exported": 3, "failed": 0}

        service = BlobServiceClient.from_connection_string(azurite)
        container = service.get_container_client("exports")
        blobs = {b.name: b for b in container.list_blobs(include=["metadata"])}
        for iid, status in instances.items():
            state = env.client.get_orchestration_state(iid)
            name = expected_name(state, "run1/", ".jsonl.gz")
            assert name in blobs, (name, sorted(blobs))
            blob = blobs[name]
            assert blob.metadata == {"instance_id": iid}
            assert blob.content_settings.content_type == "application/x-ndjson"
            assert blob.content_settings.content_encoding == "gzip"
            raw = container.download_blob(name, decompress=False).readall()
            lines = gzip.decompress(raw).decode().splitlines()
            header = json.loads(lines[0])
            assert header["kind"] == "metadata" and header["instance_id"] == iid
            assert header["schema_version"] == "1.0"
            assert header["metadata"]["runtime_status"] == status.name
            events = [json.loads(line) for line in lines[1:]]
            assert "ExecutionStartedEvent" in {e["event_type"] for e in events}
            assert len(events) == len(env.client.get_orchestration_history(iid))
            last = {
                OrchestrationStatus.COMPLETED: "ExecutionCompletedEvent",
                OrchestrationStatus.FAILED: "ExecutionCompletedEvent",
                OrchestrationStatus.TERMINATED: "ExecutionTerminatedEvent",
            }[status]
            assert last in {e["event_type"] for e in events}
            if status is OrchestrationStatus.FAILED:
                assert header["metadata"]["failure_details"]["message"] == "boom"
            if status is OrchestrationStatus.COMPLETED:
                assert json.loads(header["metadata"]["serialized_output"]) == "hello ada"
        service.close()


def test_json_format_filters_and_listing(sidecar: Any) -> None:
    writer = MemoryWriter()
    with export_env(sidecar.address, writer) as env:
        instances = run_instances(env)
        failed_iid = next(i for i, s in instances.items() if s is OrchestrationStatus.FAILED)
        job = env.export.create_job(window(
            runtime_status=[OrchestrationStatus.FAILED],
            format=ExportFormat(kind=ExportFormatKind.JSON),
            destination=ExportDestination(container="c1"),
        ))
        done = env.export.wait_for_job(job.job_id, timeout=WAIT, poll_interval=0.1)
        assert (done.status, done.exported_instances) == (ExportJobStatus.COMPLETED, 1)
        [(path, file)] = writer.files.items()
        assert path == "c1/" + expected_name(env.client.get_orchestration_state(failed_iid), "", ".json")
        assert (file["content_type"], file["encoding"]) == ("application/json", None)
        document = json.loads(file["payload"])
        assert document["instance_id"] == failed_iid and document["metadata"]["runtime_status"] == "FAILED"
        assert file["payload"] == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

        # a window that ended before the instances finished exports nothing
        past = datetime.now(timezone.utc) - timedelta(hours=2)
        empty = env.export.create_job(window(completed_time_from=past, completed_time_to=past + timedelta(hours=1)))
        assert env.export.wait_for_job(empty.job_id, timeout=WAIT, poll_interval=0.1).exported_instances == 0

        listed = {d.job_id: d for d in env.export.list_jobs()}
        assert set(listed) == {job.job_id, empty.job_id}
        assert [d.job_id for d in env.export.list_jobs(ExportJobQuery(status=[ExportJobStatus.FAILED]))] == []


def test_pages_checkpoints_and_continue_as_new(sidecar: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_orchestrator, "CONTINUE_AS_NEW_FREQUENCY", 2)
    writer = MemoryWriter()
    with export_env(sidecar.address, writer) as env:
        ids = [env.client.schedule_new_orchestration(ok_orchestrator, input=str(n)) for n in range(5)]
        for iid in ids:
            env.client.wait_for_orchestration_completion(iid, timeout=WAIT)
        job = env.export.create_job(window(max_instances_per_batch=2, max_parallel_exports=1), job_id="paged")
        done = env.export.wait_for_job(job.job_id, timeout=WAIT, poll_interval=0.1)
        assert done.status is ExportJobStatus.COMPLETED, done.last_error
        assert (done.scanned_instances, done.exported_instances) == (5, 5)
        assert len(writer.files) == 5
        assert done.checkpoint is not None and done.checkpoint.last_instance_key is not None
        # the orchestrator continued as new along the way and carried its totals
        state = env.client.wait_for_orchestration_completion("export-job-paged", timeout=WAIT)
        assert state is not None and state.get_output()["totals"]["exported"] == 5
        history = env.client.get_orchestration_history("export-job-paged")
        started = next(e for e in history if isinstance(e, ExecutionStartedEvent))
        assert json.loads(started.input or "null").get("checkpoint") is not None


def _completed(env: Env, job_id: str) -> ExportJobDescription | None:
    found = env.export.get_job(job_id)
    return found if found is not None and found.status is ExportJobStatus.COMPLETED else None


def test_a_page_that_keeps_failing_fails_the_job(sidecar: Any, fast_retries: None) -> None:
    writer = MemoryWriter()
    with export_env(sidecar.address, writer) as env:
        instances = run_instances(env)
        bad = next(i for i, s in instances.items() if s is OrchestrationStatus.COMPLETED)
        writer.failing.add(bad)
        job = env.export.create_job(window())
        done = env.export.wait_for_job(job.job_id, timeout=WAIT, poll_interval=0.1)
        assert done.status is ExportJobStatus.FAILED
        assert done.failed_instances == 1 and [f.instance_id for f in done.failures] == [bad]
        assert done.failures[0].attempt_count == 3 and "disk full" in done.failures[0].reason
        assert done.last_error is not None and bad in done.last_error and "OSError" in done.last_error
        # a failed job can be created again; it starts from scratch
        writer.failing.clear()
        env.export.create_job(window(), job_id=job.job_id)
        again = env.export.wait_for_job(job.job_id, timeout=WAIT, poll_interval=0.1)
        if again.status is ExportJobStatus.FAILED:  # the old state, before the create was processed
            again = eventually(lambda: _completed(env, job.job_id), WAIT, "the re-created job to complete")
        assert (again.exported_instances, again.failed_instances, again.failures) == (3, 0, [])


def test_continuous_job_cancel_and_errors(sidecar: Any, fast_retries: None) -> None:
    writer = MemoryWriter()
    with export_env(sidecar.address, writer) as env:
        start = datetime.now(timezone.utc) - timedelta(minutes=1)
        first = env.client.schedule_new_orchestration(ok_orchestrator, input="one")
        env.client.wait_for_orchestration_completion(first, timeout=WAIT)
        options = ExportJobCreationOptions(
            mode=ExportMode.CONTINUOUS, completed_time_from=start, destination=ExportDestination(container="live")
        )
        env.export.create_job(options, job_id="tail")
        eventually(lambda: len(writer.files) >= 1, WAIT, "the first instance exported")
        later = env.client.schedule_new_orchestration(ok_orchestrator, input="two")
        env.client.wait_for_orchestration_completion(later, timeout=WAIT)
        eventually(lambda: len(writer.files) >= 2, WAIT, "an instance finished later exported too")
        job = env.export.get_job("tail")
        assert job is not None and job.status is ExportJobStatus.ACTIVE

        # a second create of an active job is refused, naming the job and the statuses
        with pytest.raises(ExportJobInvalidTransitionError, match="'create' cannot transition export job 'tail'"):
            env.export.create_job(options, job_id="tail")

        env.export.cancel_job("tail")
        # The job's state goes with a signal to its entity, which a worker runs when it comes to it
        # (the orchestrator is terminated and purged meanwhile): a read just after may still see it.
        eventually(lambda: env.export.get_job("tail") is None, WAIT, "the cancelled job's state to be deleted")
        assert env.client.get_orchestration_state("export-job-tail") is None  # terminated, then purged
        env.export.delete_job("tail")  # deleting again is harmless

        # unknown jobs
        assert env.export.get_job("nope") is None
        with pytest.raises(ExportJobNotFoundError, match="Export job 'nope' was not found"):
            env.export.wait_for_job("nope", timeout=0.3, poll_interval=0.1)
        with pytest.raises(ValueError, match="timeout must be positive"):
            env.export.wait_for_job("nope", timeout=0)

        # bad configuration is refused before anything is created
        now = datetime.now(timezone.utc)
        bad_options = [
            (window(completed_time_to=None), "completed_time_to is required for batch mode"),
            (window(completed_time_to=now - timedelta(hours=1)), "strictly greater"),
            (window(runtime_status=[OrchestrationStatus.RUNNING]), "only contain terminal statuses.*RUNNING"),
            (window(max_instances_per_batch=0), r"max_instances_per_batch must be in \[1, 1000\]"),
            (window(max_parallel_exports=0), "max_parallel_exports must be positive"),
        ]
        for bad, message in bad_options:
            with pytest.raises(ValueError, match=message):
                env.export.create_job(bad, job_id="bad")
        with pytest.raises(ValueError, match="destination.container must be a non-empty string"):
            ExportDestination(container="")
        assert env.export.get_job("bad") is None

        # the entity refuses an operation its status does not allow
        done = env.export.create_job(window())
        env.export.wait_for_job(done.job_id, timeout=WAIT, poll_interval=0.1)
        caller = env.client.schedule_new_orchestration(entity_caller, input={"job": done.job_id, "op": "mark_completed"})
        state = env.client.wait_for_orchestration_completion(caller, timeout=WAIT)
        assert state is not None and state.runtime_status is OrchestrationStatus.FAILED
        assert state.failure_details is not None
        assert "'mark_completed' cannot transition export job" in state.failure_details.message
        assert "from 'Completed' to 'Completed'" in state.failure_details.message


def test_the_async_clients(sidecar: Any) -> None:
    writer = MemoryWriter()
    with export_env(sidecar.address, writer) as env:
        run_instances(env)

        async def scenario() -> None:
            client = AsyncTaskHubGrpcClient(host_address=env.address)
            export = AsyncExportHistoryClient(client, writer)
            try:
                job = await export.create_job(window(), job_id="async-job")
                job_client = export.get_job_client(job.job_id)
                assert job_client.orchestrator_instance_id == "export-job-async-job"
                done = await job_client.wait(timeout=WAIT, poll_interval=0.1)
                assert (done.status, done.exported_instances) == (ExportJobStatus.COMPLETED, 3)
                # the job entity is marked completed by the orchestrator's last turn, which commits just after
                await client.wait_for_orchestration_completion("export-job-async-job", timeout=WAIT)
                described = await job_client.describe()
                assert described is not None and described.exported_instances == 3
                listed = [d.job_id async for d in export.list_jobs(ExportJobQuery(status=[ExportJobStatus.COMPLETED]))]
                assert listed == ["async-job"]
                with pytest.raises(ExportJobNotFoundError):
                    await export.wait_for_job(uuid.uuid4().hex, timeout=0.2, poll_interval=0.1)
                await job_client.delete()
                assert await export.get_job("async-job") is None
                assert [d async for d in export.list_jobs()] == []
            finally:
                await client.close()

        asyncio.run(scenario())
