"""A trace started by the official SDK's client continues in our worker (``make compat``).

The official client (Microsoft's ``durabletask`` 1.12 with OpenTelemetry, in the compatibility
interpreter: ``compat/official_trace_client.py``) starts an orchestration on our sidecar inside
a span of its own and prints the spans it recorded. Our worker, in this process, runs the
orchestration with an in-memory exporter. The two sets of spans must form one trace: our
``orchestration:NAME`` span is the child of the official ``create_orchestration:NAME`` span, and
the activities hang under our orchestration span.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from durabletask import task
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import REPO_ROOT, compat_python, fast_sidecar
from tests.otel_support import collecting_spans, named, only, parent_id, span_id, spans_of_trace

pytestmark = [pytest.mark.compat, pytest.mark.our_sidecar("our worker on our sidecar, next to the official client")]

SCRIPT = REPO_ROOT / "compat" / "official_trace_client.py"
WAIT = 30.0


def compat_add_one(ctx: task.ActivityContext, value: int) -> int:
    return value + 1


def compat_traced(ctx: task.OrchestrationContext, value: int) -> Any:
    first = yield ctx.call_activity(compat_add_one, input=value)
    return (yield ctx.call_activity(compat_add_one, input=first))


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with collecting_spans(), fast_sidecar() as (_, address):
        worker = TaskHubGrpcWorker(host_address=address)
        worker.add_orchestrator(compat_traced)
        worker.add_activity(compat_add_one)
        worker.start()
        try:
            yield address
        finally:
            worker.stop()


def run_official_client(address: str, name: str, value: Any) -> dict[str, Any]:
    python = compat_python()
    assert python is not None
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [python, "-P", str(SCRIPT), "--address", address, "--name", name, "--input", json.dumps(value),
         "--instance-id", f"official-{uuid.uuid4().hex[:8]}", "--timeout", str(WAIT)],
        capture_output=True, text=True, timeout=WAIT + 30, cwd=str(REPO_ROOT / "compat"), env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout))


def test_a_trace_started_by_the_official_client_continues_in_our_worker(address: str) -> None:
    report = run_official_client(address, "compat_traced", 1)
    assert report["status"] == "COMPLETED", report
    official = {s["name"]: s for s in report["spans"]}
    create = official["create_orchestration:compat_traced"]
    root = official["official-root"]
    assert create["kind"] == "PRODUCER" and create["parent_id"] == root["span_id"]
    assert create["attributes"]["durabletask.task.instance_id"] == report["instance_id"]

    ours = spans_of_trace(int(create["trace_id"], 16))
    orchestration = only(ours, "orchestration:compat_traced")
    assert orchestration.kind == SpanKind.SERVER
    assert parent_id(orchestration) == int(create["span_id"], 16)
    assert dict(orchestration.attributes or {})["durabletask.task.instance_id"] == report["instance_id"]
    calls = [s for s in named(ours, "activity:compat_add_one") if s.kind == SpanKind.CLIENT]
    runs = [s for s in named(ours, "activity:compat_add_one") if s.kind == SpanKind.SERVER]
    assert len(calls) == 2 and len(runs) == 2
    assert all(parent_id(c) == span_id(orchestration) for c in calls)
    assert sorted(parent_id(r) or 0 for r in runs) == sorted(span_id(c) for c in calls)
