"""The official SDK's client starts a traced orchestration; prints the spans it recorded as JSON.

Run with the compatibility interpreter (Microsoft's ``durabletask`` and OpenTelemetry's SDK
installed): ``python official_trace_client.py --address HOST:PORT --name ORCHESTRATOR
--instance-id ID --input JSON``. Inside a span named ``official-root`` it schedules the orchestration with
``TaskHubGrpcClient.schedule_new_orchestration`` (which opens the official
``create_orchestration:NAME`` span and puts its context in the request), waits for the
orchestration to complete, and writes one JSON object to stdout: the instance ID, its runtime
status, and every span this process recorded (name, kind, IDs in hex, parent span ID,
attributes). The test (``tests/e2e/test_compat_tracing.py``) checks that the worker's spans
continue this trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from durabletask.client import TaskHubGrpcClient


def as_json(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--address", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--input", default="null")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    client = TaskHubGrpcClient(host_address=args.address)
    with trace.get_tracer("compat").start_as_current_span("official-root"):
        instance_id = client.schedule_new_orchestration(
            args.name, input=json.loads(args.input), instance_id=args.instance_id
        )
    state = client.wait_for_orchestration_completion(instance_id, timeout=int(args.timeout))
    status = state.runtime_status.name if state is not None else None
    spans = [as_json(s) for s in exporter.get_finished_spans()]
    json.dump({"instance_id": instance_id, "status": status, "spans": spans}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
