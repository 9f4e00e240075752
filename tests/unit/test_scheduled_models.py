"""Schedule options, descriptions, queries, stored state and transitions (pure)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from durabletask.scheduled import (
    ScheduleClientValidationError,
    ScheduleCreationOptions,
    ScheduleDescription,
    ScheduleError,
    ScheduleInvalidTransitionError,
    ScheduleNotFoundError,
    ScheduleQuery,
    ScheduleStatus,
    ScheduleUpdateOptions,
    transitions,
)
from durabletask.scheduled import _codec as codec
from durabletask.scheduled.models import ScheduleConfiguration, ScheduleState
from durabletask.serialization import JsonDataConverter

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


# --- creation options --------------------------------------------------------------------------


def test_official_positional_signature_still_works() -> None:
    options = ScheduleCreationOptions("daily", "report", timedelta(hours=24), {"x": 1}, "fixed-id", T0, T0 + MINUTE)
    assert options.interval == timedelta(hours=24) and options.orchestration_input == {"x": 1}
    assert options.orchestration_instance_id == "fixed-id" and options.cron is None
    assert options.start_at == T0 and options.end_at == T0 + MINUTE and options.start_immediately_if_late is False


def test_cron_instead_of_interval() -> None:
    options = ScheduleCreationOptions("nightly", "report", cron="0 3 * * *")
    assert options.interval is None and options.cron == "0 3 * * *"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"interval": timedelta(0)}, "interval must be positive"),
        ({"interval": timedelta(seconds=-5)}, "interval must be positive"),
        ({"interval": timedelta(milliseconds=500)}, "at least 1 second"),
        ({"interval": 5}, "interval must be a datetime.timedelta"),
        ({}, "an interval or a cron expression is required"),
        ({"interval": MINUTE, "cron": "* * * * *"}, "either interval or cron, not both"),
        ({"cron": "* * * 13 *"}, "in the month field"),
        ({"cron": "every day"}, "expected 5 fields"),
        ({"interval": MINUTE, "start_at": T0, "end_at": T0 - MINUTE}, "end_at .* is before start_at"),
        ({"interval": MINUTE, "start_at": "tomorrow"}, "start_at must be a datetime"),
        ({"interval": MINUTE, "orchestration_instance_id": "@x@y"}, "must not start with '@'"),
        ({"interval": MINUTE, "orchestration_instance_id": "a" * 257}, "at most 256"),
        ({"interval": MINUTE, "start_immediately_if_late": "yes"}, "must be a bool"),
    ],
)
def test_invalid_creation_options_raise_naming_the_problem(kwargs: dict, problem: str) -> None:
    with pytest.raises(ScheduleClientValidationError, match=problem) as info:
        ScheduleCreationOptions("s1", "orch", **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ScheduleError)
    assert info.value.schedule_id == "s1"


@pytest.mark.parametrize(
    ("schedule_id", "problem"),
    [("", "cannot be empty"), ("a@b", "must not contain '@'"), ("x" * 201, "at most 200"),
     ("tab\there", "control characters"), (7, "must be a string")],
)
def test_invalid_schedule_ids(schedule_id: object, problem: str) -> None:
    with pytest.raises(ScheduleClientValidationError, match=problem):
        ScheduleCreationOptions(schedule_id, "orch", MINUTE)  # type: ignore[arg-type]


def test_empty_orchestration_name_is_rejected() -> None:
    with pytest.raises(ScheduleClientValidationError, match="orchestration_name cannot be empty"):
        ScheduleCreationOptions("s1", "", MINUTE)


def test_naive_times_are_taken_as_utc() -> None:
    options = ScheduleCreationOptions("s1", "orch", MINUTE, start_at=datetime(2024, 5, 1, 12, 0))
    assert options.start_at == T0 and options.start_at.tzinfo == timezone.utc


def test_creation_options_json_round_trip_uses_the_official_keys() -> None:
    options = ScheduleCreationOptions("s1", "orch", timedelta(seconds=90), {"n": [1, 2]}, None, T0, None, True)
    data = options.to_json()
    assert data == {
        "schedule_id": "s1", "orchestration_name": "orch", "interval_seconds": 90.0,
        "orchestration_input": {"n": [1, 2]}, "orchestration_instance_id": None,
        "start_at": "2024-05-01T12:00:00+00:00", "end_at": None, "start_immediately_if_late": True,
    }
    assert ScheduleCreationOptions.from_json(json.loads(json.dumps(data))) == options
    cron = ScheduleCreationOptions("s2", "orch", cron="*/5 * * * *")
    assert cron.to_json()["cron"] == "*/5 * * * *" and cron.to_json()["interval_seconds"] is None
    assert ScheduleCreationOptions.from_json(cron.to_json()) == cron


def test_creation_options_travel_through_the_data_converter() -> None:
    converter = JsonDataConverter()
    options = ScheduleCreationOptions("s1", "orch", MINUTE, orchestration_input={"k": "v"}, end_at=T0)
    assert converter.deserialize(converter.serialize(options), ScheduleCreationOptions) == options


def test_from_json_validates_what_it_reads() -> None:
    with pytest.raises(ScheduleClientValidationError, match="interval must be positive"):
        ScheduleCreationOptions.from_json({"schedule_id": "s", "orchestration_name": "o", "interval_seconds": 0})
    with pytest.raises(ScheduleClientValidationError, match="expected schedule options as an object"):
        ScheduleCreationOptions.from_json([])  # type: ignore[arg-type]


# --- update options ----------------------------------------------------------------------------


def test_update_options_default_to_changing_nothing() -> None:
    options = ScheduleUpdateOptions()
    assert all(value is None for value in vars(options).values())
    assert ScheduleUpdateOptions.from_json(options.to_json()) == options
    assert ScheduleUpdateOptions(orchestration_name="").orchestration_name is None


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"interval": timedelta(0)}, "interval must be positive"),
        ({"interval": MINUTE, "cron": "* * * * *"}, "not both"),
        ({"cron": "* 99 * * *"}, "in the hour field"),
        ({"start_at": T0, "end_at": T0 - MINUTE}, "is before start_at"),
    ],
)
def test_invalid_update_options(kwargs: dict, problem: str) -> None:
    with pytest.raises(ScheduleClientValidationError, match=problem):
        ScheduleUpdateOptions(**kwargs)


def test_update_options_round_trip() -> None:
    options = ScheduleUpdateOptions(orchestration_input=[1], interval=timedelta(seconds=5), end_at=T0)
    assert ScheduleUpdateOptions.from_json(json.loads(json.dumps(options.to_json()))) == options


# --- query, description, status, transitions ---------------------------------------------------


def test_query_validation() -> None:
    assert ScheduleQuery(status="Paused").status is ScheduleStatus.PAUSED  # type: ignore[arg-type]
    assert ScheduleQuery(created_from=datetime(2024, 1, 1)).created_from == datetime(2024, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ScheduleClientValidationError, match="page_size must be a positive integer"):
        ScheduleQuery(page_size=0)
    with pytest.raises(ScheduleClientValidationError, match="status must be a ScheduleStatus"):
        ScheduleQuery(status="Running")  # type: ignore[arg-type]
    assert ScheduleQuery.DEFAULT_PAGE_SIZE == 100


def test_description_fields_keep_the_official_order() -> None:
    names = list(ScheduleDescription.__dataclass_fields__)
    assert names[:12] == [
        "schedule_id", "orchestration_name", "orchestration_input", "orchestration_instance_id", "start_at",
        "end_at", "interval", "start_immediately_if_late", "status", "execution_token", "last_run_at",
        "next_run_at",
    ]


def test_status_ordinals_and_reading_stored_values() -> None:
    assert [s.to_dotnet_ordinal() for s in ScheduleStatus] == [0, 1, 2]
    assert ScheduleStatus.from_dotnet(1) is ScheduleStatus.ACTIVE
    assert ScheduleStatus.from_dotnet("2") is ScheduleStatus.PAUSED
    assert ScheduleStatus.from_dotnet("paused") is ScheduleStatus.PAUSED
    for junk in (None, True, 9, "Running", 1.5):
        assert ScheduleStatus.from_dotnet(junk) is ScheduleStatus.UNINITIALIZED  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("operation", "source", "target", "allowed"),
    [
        (transitions.CREATE_SCHEDULE, ScheduleStatus.UNINITIALIZED, ScheduleStatus.ACTIVE, True),
        (transitions.CREATE_SCHEDULE, ScheduleStatus.PAUSED, ScheduleStatus.ACTIVE, True),
        (transitions.CREATE_SCHEDULE, ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED, False),
        (transitions.UPDATE_SCHEDULE, ScheduleStatus.ACTIVE, ScheduleStatus.ACTIVE, True),
        (transitions.UPDATE_SCHEDULE, ScheduleStatus.PAUSED, ScheduleStatus.PAUSED, True),
        (transitions.UPDATE_SCHEDULE, ScheduleStatus.UNINITIALIZED, ScheduleStatus.UNINITIALIZED, False),
        (transitions.PAUSE_SCHEDULE, ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED, True),
        (transitions.PAUSE_SCHEDULE, ScheduleStatus.PAUSED, ScheduleStatus.PAUSED, False),
        (transitions.RESUME_SCHEDULE, ScheduleStatus.PAUSED, ScheduleStatus.ACTIVE, True),
        (transitions.RESUME_SCHEDULE, ScheduleStatus.ACTIVE, ScheduleStatus.ACTIVE, False),
        ("explode", ScheduleStatus.ACTIVE, ScheduleStatus.ACTIVE, False),
    ],
)
def test_transition_table(operation: str, source: ScheduleStatus, target: ScheduleStatus, allowed: bool) -> None:
    assert transitions.is_valid_transition(operation, source, target) is allowed


def test_error_types_are_also_the_builtin_errors_the_official_sdk_raises() -> None:
    not_found = ScheduleNotFoundError("s1")
    assert isinstance(not_found, RuntimeError) and not_found.schedule_id == "s1" and "'s1'" in str(not_found)
    invalid = ScheduleInvalidTransitionError("s1", ScheduleStatus.PAUSED, ScheduleStatus.PAUSED, "pause_schedule")
    assert isinstance(invalid, RuntimeError) and invalid.operation_name == "pause_schedule"
    assert "from 'Paused' to 'Paused'" in str(invalid)
    assert isinstance(ScheduleClientValidationError("s1", "bad"), ValueError)


# --- stored state ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "text"),
    [(timedelta(seconds=1), "00:00:01"), (timedelta(hours=25, minutes=3, seconds=4), "1.01:03:04"),
     (timedelta(seconds=1, microseconds=500), "00:00:01.0005000"), (timedelta(seconds=-90), "-00:01:30"),
     (timedelta(days=400), "400.00:00:00")],
)
def test_timespan_text(span: timedelta, text: str) -> None:
    assert codec.format_timespan(span) == text
    assert codec.parse_timespan(text) == span


def test_timespan_parse_rejects_junk() -> None:
    with pytest.raises(ValueError, match="is not a TimeSpan"):
        codec.parse_timespan("five minutes")
    assert codec.parse_timespan(2.5) == timedelta(seconds=2.5)
    assert codec.parse_timespan(None) is None


def _state() -> ScheduleState:
    state = ScheduleState()
    state.status = ScheduleStatus.ACTIVE
    state.last_run_at = T0
    state.next_run_at = T0 + MINUTE
    state.schedule_created_at = T0 - MINUTE
    state.schedule_last_modified_at = T0 - MINUTE
    state.schedule_configuration = ScheduleConfiguration.from_create_options(
        ScheduleCreationOptions("s1", "orch", timedelta(minutes=1), {"a": 1}, start_at=T0 - MINUTE)
    )
    return state


def test_state_is_stored_in_the_dotnet_shape() -> None:
    data = _state().to_json()
    assert data["Status"] == 1 and data["LastRunAt"] == "2024-05-01T12:00:00+00:00"
    config = data["ScheduleConfiguration"]
    assert config["Interval"] == "00:01:00" and config["OrchestrationInput"] == '{"a": 1}'
    assert config["ScheduleId"] == "s1" and "CronExpression" not in config


def test_state_round_trips_through_the_data_converter() -> None:
    converter = JsonDataConverter()
    original = _state()
    copy = converter.deserialize(converter.serialize(original), ScheduleState)
    assert copy.to_json() == original.to_json()
    assert copy.to_description() == original.to_description()
    assert copy.to_description().orchestration_input == {"a": 1}


def test_cron_state_round_trip() -> None:
    state = ScheduleState()
    state.schedule_configuration = ScheduleConfiguration.from_create_options(
        ScheduleCreationOptions("c1", "orch", cron="0 * * * *")
    )
    data = state.to_json()
    assert data["ScheduleConfiguration"]["Interval"] is None
    assert data["ScheduleConfiguration"]["CronExpression"] == "0 * * * *"
    assert ScheduleState.from_json(data).to_description().cron == "0 * * * *"


def test_state_without_a_token_gets_a_fresh_one_and_z_times_parse() -> None:
    state = ScheduleState.from_json({"Status": "Active", "NextRunAt": "2024-05-01T12:00:00Z"})
    assert state.execution_token and state.next_run_at == T0 and state.status is ScheduleStatus.ACTIVE


def test_tokens_change_on_refresh() -> None:
    state = ScheduleState()
    before = state.execution_token
    state.refresh_execution_token()
    assert state.execution_token != before


# --- configuration updates ---------------------------------------------------------------------


def _config() -> ScheduleConfiguration:
    return ScheduleConfiguration.from_create_options(
        ScheduleCreationOptions("s1", "orch", MINUTE, {"v": 1}, start_at=T0, end_at=T0 + 10 * MINUTE)
    )


def test_update_reports_only_what_changed() -> None:
    config = _config()
    assert config.update(ScheduleUpdateOptions(orchestration_input={"v": 1}, interval=MINUTE)) == set()
    assert config.update(ScheduleUpdateOptions(orchestration_input={"v": 2})) == {"orchestration_input"}
    assert config.orchestration_input == {"v": 2}


def test_update_switches_between_interval_and_cron() -> None:
    config = _config()
    assert config.update(ScheduleUpdateOptions(cron="*/5 * * * *")) == {"cron", "interval"}
    assert config.cron == "*/5 * * * *" and config.interval is None
    assert config.update(ScheduleUpdateOptions(interval=timedelta(seconds=30))) == {"cron", "interval"}
    assert config.cron is None and config.interval == timedelta(seconds=30)


def test_update_that_would_end_before_the_start_changes_nothing() -> None:
    config = _config()
    with pytest.raises(ScheduleClientValidationError, match="is before start_at"):
        config.update(ScheduleUpdateOptions(orchestration_input={"v": 9}, end_at=T0 - MINUTE))
    assert config.end_at == T0 + 10 * MINUTE and config.orchestration_input == {"v": 1}
