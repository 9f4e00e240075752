"""The metrics' text format and the dashboard's views of stored values, without a server."""

from __future__ import annotations

import json

from google.protobuf.timestamp_pb2 import Timestamp

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.dashboard.views import entity_json, iso, schedule_json
from sidecar.engine_validate import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS
from sidecar.metrics import Histogram, SidecarMetrics


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.1", 2), ("1", 3), ("+Inf", 4)]
    assert histogram.count == 4 and abs(histogram.total - 3.65) < 1e-9


def test_render_counts_and_gauges() -> None:
    metrics = SidecarMetrics()
    metrics.count_dispatched("activity")
    metrics.count_completed("orchestration", 0.02)
    metrics.count_redispatch("entity", "abandoned")
    metrics.observe_commit("activity", 0.003)
    text = metrics.render(open_streams=2, backlog={"orchestration": 5})
    lines = text.splitlines()
    assert 'durabletask_work_items_dispatched_total{kind="activity"} 1' in lines
    assert 'durabletask_work_items_completed_total{kind="orchestration"} 1' in lines
    assert 'durabletask_redispatches_total{kind="entity",reason="abandoned"} 1' in lines
    assert 'durabletask_backlog{kind="orchestration"} 5' in lines
    assert 'durabletask_backlog{kind="entity"} 0' in lines
    assert "durabletask_open_streams 2" in lines
    assert 'durabletask_turn_duration_seconds_bucket{le="0.025"} 1' in lines
    assert 'durabletask_store_commit_duration_seconds_count{kind="activity"} 1' in lines
    assert text.count("# TYPE ") == text.count("# HELP ") == 8


def test_schedule_and_entity_views_read_the_stored_state() -> None:
    state = {"Status": 2, "NextRunAt": None, "ScheduleConfiguration": {"OrchestrationName": "tick", "Interval": "01:00:00"}}
    entity = pb.EntityMetadata(instanceId="@schedule@hourly", backlogQueueSize=3)
    entity.serializedState.value = json.dumps(json.dumps(state))  # stored as a JSON string, too
    schedule = schedule_json(entity)
    assert schedule is not None
    assert (schedule["schedule_id"], schedule["status"], schedule["orchestration_name"], schedule["interval"]) == (
        "hourly", "Paused", "tick", "01:00:00")
    entity.serializedState.value = "not json"
    assert schedule_json(entity) is None
    entity.lockedBy.value = "owner-1"
    shown = entity_json(entity)
    assert (shown["name"], shown["key"], shown["locked_by"], shown["queue_length"]) == ("schedule", "hourly", "owner-1", 3)


def test_iso_shows_every_timestamp_the_sidecar_accepts() -> None:
    # The validator accepts 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z; float arithmetic rounded
    # the last nanoseconds up into year 10000 (ValueError: the instance list answered 500).
    assert iso(Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999)) == "9999-12-31T23:59:59.999Z"
    assert iso(Timestamp(seconds=MIN_TIMESTAMP_SECONDS)) == "0001-01-01T00:00:00.000Z"
    assert iso(Timestamp(seconds=1_700_000_000, nanos=123_999_999)) == "2023-11-14T22:13:20.123Z"
