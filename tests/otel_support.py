"""The OpenTelemetry SDK's in-memory exporter, installed once per test process, for tracing tests.

Spans are kept only inside ``collecting_spans()`` (the global provider outlives a test module, and
other tests' orchestrations must not fill memory with spans nobody reads).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter: InMemorySpanExporter | None = None
_collecting = 0


class _WhileCollecting(SpanProcessor):
    """Passes ended spans on only inside ``collecting_spans()``."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_end(self, span: ReadableSpan) -> None:
        if _collecting:
            self._inner.on_end(span)


def span_exporter() -> InMemorySpanExporter:
    """The exporter spans of this process go to (the global provider can be set only once)."""
    global _exporter
    if _exporter is None:
        _exporter = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(_WhileCollecting(SimpleSpanProcessor(_exporter)))
    return _exporter


@contextmanager
def collecting_spans() -> Iterator[InMemorySpanExporter]:
    """Keep the spans that end in the block; they are dropped after it."""
    global _collecting
    exporter = span_exporter()
    _collecting += 1
    try:
        yield exporter
    finally:
        _collecting -= 1
        if not _collecting:
            exporter.clear()


def spans_of_trace(trace_id: int) -> list[ReadableSpan]:
    """The finished spans of one trace."""
    return [s for s in span_exporter().get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def only(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    """The one span called ``name`` (fails when there are none or several)."""
    found = named(spans, name)
    assert len(found) == 1, f"expected one span {name!r}, got {len(found)}: {[s.name for s in spans]}"
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})
