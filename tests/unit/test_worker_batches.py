"""The worker's ResultBatcher: results ready together go out in one call; each outcome is acted on alone."""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal.worker_batches import ACTIVITIES, TURNS, PendingResult, ResultBatcher
from durabletask.internal.worker_completions import Outcome

LOG = logging.getLogger("test-worker-batches")


class FakeError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "fake"


class Stub:
    """Answers CompleteActivityTasks/CompleteOrchestratorTasks with the codes given per token."""

    def __init__(self, codes: dict[str, int] | None = None, fail: grpc.StatusCode | None = None) -> None:
        self.codes = codes or {}
        self.fail = fail
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def _answer(self, request: Any, timeout: float, metadata: Any) -> batches_pb.CompletionOutcomes:
        self.entered.set()
        self.gate.wait(5)
        self.calls.append([r.completionToken for r in request.results])
        if self.fail is not None:
            raise FakeError(self.fail)
        return batches_pb.CompletionOutcomes(outcomes=[
            batches_pb.CompletionOutcome(code=self.codes.get(r.completionToken, 0), message=f"m-{r.completionToken}")
            for r in request.results
        ])

    CompleteActivityTasks = _answer
    CompleteOrchestratorTasks = _answer


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, what: str, token: str) -> None:
        with self.lock:
            self.events.append((what, token))

    def of(self, what: str) -> list[str]:
        return [token for kind, token in self.events if kind == what]


def pending(token: str, log: Log, turn: bool = False) -> PendingResult:
    response: Any = pb.OrchestratorResponse(completionToken=token) if turn else pb.ActivityResponse(completionToken=token)
    return PendingResult(
        response=response,
        subject=f"result {token}",
        replacement=lambda refusal: refusal,
        abandon=lambda: log.add("abandon", token),
        send_alone=lambda: log.add("alone", token),
        done=lambda: log.add("done", token),
    )


def batcher(stub: Any, log: Log, kind: tuple[str, Any] = ACTIVITIES) -> ResultBatcher:
    def settle(outcome: Outcome, result: PendingResult) -> None:
        assert outcome.code is not None
        log.add(f"settle:{outcome.code.name}:{outcome.details}", result.response.completionToken)

    return ResultBatcher(kind, lambda: stub, settle, LOG, metadata=None, call_timeout=5)


@pytest.mark.parametrize("kind", [ACTIVITIES, TURNS])
def test_a_lone_result_is_sent_at_once_and_done_runs(kind: tuple[str, Any]) -> None:
    stub, log = Stub(), Log()
    batcher(stub, log, kind).submit(pending("a", log, turn=kind is TURNS))
    assert stub.calls == [["a"]]
    assert log.events == [("done", "a")]


def test_results_ready_while_a_call_is_in_flight_share_the_next_call() -> None:
    stub, log = Stub(), Log()
    results = batcher(stub, log)
    stub.gate.clear()
    first = threading.Thread(target=results.submit, args=(pending("a", log),))
    first.start()
    assert stub.entered.wait(5)
    for token in "bcd":
        results.submit(pending(token, log))  # queued: returns at once, nothing done yet
    assert log.of("done") == []
    stub.gate.set()
    first.join(10)
    assert stub.calls == [["a"], ["b", "c", "d"]]
    assert sorted(log.of("done")) == ["a", "b", "c", "d"]
    assert results.calls == 2


def test_each_outcome_is_acted_on_alone() -> None:
    codes = {
        "stale": grpc.StatusCode.NOT_FOUND.value[0],
        "refused": grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "down": grpc.StatusCode.UNAVAILABLE.value[0],
    }
    stub, log = Stub(codes), Log()
    results = batcher(stub, log)
    stub.gate.clear()
    first = threading.Thread(target=results.submit, args=(pending("ok", log),))
    first.start()
    assert stub.entered.wait(5)
    for token in ("stale", "refused", "down", "fine"):
        results.submit(pending(token, log))
    stub.gate.set()
    first.join(10)
    assert log.of("settle:NOT_FOUND:m-stale") == ["stale"]
    assert log.of("settle:INVALID_ARGUMENT:m-refused") == ["refused"]
    assert log.of("alone") == ["down"], "a transient outcome is sent again on its own, with its retries"
    assert sorted(log.of("done")) == ["down", "fine", "ok", "refused", "stale"]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED])
