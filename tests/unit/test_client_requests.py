"""Client request building and response parsing, without a network."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2

from durabletask import task
from durabletask.client import (
    CleanEntityStorageResult,
    EntityQuery,
    OrchestrationFailedError,
    OrchestrationQuery,
    OrchestrationState,
    OrchestrationStatus,
    Page,
    PurgeInstancesResult,
    new_instance_id_page,
    new_orchestration_state,
    new_purge_instances_result,
    parse_orchestration_state,
)
from durabletask.grpc_options import (
    GrpcChannelOptions,
    GrpcClientResiliencyOptions,
    GrpcRetryPolicyOptions,
    GrpcWorkerResiliencyOptions,
)
from durabletask.internal import client_requests as cr
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.serialization import JsonDataConverter


def my_orchestrator(ctx: task.OrchestrationContext, _: object) -> str:
    return "done"


def ts(dt: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(dt)
    return stamp


class EntityId:
    """Stands in for durabletask.entities.EntityInstanceId: only str() matters to the client."""

    def __init__(self, name: str, key: str) -> None:
        self.name, self.key = name, key

    def __str__(self) -> str:
        return f"@{self.name}@{self.key}"


@dataclass
class Point:
    x: int
    y: int


# ---------------------------------------------------------------- status and state types

def test_status_values_are_the_wire_values() -> None:
    expected = {"RUNNING": 0, "COMPLETED": 1, "CONTINUED_AS_NEW": 2, "FAILED": 3,
                "TERMINATED": 5, "PENDING": 6, "SUSPENDED": 7}
    assert {s.name: s.value for s in OrchestrationStatus} == expected
    assert str(OrchestrationStatus.PENDING) == "PENDING"
    assert OrchestrationStatus(pb.ORCHESTRATION_STATUS_SUSPENDED) is OrchestrationStatus.SUSPENDED


def test_state_positional_construction_and_accessors() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0)
    state = OrchestrationState("id1", "orch", OrchestrationStatus.COMPLETED, now, now,
                               '{"x": 1, "y": 2}', "[1, 2]", '"working"', None)
    assert state.get_input() == {"x": 1, "y": 2}
    assert state.get_output() == [1, 2]
    assert state.get_custom_status() == "working"
    assert state.version is None and state.tags == {} and state.completed_at is None
    assert state.parent_instance_id is None
    state.raise_if_failed()
    empty = OrchestrationState("id2", "orch", OrchestrationStatus.PENDING, now, now, None, None, None, None)
    assert empty.get_input() is None and empty.get_output() is None and empty.get_custom_status() is None


def test_state_accessors_use_the_given_converter() -> None:
    class Upper(JsonDataConverter):
        def deserialize(self, data: str | bytes | None, target_type: object = None) -> object:
            return None if data is None else str(data).upper()

    now = datetime(2024, 5, 1)
    state = OrchestrationState("i", "n", OrchestrationStatus.RUNNING, now, now, '"abc"', None, None, None, Upper())
    assert state.get_input() == '"ABC"'
    plain = OrchestrationState("i", "n", OrchestrationStatus.RUNNING, now, now, '"abc"', None, None, None)
    assert state == plain  # the converter takes no part in equality


def test_raise_if_failed() -> None:
    now = datetime(2024, 5, 1)
    details = task.FailureDetails("boom", "builtins.ValueError", "trace")
    state = OrchestrationState("inst-9", "n", OrchestrationStatus.FAILED, now, now, None, None, None, details)
    with pytest.raises(OrchestrationFailedError) as info:
        state.raise_if_failed()
    assert info.value.failure_details is details
    assert "inst-9" in str(info.value) and "boom" in str(info.value)


def test_query_and_result_types_defaults() -> None:
    query = OrchestrationQuery()
    assert query.max_instance_count == 2**31 - 1
    assert query.fetch_inputs_and_outputs is False and query.runtime_status is None
    assert query.instance_id_prefix is None
    entity_query = EntityQuery()
    assert entity_query.include_state is True and entity_query.include_transient is False
    assert Page(["a"], None).continuation_token is None
    assert PurgeInstancesResult(3, True).deleted_instance_count == 3
    assert CleanEntityStorageResult(1, 2).orphaned_locks_released == 2


# ---------------------------------------------------------------- request builders

def test_schedule_request_from_function_with_everything() -> None:
    start = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])
    req = cr.build_schedule_new_orchestration_req(
        my_orchestrator, input={"a": [1, 2]}, instance_id="abc", start_at=start, reuse_id_policy=policy,
        tags={"team": "x"}, version="1.2", data_converter=JsonDataConverter(),
    )
    assert req.name == "my_orchestrator"
    assert req.instanceId == "abc"
    assert json.loads(req.input.value) == {"a": [1, 2]}
    assert req.scheduledStartTimestamp.ToDatetime(tzinfo=timezone.utc) == start
    assert list(req.orchestrationIdReusePolicy.replaceableStatus) == [pb.ORCHESTRATION_STATUS_COMPLETED]
    assert dict(req.tags) == {"team": "x"}
    assert req.HasField("version") and req.version.value == "1.2"


def test_schedule_request_defaults() -> None:
    req = cr.build_schedule_new_orchestration_req(
        "by_name", input=None, instance_id=None, start_at=None, reuse_id_policy=None, tags=None,
        version=None, data_converter=JsonDataConverter(),
    )
    assert req.name == "by_name"
    assert re.fullmatch(r"[0-9a-f]{32}", req.instanceId)
    assert not req.HasField("input")
    assert not req.HasField("scheduledStartTimestamp")
    assert not req.HasField("version")
    assert not req.HasField("orchestrationIdReusePolicy")
    assert len(req.tags) == 0
    other = cr.build_schedule_new_orchestration_req(
        "by_name", input=None, instance_id=None, start_at=None, reuse_id_policy=None, tags=None,
        version=None, data_converter=JsonDataConverter(),
    )
    assert other.instanceId != req.instanceId


def test_schedule_request_naive_start_is_utc() -> None:
    req = cr.build_schedule_new_orchestration_req(
        "o", input=0, instance_id="i", start_at=datetime(2030, 1, 1, 0, 0), reuse_id_policy=None,
        tags=None, version=None, data_converter=JsonDataConverter(),
    )
    assert req.scheduledStartTimestamp.ToDatetime() == datetime(2030, 1, 1, 0, 0)
    assert req.input.value == "0"  # a falsy input is still sent


def test_query_instances_request() -> None:
    query = OrchestrationQuery(
        created_time_from=datetime(2024, 1, 1), created_time_to=datetime(2024, 2, 1),
        runtime_status=[OrchestrationStatus.RUNNING, OrchestrationStatus.PENDING],
        max_instance_count=10, fetch_inputs_and_outputs=True, instance_id_prefix="job-",
    )
    token = wrappers_pb2.StringValue(value="page2")
    req = cr.build_query_instances_req(query, token)
    q = req.query
    assert list(q.runtimeStatus) == [pb.ORCHESTRATION_STATUS_RUNNING, pb.ORCHESTRATION_STATUS_PENDING]
    assert q.createdTimeFrom.ToDatetime() == datetime(2024, 1, 1)
    assert q.createdTimeTo.ToDatetime() == datetime(2024, 2, 1)
    assert q.maxInstanceCount == 10 and q.fetchInputsAndOutputs is True
    assert q.instanceIdPrefix.value == "job-"
    assert q.continuationToken.value == "page2"
    bare = cr.build_query_instances_req(OrchestrationQuery(), None).query
    assert not bare.HasField("continuationToken") and not bare.HasField("instanceIdPrefix")
    assert not bare.HasField("createdTimeFrom") and list(bare.runtimeStatus) == []
    assert bare.maxInstanceCount == 2**31 - 1


def test_list_instance_ids_request() -> None:
    req = cr.build_list_instance_ids_req([OrchestrationStatus.COMPLETED], datetime(2024, 1, 1), None, 5, "k1")
    assert list(req.runtimeStatus) == [pb.ORCHESTRATION_STATUS_COMPLETED]
    assert req.completedTimeFrom.ToDatetime() == datetime(2024, 1, 1)
    assert not req.HasField("completedTimeTo")
    assert req.pageSize == 5 and req.lastInstanceKey.value == "k1"
    bare = cr.build_list_instance_ids_req(None, None, None, None, None)
    assert bare.pageSize == 0 and not bare.HasField("lastInstanceKey")


def test_purge_requests() -> None:
    single = cr.build_purge_instance_req("x", True)
    assert single.WhichOneof("request") == "instanceId" and single.instanceId == "x"
    assert single.recursive is True and single.isOrchestration is True
    by_filter = cr.build_purge_by_filter_req(
        datetime(2024, 1, 1), None, [OrchestrationStatus.FAILED], False, timedelta(seconds=90)
    )
    assert by_filter.WhichOneof("request") == "purgeInstanceFilter"
    f = by_filter.purgeInstanceFilter
    assert f.createdTimeFrom.ToDatetime() == datetime(2024, 1, 1)
    assert list(f.runtimeStatus) == [pb.ORCHESTRATION_STATUS_FAILED]
    assert f.timeout.ToTimedelta() == timedelta(seconds=90)
    assert by_filter.recursive is False
    no_timeout = cr.build_purge_by_filter_req(None, None, None, True, None)
    assert not no_timeout.purgeInstanceFilter.HasField("timeout")
    with pytest.raises(ValueError):
        cr.build_purge_by_filter_req(None, None, None, False, timedelta(0))


def test_event_terminate_and_control_requests() -> None:
    conv = JsonDataConverter()
    event = cr.build_raise_event_req("i1", "Approval", {"ok": True}, conv)
    assert (event.instanceId, event.name, json.loads(event.input.value)) == ("i1", "Approval", {"ok": True})
    assert not cr.build_raise_event_req("i1", "E").HasField("input")
    term = cr.build_terminate_req("i1", "bye", False, conv)
    assert term.output.value == '"bye"' and term.recursive is False
    assert cr.build_terminate_req("i1").recursive is True
    assert cr.build_suspend_req("i1", "why").reason.value == "why"
    assert not cr.build_resume_req("i1", None).HasField("reason")
    assert cr.build_rewind_req("i1", "r").instanceId == "i1"
    assert cr.build_restart_req("i1", True).restartWithNewInstanceId is True
    hist = cr.build_history_req("i1", "exec", False)
    assert hist.executionId.value == "exec" and not cr.build_history_req("i1", None, False).HasField("executionId")


def test_entity_requests() -> None:
    when = datetime(2030, 6, 1, tzinfo=timezone.utc)
    sig = cr.build_signal_entity_req(EntityId("counter", "c1"), "add", 5, when, JsonDataConverter())
    assert sig.instanceId == "@counter@c1" and sig.name == "add" and sig.input.value == "5"
    assert sig.scheduledTime.ToDatetime(tzinfo=timezone.utc) == when
    assert re.fullmatch(r"[0-9a-f-]{36}", sig.requestId) and sig.HasField("requestTime")
    again = cr.build_signal_entity_req(EntityId("counter", "c1"), "add")
    assert again.requestId != sig.requestId and not again.HasField("scheduledTime")
    get = cr.build_get_entity_req(EntityId("counter", "c1"), False)
    assert get.instanceId == "@counter@c1" and get.includeState is False
    query = EntityQuery(instance_id_starts_with="@counter", page_size=7, include_transient=True)
    q = cr.build_query_entities_req(query, wrappers_pb2.StringValue(value="t")).query
    assert q.instanceIdStartsWith.value == "@counter" and q.pageSize.value == 7
    assert q.includeState is True and q.includeTransient is True and q.continuationToken.value == "t"
    assert not cr.build_query_entities_req(EntityQuery(), None).query.HasField("pageSize")
    clean = cr.build_clean_entity_storage_req(True, False, None)
    assert clean.removeEmptyEntities is True and clean.releaseOrphanedLocks is False


def test_following_a_continuation_token_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test-client-token-log")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert cr.check_continuation_token(wrappers_pb2.StringValue(value="page-2"), None, log) is True
    assert [(r.levelno, "page-2" in r.getMessage()) for r in caplog.records] == [(logging.INFO, True)]


def test_continuation_tokens() -> None:
    log = logging.getLogger("test-client-tokens")
    token = wrappers_pb2.StringValue
    assert cr.check_continuation_token(None, None, log) is False
    assert cr.check_continuation_token(token(value=""), None, log) is False
    assert cr.check_continuation_token(token(value="0"), None, log) is False
    assert cr.check_continuation_token(token(value="a"), None, log) is True
    assert cr.check_continuation_token(token(value="b"), token(value="a"), log) is True
    assert cr.check_continuation_token(token(value="a"), token(value="a"), log) is False
    resp = pb.QueryInstancesResponse()
    assert cr.response_token(resp) is None
    resp.continuationToken.value = "next"
    token_value = cr.response_token(resp)
    assert token_value is not None and token_value.value == "next"


# ---------------------------------------------------------------- response parsing

def full_state() -> pb.OrchestrationState:
    state = pb.OrchestrationState(
        instanceId="from-server", name="orch", orchestrationStatus=pb.ORCHESTRATION_STATUS_FAILED,
        createdTimestamp=ts(datetime(2024, 3, 1, 10, 0, 0)), lastUpdatedTimestamp=ts(datetime(2024, 3, 1, 10, 5)),
        completedTimestamp=ts(datetime(2024, 3, 1, 10, 5)),
        input=wrappers_pb2.StringValue(value='{"x": 1, "y": 2}'),
        output=wrappers_pb2.StringValue(value=""),
        version=wrappers_pb2.StringValue(value="2.0"),
        parentInstanceId=wrappers_pb2.StringValue(value="parent"),
        tags={"k": "v"},
    )
    details = state.failureDetails
    details.errorType = "builtins.ValueError"
    details.errorMessage = "bad"
    details.stackTrace.value = "line 1"
    details.innerFailure.errorType = "builtins.KeyError"
    details.innerFailure.errorMessage = "inner"
    details.properties["code"].CopyFrom(struct_pb2.Value(number_value=42))
    details.properties["tags"].CopyFrom(struct_pb2.Value(list_value=struct_pb2.ListValue(
        values=[struct_pb2.Value(string_value="a"), struct_pb2.Value(bool_value=True)])))
    return state


def test_parse_full_state() -> None:
    parsed = parse_orchestration_state(full_state())
    assert parsed.instance_id == "from-server" and parsed.name == "orch"
    assert parsed.runtime_status is OrchestrationStatus.FAILED
    assert parsed.created_at == datetime(2024, 3, 1, 10, 0, 0) and parsed.created_at.tzinfo is None
    assert parsed.last_updated_at == datetime(2024, 3, 1, 10, 5)
    assert parsed.completed_at == datetime(2024, 3, 1, 10, 5)
    assert parsed.get_input() == {"x": 1, "y": 2}
    assert parsed.get_input(Point) == Point(1, 2)
    assert parsed.serialized_output == "" and parsed.serialized_custom_status is None
    assert parsed.version == "2.0" and parsed.parent_instance_id == "parent" and parsed.tags == {"k": "v"}
    failure = parsed.failure_details
    assert failure is not None
    assert (failure.message, failure.error_type, failure.stack_trace) == ("bad", "builtins.ValueError", "line 1")
    assert failure.inner_failure is not None and failure.inner_failure.message == "inner"
    assert failure.inner_failure.inner_failure is None and failure.inner_failure.stack_trace is None
    assert failure.properties == {"code": 42, "tags": ["a", True]}
    with pytest.raises(OrchestrationFailedError):
        parsed.raise_if_failed()


def test_parse_minimal_state() -> None:
    parsed = parse_orchestration_state(pb.OrchestrationState(
        instanceId="i", name="n", orchestrationStatus=pb.ORCHESTRATION_STATUS_PENDING))
    assert parsed.runtime_status is OrchestrationStatus.PENDING
    assert parsed.failure_details is None and parsed.serialized_input is None
    assert parsed.version is None and parsed.completed_at is None and parsed.parent_instance_id is None


def test_new_orchestration_state() -> None:
    assert new_orchestration_state("i", pb.GetInstanceResponse(exists=False)) is None
    res = pb.GetInstanceResponse(exists=True, orchestrationState=full_state())
    state = new_orchestration_state("requested-id", res)
    assert state is not None and state.instance_id == "requested-id"


def test_purge_result_and_id_page() -> None:
    unknown = new_purge_instances_result(pb.PurgeInstancesResponse(deletedInstanceCount=2))
    assert unknown == PurgeInstancesResult(2, None)
    done = new_purge_instances_result(
        pb.PurgeInstancesResponse(deletedInstanceCount=1, isComplete=wrappers_pb2.BoolValue(value=False)))
    assert done == PurgeInstancesResult(1, False)
    page = new_instance_id_page(pb.ListInstanceIdsResponse(
        instanceIds=["a", "b"], lastInstanceKey=wrappers_pb2.StringValue(value="b")))
    assert page == Page(["a", "b"], "b")
    assert new_instance_id_page(pb.ListInstanceIdsResponse(instanceIds=["z"])) == Page(["z"], None)


# ---------------------------------------------------------------- errors, resiliency, logging

def test_transport_failure_classification_and_tracker() -> None:
    assert cr.is_transport_failure("GetInstance", grpc.StatusCode.UNAVAILABLE)
    assert cr.is_transport_failure("GetInstance", grpc.StatusCode.DEADLINE_EXCEEDED)
    assert not cr.is_transport_failure("WaitForInstanceCompletion", grpc.StatusCode.DEADLINE_EXCEEDED)
    assert not cr.is_transport_failure("RaiseEvent", grpc.StatusCode.NOT_FOUND)
    tracker = cr.FailureTracker(threshold=2)
    assert tracker.record_failure() is False
    assert tracker.record_failure() is True
    tracker.record_success()
    assert tracker.record_failure() is False
    disabled = cr.FailureTracker(threshold=0)
    assert not any(disabled.record_failure() for _ in range(10))


def test_client_logger() -> None:
    handler = logging.NullHandler()
    logger = cr.get_client_logger(handler, None, None)
    assert logger.name == "durabletask-client" and handler in logger.handlers
    assert handler.formatter is not None
    mine = logging.getLogger("my-app")
    assert cr.get_client_logger(None, None, mine) is mine
    with pytest.raises(ValueError):
        cr.get_client_logger(handler, None, mine)


# ---------------------------------------------------------------- grpc options

def test_channel_options_to_grpc_options() -> None:
    assert GrpcChannelOptions().to_grpc_options() == []
    opts = GrpcChannelOptions(
        max_receive_message_length=1, max_send_message_length=2, keepalive_time_ms=3,
        keepalive_timeout_ms=4, keepalive_permit_without_calls=False, raw_options=[("grpc.x", 9)],
    ).to_grpc_options()
    assert opts == [("grpc.x", 9), ("grpc.max_receive_message_length", 1), ("grpc.max_send_message_length", 2),
                    ("grpc.keepalive_time_ms", 3), ("grpc.keepalive_timeout_ms", 4),
                    ("grpc.keepalive_permit_without_calls", 0)]


def test_retry_policy_service_config() -> None:
    opts = dict(GrpcChannelOptions(retry_policy=GrpcRetryPolicyOptions()).to_grpc_options())
    assert opts["grpc.enable_retries"] == 1
    config = json.loads(opts["grpc.service_config"])
    policy = config["methodConfig"][0]["retryPolicy"]
    assert config["methodConfig"][0]["name"] == [{}]
    assert policy == {"maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "0.25s",
                      "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}
    assert GrpcRetryPolicyOptions(initial_backoff_seconds=1, max_backoff_seconds=2).to_service_config()[
        "methodConfig"][0]["retryPolicy"]["maxBackoff"] == "2s"


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 1}, {"initial_backoff_seconds": 0}, {"max_backoff_seconds": 0},
    {"backoff_multiplier": 0}, {"initial_backoff_seconds": 1, "max_backoff_seconds": 0.5},
    {"retryable_status_codes": []}, {"initial_backoff_seconds": 1e-12},
])
def test_retry_policy_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GrpcRetryPolicyOptions(**kwargs)  # type: ignore[arg-type]


def test_resiliency_options() -> None:
    client = GrpcClientResiliencyOptions()
    assert (client.channel_recreate_failure_threshold, client.min_recreate_interval_seconds) == (5, 30.0)
    worker = GrpcWorkerResiliencyOptions()
    assert (worker.hello_timeout_seconds, worker.silent_disconnect_timeout_seconds,
            worker.channel_recreate_failure_threshold, worker.reconnect_backoff_base_seconds,
            worker.reconnect_backoff_cap_seconds) == (30.0, 120.0, 5, 1.0, 30.0)
    with pytest.raises(ValueError):
        GrpcClientResiliencyOptions(channel_recreate_failure_threshold=-1)
    with pytest.raises(ValueError):
        GrpcClientResiliencyOptions(min_recreate_interval_seconds=-1)
    with pytest.raises(ValueError):
        GrpcWorkerResiliencyOptions(hello_timeout_seconds=0)
    with pytest.raises(ValueError):
        GrpcWorkerResiliencyOptions(reconnect_backoff_base_seconds=5, reconnect_backoff_cap_seconds=1)
    with pytest.raises(TypeError):
        GrpcClientResiliencyOptions(5)  # type: ignore[misc]  # keyword-only
