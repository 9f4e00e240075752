"""History export: models' JSON round trip, the stored-state layout, transitions, file formats and names."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import pytest

from durabletask.client import OrchestrationStatus
from durabletask.extensions.history_export import (
    STATE_SCHEMA_VERSION,
    ExportCheckpoint,
    ExportDestination,
    ExportFailure,
    ExportFilter,
    ExportFormat,
    ExportFormatKind,
    ExportJobConfiguration,
    ExportJobDescription,
    ExportJobInvalidTransitionError,
    ExportJobState,
    ExportJobStatus,
    ExportMode,
    orchestrator_instance_id_for,
)
from durabletask.extensions.history_export.activities import blob_name_for, dotnet_round_trip_time
from durabletask.extensions.history_export.serialization import serialize_history
from durabletask.extensions.history_export.transitions import assert_valid_transition, is_valid_transition
from durabletask.history import ExecutionStartedEvent

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def full_state() -> ExportJobState:
    config = ExportJobConfiguration(
        mode=ExportMode.BATCH,
        filter=ExportFilter(T0, T0 + timedelta(days=1), [OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED]),
        destination=ExportDestination("exports", "jan"),
        format=ExportFormat(ExportFormatKind.JSON, "1.0"),
        max_instances_per_batch=50,
        max_parallel_exports=4,
    )
    return ExportJobState(
        status=ExportJobStatus.FAILED,
        config=config,
        created_at=T0,
        last_modified_at=T0 + timedelta(minutes=1),
        orchestrator_instance_id="export-job-j1",
        checkpoint=ExportCheckpoint("token-7"),
        last_checkpoint_time=T0 + timedelta(seconds=30),
        last_error="Batch export failed after retries. Failures: i1: OSError: x",
        scanned_instances=10,
        exported_instances=9,
        failed_instances=1,
        failures=[ExportFailure("i1", "OSError: x", 3, T0)],
    )


def test_the_state_round_trips_through_json() -> None:
    state = full_state()
    stored = json.loads(json.dumps(state.to_dict()))
    assert ExportJobState.from_dict(stored) == state
    description = ExportJobDescription.from_state_dict("j1", stored)
    assert (description.job_id, description.status, description.failures) == ("j1", state.status, state.failures)
    assert ExportJobConfiguration.from_dict(json.loads(json.dumps(state.config.to_dict()))) == state.config


def test_the_stored_layout_is_the_official_one() -> None:
    stored = full_state().to_dict()
    assert stored["schema_version"] == STATE_SCHEMA_VERSION == "1.0"
    assert stored["status"] == "Failed"
    assert stored["config"] == {
        "mode": "Batch",
        "filter": {
            "completed_time_from": "2026-01-02T03:04:05.678901+00:00",
            "completed_time_to": "2026-01-03T03:04:05.678901+00:00",
            "runtime_status": [OrchestrationStatus.FAILED.value, OrchestrationStatus.TERMINATED.value],
        },
        "destination": {"container": "exports", "prefix": "jan"},
        "format": {"kind": "Json", "schema_version": "1.0"},
        "max_instances_per_batch": 50,
        "max_parallel_exports": 4,
    }
    assert stored["checkpoint"] == {"last_instance_key": "token-7"}
    assert stored["failures"] == [
        {"instance_id": "i1", "reason": "OSError: x", "attempt_count": 3, "last_attempt": "2026-01-02T03:04:05.678901+00:00"}
    ]
    assert orchestrator_instance_id_for("j1") == "export-job-j1"


def test_older_and_lenient_forms_are_read() -> None:
    stored = full_state().to_dict()
    stored["config"]["filter"]["runtime_status"] = ["FAILED", "5"]  # names (schema 1.0 writers), numbers as text
    del stored["config"]["format"]  # the default format
    state = ExportJobState.from_dict(stored)
    assert state.config.filter.runtime_status == [OrchestrationStatus.FAILED, OrchestrationStatus(5)]
    assert state.config.format == ExportFormat()
    naive = ExportFilter.from_dict({"completed_time_from": "2026-01-02T03:04:05"})
    assert naive.completed_time_from.tzinfo is timezone.utc and naive.effective_runtime_status() == [
        OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED
    ]


def test_bad_states_are_refused_by_name() -> None:
    stored = full_state().to_dict()
    with pytest.raises(ValueError, match="Unsupported export job state schema_version='2.0'"):
        ExportJobState.from_dict({**stored, "schema_version": "2.0"})
    with pytest.raises(ValueError, match="missing 'config'"):
        ExportJobState.from_dict({**stored, "config": None})
    with pytest.raises(ValueError, match="requires 'created_at'"):
        ExportJobState.from_dict({**stored, "created_at": None})
    with pytest.raises(ValueError, match="continuous mode"):
        ExportJobConfiguration(ExportMode.CONTINUOUS, ExportFilter(T0, T0 + timedelta(1)), ExportDestination("c"))


def test_transitions() -> None:
    assert is_valid_transition("create", None, ExportJobStatus.ACTIVE)
    assert is_valid_transition("create", ExportJobStatus.COMPLETED, ExportJobStatus.ACTIVE)
    assert not is_valid_transition("create", ExportJobStatus.ACTIVE, ExportJobStatus.ACTIVE)
    assert is_valid_transition("commit_checkpoint", ExportJobStatus.ACTIVE, ExportJobStatus.FAILED)
    assert not is_valid_transition("mark_completed", ExportJobStatus.FAILED, ExportJobStatus.COMPLETED)
    with pytest.raises(ExportJobInvalidTransitionError) as caught:
        assert_valid_transition("mark_completed", None, ExportJobStatus.COMPLETED, job_id="j1")
    assert str(caught.value) == "Operation 'mark_completed' cannot transition export job 'j1' from no job to 'Completed'"
    assert isinstance(caught.value, ValueError) and caught.value.job_id == "j1"


def test_file_formats_and_names() -> None:
    events = [ExecutionStartedEvent(event_id=-1, timestamp=T0, name="orch", input='"x"')]
    as_json = serialize_history(events, instance_id="i1", fmt=ExportFormat(ExportFormatKind.JSON), metadata={"a": 1})
    assert json.loads(as_json) == {
        "schema_version": "1.0", "instance_id": "i1", "metadata": {"a": 1},
        "events": [{"event_type": "ExecutionStartedEvent", **events[0].to_dict()}],
    }
    packed = serialize_history(events, instance_id="i1", fmt=ExportFormat(), metadata={"a": 1})
    assert packed == serialize_history(events, instance_id="i1", fmt=ExportFormat(), metadata={"a": 1})
    lines = gzip.decompress(packed).decode().split("\n")
    assert lines[-1] == "" and json.loads(lines[0]) == {
        "kind": "metadata", "schema_version": "1.0", "instance_id": "i1", "metadata": {"a": 1}
    }
    assert json.loads(lines[1])["event_type"] == "ExecutionStartedEvent"
    assert dotnet_round_trip_time(T0) == "2026-01-02T03:04:05.6789010+00:00"
    assert dotnet_round_trip_time(T0.astimezone(timezone(timedelta(hours=-5, minutes=-30)))) == (
        "2026-01-01T21:34:05.6789010-05:30"
    )
    name = blob_name_for("i1", T0, "jan/", ExportFormat())
    assert name.startswith("jan/") and name.endswith(".jsonl.gz") and len(name) == len("jan/") + 64 + len(".jsonl.gz")
    assert blob_name_for("i1", T0, None, ExportFormat(ExportFormatKind.JSON)) == name[4:-len(".jsonl.gz")] + ".json"