def test_a_failed_call_sends_every_result_on_its_own(code: grpc.StatusCode) -> None:
    stub, log = Stub(fail=code), Log()
    batcher(stub, log).submit(pending("a", log))
    assert log.of("alone") == ["a"] and log.of("done") == ["a"]


def test_without_a_batched_stream_results_go_one_by_one() -> None:
    log = Log()
    results = ResultBatcher(ACTIVITIES, lambda: None, lambda o, r: None, LOG, metadata=None, call_timeout=5)
    results.submit(pending("a", log))
    assert log.events == [("alone", "a"), ("done", "a")]


def test_a_reply_with_the_wrong_number_of_outcomes_is_not_trusted() -> None:
    class Short(Stub):
        def _answer(self, request: Any, timeout: float, metadata: Any) -> batches_pb.CompletionOutcomes:
            return batches_pb.CompletionOutcomes()

        CompleteActivityTasks = _answer

    log = Log()
    batcher(Short(), log).submit(pending("a", log))
    assert log.of("alone") == ["a"]



def test_results_share_a_call_only_up_to_4_mib() -> None:
    stub, log = Stub(), Log()
    results = batcher(stub, log)
    stub.gate.clear()
    first = threading.Thread(target=results.submit, args=(pending("a", log),))
    first.start()
    assert stub.entered.wait(5)
    for token in ("big1", "big2", "small1", "small2", "big3"):
        result = pending(token, log)
        if token.startswith("big"):
            result.response.result.value = "x" * (3 * 1024 * 1024)  # type: ignore[union-attr]
        results.submit(result)
    stub.gate.set()
    first.join(10)
    # 3 MiB results cannot share a call with another 3 MiB one; small ones join where they fit.
    assert stub.calls == [["a"], ["big1"], ["big2", "small1", "small2"], ["big3"]]
    assert sorted(log.of("done")) == ["a", "big1", "big2", "big3", "small1", "small2"]


def sized(token: str, log: Log, size: int) -> PendingResult:
    result = pending(token, log)
    result.response.result.value = "x" * size
    return result


def test_batches_stay_within_the_message_limit_a_channel_states() -> None:
    stub, log = Stub(), Log()
    stub.max_message_bytes = 25_000  # type: ignore[attr-defined]  # as a ChannelSender states it
    results = batcher(stub, log)
    stub.gate.clear()
    first = threading.Thread(target=results.submit, args=(sized("a", log, 10),))
    first.start()
    assert stub.entered.wait(5)
    for token in "bcdef":  # 10 KB each: two fit in 25,000 bytes with their framing, three do not
        results.submit(sized(token, log, 10_000))
    results.submit(sized("big", log, 30_000))  # over the limit by itself: it still goes, alone
    stub.gate.set()
    first.join(10)
    assert stub.calls == [["a"], ["b", "c"], ["d", "e"], ["f"], ["big"]]
    assert results.sent_alone == 0 and log.of("alone") == []


def test_without_a_stated_limit_batches_take_up_to_4_mib() -> None:
    stub, log = Stub(), Log()
    results = batcher(stub, log)
    stub.gate.clear()
    first = threading.Thread(target=results.submit, args=(sized("a", log, 10),))
    first.start()
    assert stub.entered.wait(5)
    for token in "bcdef":
        results.submit(sized(token, log, 1024 * 1024))
    stub.gate.set()
    first.join(10)
    assert stub.calls == [["a"], ["b", "c", "d"], ["e", "f"]]
