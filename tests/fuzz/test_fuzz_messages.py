"""Fuzz (b): every RPC called with structurally valid requests holding hostile values.

Empty and huge strings (up to and just over the message limit), control characters,
entity-like IDs, extreme numbers, unknown enum values, Timestamps out of range, long repeated
fields and nested messages (see tests/fuzz/hostile.py). Same properties as the random bytes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import METHODS, RPCS, FuzzSidecar
from tests.fuzz.hostile import messages

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def test_every_rpc_with_hostile_values(fuzz: FuzzSidecar) -> None:
    @SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        rpc = data.draw(st.sampled_from(RPCS), label="rpc")
        request = data.draw(messages(METHODS[rpc].input_type), label="request")
        payload = request.SerializeToString()
        fuzz.check_outcome(rpc, len(payload), fuzz.call(rpc, payload))

    run()
    fuzz.check()
