"""Clients of the history-export extension: create, inspect, list, wait for and delete jobs.

``ExportHistoryClient`` wraps a ``TaskHubGrpcClient`` and the ``HistoryWriter`` the export
activities use; ``register_worker`` adds the entity, the orchestrator and the activities to a
worker. ``get_job_client`` returns an ``ExportHistoryJobClient`` bound to one job. The
``Async...`` twins take an ``AsyncTaskHubGrpcClient`` and have the same methods as coroutines
(``list_jobs`` is an async iterator there).

Beyond the official extension: ``create_job`` refuses a job ID whose job is still ACTIVE with
``ExportJobInvalidTransitionError`` (the official client sends the ``create`` anyway, the entity
refuses it and the caller is not told).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import grpc

from durabletask.client import AsyncTaskHubGrpcClient, EntityQuery, TaskHubGrpcClient
from durabletask.entities import EntityInstanceId, EntityMetadata
from durabletask.extensions.history_export._common import (
    ENTITY_NAME,
    ORCHESTRATOR_NAME,
    logger,
    orchestrator_instance_id_for,
)
from durabletask.extensions.history_export.activities import HistoryExportContext
from durabletask.extensions.history_export.activities import register as register_activities
from durabletask.extensions.history_export.entity import ExportJobEntity
from durabletask.extensions.history_export.exceptions import (
    ExportJobInvalidTransitionError,
    ExportJobNotFoundError,
)
from durabletask.extensions.history_export.models import (
    ExportJobCreationOptions,
    ExportJobDescription,
    ExportJobQuery,
    ExportJobStatus,
)
from durabletask.extensions.history_export.orchestrator import export_job_orchestrator
from durabletask.extensions.history_export.writer import HistoryWriter
from durabletask.worker import TaskHubGrpcWorker

_FINAL = (ExportJobStatus.COMPLETED, ExportJobStatus.FAILED)
# entity instance IDs are "@<lower-cased name>@<key>"
_ENTITY_ID_PREFIX = f"@{ENTITY_NAME.lower()}@"
_DELETE_WAIT_SECONDS = 30.0
# what terminate/purge/wait answer for an orchestrator that is not there (never ran, purged, finished)
_IGNORED_ON_DELETE = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def _ignorable(err: grpc.RpcError) -> bool:
    code = getattr(err, "code", None)
    return callable(code) and code() in _IGNORED_ON_DELETE


def _check_wait_arguments(timeout: float, poll_interval: float) -> None:
    if timeout <= 0:
        raise ValueError(f"timeout must be positive; got {timeout}")
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive; got {poll_interval}")


def _not_final_error(job_id: str, timeout: float, last: ExportJobDescription) -> TimeoutError:
    return TimeoutError(
        f"Export job {job_id!r} did not reach a terminal status within {timeout}s "
        f"(last status: {last.status.value})"
    )


def _describe(job_id: str, meta: EntityMetadata | None) -> ExportJobDescription | None:
    state = None if meta is None else meta.get_typed_state()
    if not isinstance(state, dict) or not state:
        return None
    return ExportJobDescription.from_state_dict(job_id, state)


def _check_not_active(job_id: str, current: ExportJobDescription | None) -> None:
    if current is not None and current.status is ExportJobStatus.ACTIVE:
        raise ExportJobInvalidTransitionError(
            ExportJobEntity.OP_CREATE, current.status.value, ExportJobStatus.ACTIVE.value, job_id=job_id
        )


def _create_request(
    options: ExportJobCreationOptions, job_id: str | None
) -> tuple[EntityInstanceId, dict[str, Any], ExportJobDescription]:
    """The entity, the ``create`` input and the description returned for a new job."""
    config = options.to_configuration()
    resolved = job_id or uuid.uuid4().hex
    created_at = datetime.now(timezone.utc)
    description = ExportJobDescription(
        job_id=resolved,
        status=ExportJobStatus.ACTIVE,
        created_at=created_at,
        last_modified_at=created_at,
        config=config,
        orchestrator_instance_id=orchestrator_instance_id_for(resolved),
        scanned_instances=0,
        exported_instances=0,
        failed_instances=0,
        last_error=None,
        checkpoint=None,
        last_checkpoint_time=None,
    )
    payload = {"config": config.to_dict(), "created_at": created_at.isoformat()}
    return EntityInstanceId(ENTITY_NAME, resolved), payload, description


def _entity_query(query: ExportJobQuery) -> EntityQuery:
    return EntityQuery(
        instance_id_starts_with=_ENTITY_ID_PREFIX,
        last_modified_from=query.last_modified_from,
        last_modified_to=query.last_modified_to,
        include_state=True,
        page_size=query.page_size,
    )


def _matching(entities: list[EntityMetadata], query: ExportJobQuery) -> Iterator[ExportJobDescription]:
    wanted = set(query.status) if query.status else None
    for meta in entities:
        if meta.id.entity != ENTITY_NAME.lower():
            continue
        try:
            description = _describe(meta.id.key, meta)
        except (KeyError, TypeError, ValueError) as err:
            logger.warning("list_jobs: skipping export job %r, its state is not readable (%s)", meta.id.key, err)
            continue
        if description is not None and (wanted is None or description.status in wanted):
            yield description


class ExportHistoryClient:
    """Creates and manages export jobs through a ``TaskHubGrpcClient``."""

    def __init__(self, durable_task_client: TaskHubGrpcClient, writer: HistoryWriter) -> None:
        self._client = durable_task_client
        self._writer = writer

    def register_worker(self, worker_instance: TaskHubGrpcWorker) -> None:
        """Add the export-job entity, orchestrator and activities to ``worker_instance`` (before it starts)."""
        worker_instance.add_entity(ExportJobEntity, name=ENTITY_NAME)
        context = HistoryExportContext(client=self._client, writer=self._writer)
        register_activities(worker_instance, lambda: context)
        worker_instance.add_orchestrator(export_job_orchestrator)

    def create_job(self, options: ExportJobCreationOptions, *, job_id: str | None = None) -> ExportJobDescription:
        """Start a job (ID: ``job_id`` or a new one); its orchestrator is ``export-job-<job ID>``.

        Raises ValueError for an invalid configuration and ExportJobInvalidTransitionError
        when a job with this ID is still ACTIVE. A finished job with this ID starts again
        from scratch.
        """
        entity_id, payload, description = _create_request(options, job_id)
        if job_id:
            _check_not_active(job_id, self.get_job(job_id))
        self._client.signal_entity(entity_id, ExportJobEntity.OP_CREATE, input=payload)
        logger.info("export job %r submitted", description.job_id)
        return description

    def get_job(self, job_id: str) -> ExportJobDescription | None:
        """The job's description, or None when there is no such job."""
        return _describe(job_id, self._client.get_entity(EntityInstanceId(ENTITY_NAME, job_id), include_state=True))

    def list_jobs(self, query: ExportJobQuery | None = None) -> Iterator[ExportJobDescription]:
        """Every job matching ``query`` (all jobs by default)."""
        query = query or ExportJobQuery()
        yield from _matching(self._client.get_all_entities(_entity_query(query)), query)

    def wait_for_job(
        self, job_id: str, *, timeout: float = 300.0, poll_interval: float = 1.0
    ) -> ExportJobDescription:
        """Poll until the job is COMPLETED or FAILED.

        Raises TimeoutError when it is still ACTIVE after ``timeout`` seconds, and
        ExportJobNotFoundError when it never existed during that time.
        """
        _check_wait_arguments(timeout, poll_interval)
        deadline = time.monotonic() + timeout
        last: ExportJobDescription | None = None
        pause = threading.Event()
        while True:
            last = self.get_job(job_id) or last
            if last is not None and last.status in _FINAL:
                return last
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last is None:
                    raise ExportJobNotFoundError(job_id)
                raise _not_final_error(job_id, timeout, last)
            pause.wait(min(poll_interval, remaining))

    def delete_job(self, job_id: str) -> None:
        """Delete the job: its state, and its orchestrator (terminated, then purged). Files stay."""
        instance_id = orchestrator_instance_id_for(job_id)
        self._client.signal_entity(EntityInstanceId(ENTITY_NAME, job_id), ExportJobEntity.OP_DELETE)
        try:
            self._client.terminate_orchestration(instance_id, recursive=True)
        except grpc.RpcError as err:
            if not _ignorable(err):
                raise
        if self._client.get_orchestration_state(instance_id, fetch_payloads=False) is None:
            return  # the orchestrator never ran or is already purged
        try:
            self._client.wait_for_orchestration_completion(instance_id, timeout=_DELETE_WAIT_SECONDS)
        except TimeoutError:
            logger.warning("export job %r: orchestrator %s did not stop in %ss", job_id, instance_id, _DELETE_WAIT_SECONDS)
        except grpc.RpcError as err:
            if not _ignorable(err):
                raise
        try:
            self._client.purge_orchestration(instance_id, recursive=True)
        except grpc.RpcError as err:
            if not _ignorable(err):
                raise

    def cancel_job(self, job_id: str) -> None:
        """Same as ``delete_job`` (the way to stop a continuous job)."""
        self.delete_job(job_id)

    def get_job_client(self, job_id: str) -> ExportHistoryJobClient:
        """A client bound to job ``job_id``."""
        return ExportHistoryJobClient(self, job_id)

    @property
    def entity_name(self) -> str:
        return ENTITY_NAME

    @property
    def orchestrator_name(self) -> str:
        return ORCHESTRATOR_NAME

    @property
    def writer(self) -> HistoryWriter:
        return self._writer

    @property
    def underlying_client(self) -> TaskHubGrpcClient:
        return self._client


