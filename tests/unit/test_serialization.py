"""Tests for durabletask.serialization (JSON encoding and type-directed decoding)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Annotated, Any, Literal, NamedTuple, NewType, Optional, TypedDict, Union

import pytest

from durabletask.serialization import (
    DEFAULT_DATA_CONVERTER,
    DataConversionError,
    DataConverter,
    JsonDataConverter,
    default_converter,
    input_type_of,
    return_type_of,
)

conv = JsonDataConverter()


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Point(NamedTuple):
    x: int
    y: int
    label: str = "p"


class Stamp(NamedTuple):
    when: dt.datetime
    color: Color


@dataclass
class Line:
    points: list[Point]
    color: Color
    created: dt.datetime


@dataclass
class Drawing:
    title: str
    lines: list[Line]
    stamps: list[Stamp] = field(default_factory=list)
    owner: Optional[str] = None
    tags: dict[str, Color] = field(default_factory=dict)
    cover: Line | None = None


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)
    parent_name: Optional[str] = None


@dataclass
class Money:
    amount: decimal.Decimal
    currency: str = "EUR"


class Temperature:
    """Custom type with to_json/from_json hooks."""

    def __init__(self, celsius: float) -> None:
        self.celsius = celsius

    def to_json(self) -> dict[str, float]:
        return {"c": self.celsius}

    @classmethod
    def from_json(cls, value: dict[str, float]) -> Temperature:
        return cls(value["c"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Temperature) and other.celsius == self.celsius


@dataclass
class Reading:
    where: str
    temperature: Temperature


class Box:
    """from_json that takes the converter to rebuild nested values."""

    def __init__(self, items: list[Point]) -> None:
        self.items = items

    def to_json(self) -> list[Point]:
        return self.items

    @classmethod
    def from_json(cls, value: list[Any], converter: DataConverter) -> Box:
        return cls(converter.coerce(value, list[Point]))


class Movie(TypedDict):
    title: str
    year: int


@dataclass
class Computed:
    a: int
    b: int = field(init=False)

    def __post_init__(self) -> None:
        self.b = self.a * 2


UserId = NewType("UserId", int)
PointId = NewType("PointId", Point)


def roundtrip(value: Any, target: Any) -> Any:
    return conv.deserialize(conv.serialize(value), target)


# --- basics -----------------------------------------------------------------


def test_none_and_empty() -> None:
    assert conv.serialize(None) is None
    assert conv.deserialize(None) is None
    assert conv.deserialize("") is None
    assert conv.deserialize(None, Drawing) is None
    assert conv.deserialize("null", Drawing) is None


@pytest.mark.parametrize("value", [1, 1.5, "text", True, False, [1, "a", None], {"a": {"b": [1, 2]}}])
def test_plain_json_roundtrip(value: Any) -> None:
    text = conv.serialize(value)
    assert text == json.dumps(value)
    assert conv.deserialize(text) == value


def test_default_converter_is_json() -> None:
    assert isinstance(default_converter(), JsonDataConverter)
    assert default_converter() is DEFAULT_DATA_CONVERTER


def test_without_target_type_returns_plain_json() -> None:
    drawing = Drawing("d", [Line([Point(1, 2)], Color.RED, dt.datetime(2024, 1, 2, 3, 4, 5))])
    value = conv.deserialize(conv.serialize(drawing))
    assert value == {
        "title": "d",
        "lines": [{"points": [[1, 2, "p"]], "color": "red", "created": "2024-01-02T03:04:05"}],
        "stamps": [],
        "owner": None,
        "tags": {},
        "cover": None,
    }


# --- encoding ---------------------------------------------------------------


def test_encoding_of_special_values() -> None:
    value = {
        "enum": Color.GREEN,
        "int_enum": Level.HIGH,
        "dt": dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone.utc),
        "date": dt.date(2024, 5, 6),
        "time": dt.time(7, 8),
        "delta": dt.timedelta(minutes=1, milliseconds=500),
        "uuid": uuid.UUID(int=1),
        "dec": decimal.Decimal("1.10"),
        "bytes": b"\x00\xff",
        "ns": SimpleNamespace(a=1, b=[Color.RED]),
        "set": {3, 1, 2},
        "tuple": (1, 2),
        "nt": Point(1, 2),
    }
    assert json.loads(conv.serialize(value) or "") == {
        "enum": "green",
        "int_enum": 2,
        "dt": "2024-05-06T07:08:09.123000+00:00",
        "date": "2024-05-06",
        "time": "07:08:00",
        "delta": 60.5,
        "uuid": "00000000-0000-0000-0000-000000000001",
        "dec": "1.10",
        "bytes": "AP8=",
        "ns": {"a": 1, "b": ["red"]},
        "set": [1, 2, 3],
        "tuple": [1, 2],
        "nt": [1, 2, "p"],
    }


def test_encoding_is_deterministic_for_sets_of_mixed_items() -> None:
    first = conv.serialize({"s": {"b", 1, "a"}})
    assert first == conv.serialize({"s": {1, "a", "b"}})


def test_mapping_keys_become_strings() -> None:
    text = conv.serialize({Color.RED: 1, 2: "two", True: "t", uuid.UUID(int=0): 0})
    assert json.loads(text or "") == {
        "red": 1, "2": "two", "true": "t", "00000000-0000-0000-0000-000000000000": 0,
    }


def test_to_json_hook_wins_and_nests() -> None:
    reading = Reading("lab", Temperature(21.5))
    assert json.loads(conv.serialize(reading) or "") == {"where": "lab", "temperature": {"c": 21.5}}
    assert json.loads(conv.serialize([Temperature(1)]) or "") == [{"c": 1}]


def test_unserializable_object_names_its_type() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match="Opaque"):
        conv.serialize({"x": Opaque()})


def test_circular_reference_is_a_clear_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="circular"):
        conv.serialize(loop)


# --- type-directed decoding --------------------------------------------------


def test_nested_dataclass_roundtrip() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    drawing = Drawing(
        title="sketch",
        lines=[Line([Point(1, 2), Point(3, 4, "q")], Color.GREEN, when)],
        stamps=[Stamp(when, Color.RED)],
        owner="ann",
        tags={"main": Color.RED},
        cover=Line([], Color.RED, when),
    )
    back = roundtrip(drawing, Drawing)
    assert back == drawing
    assert isinstance(back.lines[0].points[0], Point)
    assert back.lines[0].color is Color.GREEN
    assert back.stamps[0].when == when and back.stamps[0].when.tzinfo is not None
    assert back.tags["main"] is Color.RED


def test_forward_reference_self_referential_dataclass() -> None:
    tree = Node("root", [Node("a", [Node("a1")]), Node("b")], None)
    back = roundtrip(tree, Node)
    assert back == tree
    assert isinstance(back.children[0].children[0], Node)


def test_forward_reference_to_locally_defined_class() -> None:
    @dataclass
    class Local:
        name: str
        nxt: Optional[Local] = None

    back = roundtrip(Local("a", Local("b")), Local)
    assert back == Local("a", Local("b"))
    assert isinstance(back.nxt, Local)


def test_missing_fields_take_defaults() -> None:
    back = conv.deserialize('{"title": "t", "lines": []}', Drawing)
    assert back == Drawing("t", [])
    assert back.stamps == [] and back.owner is None


def test_extra_fields_are_ignored() -> None:
    back = conv.deserialize('{"title": "t", "lines": [], "added_later": 5}', Drawing)
    assert back == Drawing("t", [])


def test_non_init_fields_are_recomputed() -> None:
    assert roundtrip(Computed(4), Computed) == Computed(4)
    assert conv.deserialize('{"a": 4, "b": 999}', Computed).b == 8


def test_namedtuple_from_array_or_object() -> None:
    assert conv.deserialize("[1, 2]", Point) == Point(1, 2, "p")
    assert conv.deserialize('{"x": 1, "y": 2, "label": "z"}', Point) == Point(1, 2, "z")
    with pytest.raises(DataConversionError, match="missing required field 'y'"):
        conv.deserialize("[1]", Point)
    with pytest.raises(DataConversionError, match="at most 3"):
        conv.deserialize("[1, 2, 3, 4]", Point)


def test_enums_by_value_then_name() -> None:
    assert conv.deserialize('"red"', Color) is Color.RED
    assert conv.deserialize('"GREEN"', Color) is Color.GREEN
    assert conv.deserialize("2", Level) is Level.HIGH
    with pytest.raises(DataConversionError, match="not a value of Color"):
        conv.deserialize('"blue"', Color)


def test_datetimes() -> None:
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert roundtrip(aware, dt.datetime) == aware
    assert conv.deserialize('"2024-01-01T12:00:00Z"', dt.datetime) == aware
    naive = dt.datetime(2024, 1, 1, 12, 30)
    assert roundtrip(naive, dt.datetime) == naive
    assert roundtrip(dt.date(2020, 2, 29), dt.date) == dt.date(2020, 2, 29)
    assert roundtrip(dt.time(1, 2, 3), dt.time) == dt.time(1, 2, 3)
    assert roundtrip(dt.timedelta(hours=2, microseconds=5), dt.timedelta) == dt.timedelta(hours=2, microseconds=5)
    with pytest.raises(DataConversionError, match="ISO 8601"):
        conv.deserialize('"yesterday"', dt.datetime)


def test_other_leaf_types() -> None:
    assert roundtrip(uuid.UUID(int=7), uuid.UUID) == uuid.UUID(int=7)
    assert roundtrip(Money(decimal.Decimal("0.10")), Money) == Money(decimal.Decimal("0.10"))
    assert roundtrip(b"\x01\x02", bytes) == b"\x01\x02"
    assert roundtrip(SimpleNamespace(a=1), SimpleNamespace) == SimpleNamespace(a=1)
    assert conv.deserialize("5", UserId) == 5


def test_generic_containers() -> None:
    assert roundtrip([Point(1, 2)], list[Point]) == [Point(1, 2)]
    assert roundtrip([Point(1, 2)], Sequence[Point]) == [Point(1, 2)]
    assert roundtrip({Color.RED}, set[Color]) == {Color.RED}
    assert roundtrip((1, "a", Color.RED), tuple[int, str, Color]) == (1, "a", Color.RED)
    assert roundtrip((Point(1, 2), Point(3, 4)), tuple[Point, ...]) == (Point(1, 2), Point(3, 4))
    assert roundtrip({"k": [Point(0, 0)]}, dict[str, list[Point]]) == {"k": [Point(0, 0)]}
    assert roundtrip({1: "a", 2: "b"}, dict[int, str]) == {1: "a", 2: "b"}
    assert roundtrip({Level.LOW: 1}, dict[Level, int]) == {Level.LOW: 1}
    assert roundtrip({Color.RED: 1}, dict[Color, int]) == {Color.RED: 1}
    assert roundtrip(None, Optional[Point]) is None
    assert roundtrip(Point(1, 2), Optional[Point]) == Point(1, 2)
    assert roundtrip(Point(1, 2), Point | None) == Point(1, 2)
    assert roundtrip(Point(1, 2), Annotated[Point, "meta"]) == Point(1, 2)
    assert conv.deserialize('"b"', Literal["a", "b"]) == "b"
    with pytest.raises(DataConversionError, match="one of"):
        conv.deserialize('"c"', Literal["a", "b"])


def test_union_prefers_exact_json_match_then_first_fit() -> None:
    assert conv.deserialize('"5"', Union[int, str]) == "5"
    assert conv.deserialize("1.0", Union[int, float]) == 1.0
    assert isinstance(conv.deserialize("1.0", Union[int, float]), float)
    assert conv.deserialize('{"x": 1, "y": 2}', Union[Movie, Point]) == Point(1, 2)
    with pytest.raises(DataConversionError, match="fits none of"):
        conv.deserialize("[1]", Union[int, str])


def test_typeddict() -> None:
    assert conv.deserialize('{"title": "Up", "year": 2009}', Movie) == {"title": "Up", "year": 2009}
    with pytest.raises(DataConversionError, match="missing required key 'year'"):
        conv.deserialize('{"title": "Up"}', Movie)


def test_from_json_hooks() -> None:
    assert roundtrip(Reading("lab", Temperature(3.0)), Reading) == Reading("lab", Temperature(3.0))
    box = roundtrip(Box([Point(1, 2)]), Box)
    assert isinstance(box, Box) and box.items == [Point(1, 2)]


def test_from_json_staticmethod() -> None:
    class Code:
        def __init__(self, text: str) -> None:
            self.text = text

        def to_json(self) -> str:
            return self.text

        @staticmethod
        def from_json(value: str) -> Code:
            return Code(value.upper())

    assert roundtrip(Code("ab"), Code).text == "AB"


def test_coerce_shapes_decoded_values_and_keeps_live_ones() -> None:
    assert conv.coerce({"x": 1, "y": 2}, Point) == Point(1, 2)
    live = Point(5, 6)
    assert conv.coerce(live, Point) is live
    assert conv.coerce([1, 2], None) == [1, 2]
    assert conv.coerce(None, Point) is None


# --- errors -------------------------------------------------------------------


def test_error_names_type_and_field_path() -> None:
    payload = json.dumps({
        "title": "t",
        "lines": [
            {"points": [[1, 2]], "color": "red", "created": "2024-01-01T00:00:00"},
            {"points": [[1, 2], [3, "four"]], "color": "red", "created": "2024-01-01T00:00:00"},
        ],
    })
    with pytest.raises(DataConversionError) as info:
        conv.deserialize(payload, Drawing)
    message = str(info.value)
    assert "Drawing" in message
    assert "lines[1].points[1].y" in message
    assert "expected int" in message
    assert info.value.path == "lines[1].points[1].y"
    assert info.value.target_type is Drawing
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_missing_required_field_is_named() -> None:
    with pytest.raises(DataConversionError, match="missing required field 'lines' of Drawing"):
        conv.deserialize('{"title": "t"}', Drawing)


def test_wrong_shape_for_dataclass() -> None:
    with pytest.raises(DataConversionError, match="expected Drawing, got array"):
        conv.deserialize("[1, 2]", Drawing)


@pytest.mark.parametrize(
    ("payload", "target"),
    [('"1"', int), ("true", int), ("1.5", int), ("1", str), ("1", bool), ('"x"', float), ("{}", list[int])],
)
def test_strict_scalars(payload: str, target: Any) -> None:
    with pytest.raises(DataConversionError):
        conv.deserialize(payload, target)


def test_accepted_numeric_widening() -> None:
    assert conv.deserialize("3", float) == 3.0
    assert isinstance(conv.deserialize("3", float), float)
    assert conv.deserialize("3.0", int) == 3


def test_errors_from_hooks_and_constructors_are_wrapped() -> None:
    class Bad:
        @classmethod
        def from_json(cls, value: Any) -> Bad:
            raise KeyError("boom")

    with pytest.raises(DataConversionError, match=r"Bad.from_json\(\) raised KeyError") as info:
        conv.deserialize('{"a": 1}', Bad)
    assert isinstance(info.value.__cause__, KeyError)


def test_lenient_mode_returns_raw_value(caplog: pytest.LogCaptureFixture) -> None:
    lenient = JsonDataConverter(strict=False)
    with caplog.at_level(logging.DEBUG, logger="durabletask"):
        assert lenient.deserialize('{"title": "t"}', Drawing) == {"title": "t"}
    assert "missing required field 'lines'" in caplog.text


def test_invalid_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        conv.deserialize("{not json", Drawing)


# --- no type names from payloads ------------------------------------------------


class Dangerous:
    """Records any instantiation: nothing in a payload may create one."""

    created = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Dangerous.created += 1


def test_type_names_in_payload_are_never_instantiated() -> None:
    payload = json.dumps({
        "__class__": f"{__name__}.Dangerous",
        "py/object": f"{__name__}.Dangerous",
        "__type__": "Dangerous",
        "$type": f"{__name__}.Dangerous, tests",
        "__durabletask_autoobject__": True,
        "title": "t",
        "lines": [],
    })
    Dangerous.created = 0
    plain = conv.deserialize(payload)
    assert type(plain) is dict
    assert plain["py/object"] == f"{__name__}.Dangerous"
    typed = conv.deserialize(payload, Drawing)
    assert type(typed) is Drawing and typed == Drawing("t", [])
    as_any = conv.deserialize(payload, dict[str, Any])
    assert type(as_any) is dict
    assert Dangerous.created == 0


# --- can_reconstruct ---------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [Drawing, Point, Color, Level, Temperature, Movie, dt.datetime, uuid.UUID, Optional[Point],
     list[Drawing], dict[str, Point], tuple[int, Point], Sequence[Line], Point | None, PointId],
)
def test_can_reconstruct_true(target: Any) -> None:
    assert conv.can_reconstruct(target)


@pytest.mark.parametrize(
    "target",
    [None, Any, int, str, float, dict, list, list[int], dict[str, int], Optional[str], Literal["a"], UserId],
)
def test_can_reconstruct_false(target: Any) -> None:
    assert not conv.can_reconstruct(target)


def test_base_converter_defaults() -> None:
    class Custom(DataConverter):
        def serialize(self, value: Any) -> str | None:
            return None if value is None else repr(value)

        def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
            return data

    custom = Custom()
    assert custom.coerce(5, int) == 5
    assert custom.can_reconstruct(Drawing) is False


# --- annotations ---------------------------------------------------------------


def typed_activity(ctx: Any, order: Drawing) -> Point:
    return Point(0, 0)


def optional_activity(ctx: Any, items: Optional[list[Point]] = None) -> None:
    return None


def any_activity(ctx: Any, value: Any) -> Any:
    return value


def untyped_activity(ctx, value):  # type: ignore[no-untyped-def]
    return value


def no_input(ctx: Any) -> int:
    return 1


def generator_orchestrator(ctx: Any, _: int) -> Generator[Any, Any, Drawing]:
    yield None
    return Drawing("t", [])


class CallableActivity:
    def __call__(self, ctx: Any, value: Movie) -> int:
        return 1


def test_input_type_of() -> None:
    assert input_type_of(typed_activity) is Drawing
    assert input_type_of(optional_activity) == Optional[list[Point]]
    assert input_type_of(any_activity) is None
    assert input_type_of(untyped_activity) is None
    assert input_type_of(no_input) is None
    assert input_type_of(CallableActivity()) is Movie
    assert input_type_of(lambda ctx, x: x) is None


def test_input_type_of_unresolvable_annotation() -> None:
    def fn(ctx: Any, value: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    assert input_type_of(fn) is None


def test_input_type_of_position() -> None:
    class Entity:
        def add(self, amount: Point) -> None:
            return None

    assert input_type_of(Entity().add, position=0) is Point


def test_return_type_of() -> None:
    assert return_type_of(typed_activity) is Point
    assert return_type_of(optional_activity) is None
    assert return_type_of(any_activity) is None
    assert return_type_of(untyped_activity) is None
    assert return_type_of(generator_orchestrator) is Drawing


def test_dataclass_fields_helper_is_not_confused_by_slots() -> None:
    @dataclass(frozen=True, slots=True)
    class Frozen:
        a: int
        b: list[Point] = dataclasses.field(default_factory=list)

    assert roundtrip(Frozen(1, [Point(1, 1)]), Frozen) == Frozen(1, [Point(1, 1)])


def test_annotation_lookups_are_remembered_and_accept_any_callable_or_name() -> None:
    import functools

    from durabletask import serialization

    def annotated(ctx: Any, value: int) -> str:
        return str(value)

    class CallableObject:
        def __call__(self, ctx: Any, value: float) -> bytes:
            return b""

    assert return_type_of(annotated) is str and input_type_of(annotated) is int
    assert serialization._REMEMBERED[annotated] == {"return": str, 1: int}
    assert return_type_of(annotated) is str and input_type_of(annotated) is int  # from memory
    for unremembered in ("an_activity_name", len):  # not weakly referenceable: worked out each time
        assert return_type_of(unremembered) is None and input_type_of(unremembered) is None
    assert return_type_of(functools.partial(annotated)) is str
    assert return_type_of(CallableObject()) is bytes and input_type_of(CallableObject()) is float
