"""Hypothesis strategies for structurally valid protobuf messages holding hostile values.

:func:`messages` builds any message type from its descriptor, so that new RPCs and new fields
are fuzzed without changes here: each field it sets gets an edge value of its type (empty and
huge strings, control characters, entity-like IDs, extreme and negative numbers, unknown enum
values, Timestamps out of range), repeated fields get a few elements or a long run of one
(history lists of hundreds of events), nested messages are filled to a bounded depth.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from tests.fuzz.conftest import MESSAGE_LIMIT

MAX_DEPTH = 5
LONG_RUN = 400  # elements of a long repeated field

_TEXT = [
    "", " ", "\x00", "a\x00b", "\x00" * 300, "\x7f", "\n", "tab\t", "@", "@@", "@a@b", "@A@b", "@a@b@c", "a@b",
    "é", "\u202e", "\U0001f600", "x" * 256, "x" * 257, "null", "{", '"', "'", "%s%n", "../../etc",
]
_HUGE = [10_000, MESSAGE_LIMIT // 2, MESSAGE_LIMIT - 4096, MESSAGE_LIMIT + 1]
_INT32 = [0, 1, -1, 7, 2**31 - 1, -(2**31)]
_INT64 = [*_INT32, 2**63 - 1, -(2**63)]
_UINT32 = [0, 1, 2**32 - 1]
_UINT64 = [0, 1, 2**64 - 1]
_FLOATS = [0.0, -1.0, 1e308, float("inf"), float("-inf"), float("nan")]
_SECONDS = [0, 1, -1, 1_700_000_000, 253402300799, 253402300800, -62135596800, -62135596801, 2**63 - 1, -(2**63)]
_NANOS = [0, 1, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)]

_INTS: dict[int, list[int]] = {
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
}

# Values a request would plausibly hold, so that requests also get past the first check.
_PLAUSIBLE = ["fuzz-a", "fuzz-b", "orch", "o", "e", "@counter@a", "@Counter@b", '"x"', "1", "v1", "1.0.0"]
small_texts: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(_PLAUSIBLE), st.sampled_from(_TEXT), st.text(max_size=12)
)
texts: st.SearchStrategy[str] = st.one_of(small_texts, st.sampled_from(_HUGE).map(lambda n: "h" * n))


def scalars(field: FieldDescriptor, small: bool = False) -> st.SearchStrategy[Any]:
    """Edge values for a scalar field of ``field``'s type (``small``: no huge strings)."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return small_texts if small else texts
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.sampled_from([*known, -1, 99, 2**31 - 1])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from(_FLOATS)
    return st.sampled_from(_INTS[kind])


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0, small: bool = False) -> Message:
    """A message of type ``descriptor`` with some of its fields set to hostile values (see the module docstring).

    ``small``: no huge strings (for the elements of long repeated fields).
    """
    message = GetMessageClass(descriptor)()
    if descriptor.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        message.seconds = draw(st.sampled_from(_SECONDS))  # type: ignore[attr-defined]
        message.nanos = draw(st.sampled_from(_NANOS))  # type: ignore[attr-defined]
        return message
    fields = list(descriptor.fields)
    if not fields or depth >= MAX_DEPTH:
        return message
    chosen = draw(st.lists(st.sampled_from(fields), max_size=min(len(fields), 6), unique_by=lambda f: f.number))
    for field in chosen:
        _fill(draw, message, field, depth, small)
    return message


def _fill(draw: st.DrawFn, message: Message, field: FieldDescriptor, depth: int, small: bool) -> None:
    target: Any = getattr(message, field.name)

    def value(of: FieldDescriptor, small: bool = small) -> Any:
        if of.message_type is not None:
            return draw(messages(of.message_type, depth + 1, small))
        return draw(scalars(of, small))

    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        for key in draw(st.lists(small_texts if small else texts, max_size=3)):
            if value_field.message_type is None:
                target[key] = value(value_field)
            else:
                target[key].CopyFrom(value(value_field))
        return
    if field.is_repeated:
        count = draw(st.sampled_from([0, 1, 2, 3] + ([LONG_RUN] if depth <= 1 and not small else [])))
        if count == LONG_RUN:
            target.extend([value(field, small=True)] * count)
        else:
            target.extend([value(field) for _ in range(count)])
        return
    if field.message_type is not None:
        target.CopyFrom(value(field))
    else:
        setattr(message, field.name, value(field))
