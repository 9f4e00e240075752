"""Fuzz (a): every RPC of TaskHubSidecarService called with random bytes as its request.

Properties (see tests/fuzz/conftest.py): no INTERNAL or UNKNOWN from the handlers (INTERNAL
"Exception deserializing request!" for bytes that do not parse is the documented exception),
RESOURCE_EXHAUSTED only for requests over the message limit, the sidecar keeps serving, and
the witnesses are unchanged.
"""

from __future__ import annotations

from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import MESSAGE_LIMIT, METHODS, RPCS, FuzzSidecar
from tests.fuzz.hostile import messages

SETTINGS = settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _nested(levels: int, field: int) -> bytes:
    """``levels`` length-delimited fields numbered ``field``, each inside the previous one."""
    inner = b""
    for _ in range(levels):
        inner = _varint(field << 3 | 2) + _varint(len(inner)) + inner
    return inner


FIXED = [
    b"",
    b"\x00",
    b"\xff" * 16,
    b"\x08",  # a varint field cut short
    b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
    b"\x0a\x02\xc3\x28",  # a string that is not UTF-8
    b"\x0b\x0c",  # an empty group
    *(_nested(200, field) for field in (1, 2, 3, 4, 5)),  # deeper than the parser allows
    b"\x00" * (MESSAGE_LIMIT + 1),  # over the limit
]


def test_every_rpc_with_fixed_bad_bytes(fuzz: FuzzSidecar) -> None:
    for rpc in RPCS:
        for data in FIXED:
            fuzz.check_outcome(rpc, len(data), fuzz.call(rpc, data))
    fuzz.check()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid request of some RPC with a slice of its bytes replaced by random ones."""
    rpc = draw(st.sampled_from(RPCS))
    message = draw(messages(METHODS[rpc].input_type, small=True))
    data = message.SerializeToString()
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 8)))
    return rpc, data[:start] + draw(st.binary(max_size=8)) + data[end:]


def test_every_rpc_with_random_bytes(fuzz: FuzzSidecar) -> None:
    @SETTINGS
    @given(request=st.one_of(st.tuples(st.sampled_from(RPCS), st.binary(max_size=256)), mutated()))
    def run(request: tuple[str, bytes]) -> None:
        rpc, data = request
        fuzz.check_outcome(rpc, len(data), fuzz.call(rpc, data))

    run()
    fuzz.check()


def test_the_request_classes_are_known() -> None:
    for rpc in RPCS:
        assert GetMessageClass(METHODS[rpc].input_type) is not None
