"""Export the histories of finished orchestrations to a destination (Azure Blob Storage, or any ``HistoryWriter``).

An export job is a durable entity (``ExportJobEntity``, key: the job ID) that holds the job's
configuration and progress, an orchestrator (``export_job_orchestrator``, instance
``export-job-<job ID>``) that lists matching terminal instances page by page, and two
activities that list instances and write one instance's history. Usage::

    export = ExportHistoryClient(client, AzureBlobHistoryExportWriter(options))
    export.register_worker(worker)          # before worker.start()
    job = export.create_job(ExportJobCreationOptions(
        mode=ExportMode.BATCH, completed_time_from=start, completed_time_to=end,
        destination=ExportDestination(container="exports", prefix="2026-01")))
    export.wait_for_job(job.job_id)

The core needs nothing beyond the SDK; ``azure_blob`` needs the ``history-export-azure`` extra.
Names, stored state, file formats and file names are those of Microsoft's extension.
"""

from durabletask.extensions.history_export._common import (
    ENTITY_NAME,
    ORCHESTRATOR_NAME,
    orchestrator_instance_id_for,
)
from durabletask.extensions.history_export.activities import (
    HistoryExportContext,
    HistoryExportContextResolver,
    build_activities,
    run_export_instance_history,
    run_list_terminal_instances,
)
from durabletask.extensions.history_export.client import (
    AsyncExportHistoryClient,
    AsyncExportHistoryJobClient,
    ExportHistoryClient,
    ExportHistoryJobClient,
)
from durabletask.extensions.history_export.entity import ExportJobEntity
from durabletask.extensions.history_export.exceptions import (
    ExportJobError,
    ExportJobInvalidTransitionError,
    ExportJobNotFoundError,
)
from durabletask.extensions.history_export.models import (
    STATE_SCHEMA_VERSION,
    ExportCheckpoint,
    ExportDestination,
    ExportFailure,
    ExportFilter,
    ExportFormat,
    ExportFormatKind,
    ExportJobConfiguration,
    ExportJobCreationOptions,
    ExportJobDescription,
    ExportJobQuery,
    ExportJobState,
    ExportJobStatus,
    ExportMode,
)
from durabletask.extensions.history_export.writer import HistoryWriter

__all__ = [
    "ENTITY_NAME",
    "ORCHESTRATOR_NAME",
    "STATE_SCHEMA_VERSION",
    "AsyncExportHistoryClient",
    "AsyncExportHistoryJobClient",
    "ExportCheckpoint",
    "ExportDestination",
    "ExportFailure",
    "ExportFilter",
    "ExportFormat",
    "ExportFormatKind",
    "ExportHistoryClient",
    "ExportHistoryJobClient",
    "ExportJobConfiguration",
    "ExportJobCreationOptions",
    "ExportJobDescription",
    "ExportJobEntity",
    "ExportJobError",
    "ExportJobInvalidTransitionError",
    "ExportJobNotFoundError",
    "ExportJobQuery",
    "ExportJobState",
    "ExportJobStatus",
    "ExportMode",
    "HistoryExportContext",
    "HistoryExportContextResolver",
    "HistoryWriter",
    "build_activities",
    "orchestrator_instance_id_for",
    "run_export_instance_history",
    "run_list_terminal_instances",
]