class ExportHistoryJobClient:
    """One job's view of an ExportHistoryClient."""

    def __init__(self, parent: ExportHistoryClient, job_id: str) -> None:
        if not job_id:
            raise ValueError("job_id must be a non-empty string")
        self._parent = parent
        self._job_id = job_id

    @property
    def job_id(self) -> str:
        return self._job_id

    @property
    def orchestrator_instance_id(self) -> str:
        return orchestrator_instance_id_for(self._job_id)

    def describe(self) -> ExportJobDescription | None:
        """The job's description, or None when it does not exist."""
        return self._parent.get_job(self._job_id)

    def wait(self, *, timeout: float = 300.0, poll_interval: float = 1.0) -> ExportJobDescription:
        """See ``ExportHistoryClient.wait_for_job``."""
        return self._parent.wait_for_job(self._job_id, timeout=timeout, poll_interval=poll_interval)

    def delete(self) -> None:
        """See ``ExportHistoryClient.delete_job``."""
        self._parent.delete_job(self._job_id)


class AsyncExportHistoryClient:
    """``ExportHistoryClient`` for asyncio, through an ``AsyncTaskHubGrpcClient``.

    It has no ``register_worker``: register with an ``ExportHistoryClient`` (the activities run
    on the worker's threads and need the synchronous client).
    """

    def __init__(self, durable_task_client: AsyncTaskHubGrpcClient, writer: HistoryWriter) -> None:
        self._client = durable_task_client
        self._writer = writer

    async def create_job(
        self, options: ExportJobCreationOptions, *, job_id: str | None = None
    ) -> ExportJobDescription:
        """See ``ExportHistoryClient.create_job``."""
        entity_id, payload, description = _create_request(options, job_id)
        if job_id:
            _check_not_active(job_id, await self.get_job(job_id))
        await self._client.signal_entity(entity_id, ExportJobEntity.OP_CREATE, input=payload)
        logger.info("export job %r submitted", description.job_id)
        return description

    async def get_job(self, job_id: str) -> ExportJobDescription | None:
        """See ``ExportHistoryClient.get_job``."""
        meta = await self._client.get_entity(EntityInstanceId(ENTITY_NAME, job_id), include_state=True)
        return _describe(job_id, meta)

    async def list_jobs(self, query: ExportJobQuery | None = None) -> AsyncIterator[ExportJobDescription]:
        """See ``ExportHistoryClient.list_jobs``."""
        query = query or ExportJobQuery()
        for description in _matching(await self._client.get_all_entities(_entity_query(query)), query):
            yield description

    async def wait_for_job(
        self, job_id: str, *, timeout: float = 300.0, poll_interval: float = 1.0
    ) -> ExportJobDescription:
        """See ``ExportHistoryClient.wait_for_job``."""
        _check_wait_arguments(timeout, poll_interval)
        deadline = time.monotonic() + timeout
        last: ExportJobDescription | None = None
        while True:
            last = await self.get_job(job_id) or last
            if last is not None and last.status in _FINAL:
                return last
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last is None:
                    raise ExportJobNotFoundError(job_id)
                raise _not_final_error(job_id, timeout, last)
            await asyncio.sleep(min(poll_interval, remaining))

    async def delete_job(self, job_id: str) -> None:
        """See ``ExportHistoryClient.delete_job``."""
        instance_id = orchestrator_instance_id_for(job_id)
        await self._client.signal_entity(EntityInstanceId(ENTITY_NAME, job_id), ExportJobEntity.OP_DELETE)
        try:
            await self._client.terminate_orchestration(instance_id, recursive=True)
        except grpc.RpcError as err:
            if not _ignorable(err):
                raise
        if await self._client.get_orchestration_state(instance_id, fetch_payloads=False) is None:
            return  # the orchestrator never ran or is already purged
        try:
            await self._client.wait_for_orchestration_completion(instance_id, timeout=_DELETE_WAIT_SECONDS)
        except TimeoutError:
            logger.warning("export job %r: orchestrator %s did not stop in %ss", job_id, instance_id, _DELETE_WAIT_SECONDS)
        except grpc.RpcError as err:
            if not _ignorable(err):
                raise
        try:
            await self._client.purge_orchestration(instance_id, recursive=True)
        except grpc.RpcError as err:
            if not _ignorable(err):
                raise

    async def cancel_job(self, job_id: str) -> None:
        """Same as ``delete_job``."""
        await self.delete_job(job_id)

    def get_job_client(self, job_id: str) -> AsyncExportHistoryJobClient:
        """A client bound to job ``job_id``."""
        return AsyncExportHistoryJobClient(self, job_id)

    @property
    def writer(self) -> HistoryWriter:
        return self._writer


class AsyncExportHistoryJobClient:
    """One job's view of an AsyncExportHistoryClient."""

    def __init__(self, parent: AsyncExportHistoryClient, job_id: str) -> None:
        if not job_id:
            raise ValueError("job_id must be a non-empty string")
        self._parent = parent
        self._job_id = job_id

    @property
    def job_id(self) -> str:
        return self._job_id

    @property
    def orchestrator_instance_id(self) -> str:
        return orchestrator_instance_id_for(self._job_id)

    async def describe(self) -> ExportJobDescription | None:
        """The job's description, or None when it does not exist."""
        return await self._parent.get_job(self._job_id)

    async def wait(self, *, timeout: float = 300.0, poll_interval: float = 1.0) -> ExportJobDescription:
        """See ``ExportHistoryClient.wait_for_job``."""
        return await self._parent.wait_for_job(self._job_id, timeout=timeout, poll_interval=poll_interval)

    async def delete(self) -> None:
        """See ``ExportHistoryClient.delete_job``."""
        await self._parent.delete_job(self._job_id)


__all__ = [
    "AsyncExportHistoryClient",
    "AsyncExportHistoryJobClient",
    "ExportHistoryClient",
    "ExportHistoryJobClient",
    "orchestrator_instance_id_for",
]
