"""OpenTelemetry spans in the shape the official Durable Task SDKs emit, and W3C context on the wire.

OpenTelemetry is optional (the ``opentelemetry`` extra). Without ``opentelemetry-api`` every
function here does nothing and returns None, and no import fails. Spans go to the globally
configured TracerProvider under the instrumentation scope ``durabletask``.

Spans that must carry an ID chosen in advance (the orchestration's SERVER span, and the CLIENT
spans of activities and sub-orchestrations, whose IDs the downstream work already names as its
parent) are built finished and handed to the provider's span processor; that needs the
OpenTelemetry SDK's TracerProvider. With another provider those spans are left out and the
work downstream is parented on what is there instead.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    OTEL_AVAILABLE = True
    # Providers under which no span is ever recorded: what OpenTelemetry hands out until one is set.
    _NOT_RECORDING: tuple[type, ...] = (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)
except ImportError:  # the optional extra is not installed
    OTEL_AVAILABLE = False

_UNKNOWN = object()
_SDK_PROVIDER: object = _UNKNOWN  # see _sdk_provider_type

_logger = logging.getLogger("durabletask-tracing")

TRACER_NAME = "durabletask"

ATTR_TYPE = "durabletask.type"
ATTR_TASK_NAME = "durabletask.task.name"
ATTR_TASK_VERSION = "durabletask.task.version"
ATTR_INSTANCE_ID = "durabletask.task.instance_id"
ATTR_STATUS = "durabletask.task.status"
ATTR_TASK_ID = "durabletask.task.task_id"
ATTR_EVENT_TARGET = "durabletask.event.target_instance_id"
ATTR_FIRE_AT = "durabletask.fire_at"
ATTR_ENTITY_OPERATION = "durabletask.entity.operation"

STATUS_COMPLETED = "Completed"
STATUS_FAILED = "Failed"


def span_name(kind: str, name: str, version: str | None = None) -> str:
    """``kind:name``, with ``@(version)`` after it when there is a version."""
    return f"{kind}:{name}@({version})" if version else f"{kind}:{name}"


@dataclass(frozen=True)
class SpanRef:
    """One span's place in a trace: IDs and flags of a W3C ``traceparent``."""

    trace_id: int
    span_id: int
    flags: int = 1

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"

    def child(self) -> SpanRef:
        """A new span ID in the same trace."""
        return SpanRef(self.trace_id, new_span_id(), self.flags)

    def with_span_id(self, span_id: int) -> SpanRef:
        return SpanRef(self.trace_id, span_id, self.flags)

    def to_proto(self, trace_state: str | None = None) -> pb.TraceContext:
        """The wire form; ``spanID`` is filled too, as older readers expect it."""
        ctx = pb.TraceContext(traceParent=self.traceparent, spanID=f"{self.span_id:016x}")
        if trace_state:
            ctx.traceState.value = trace_state
        return ctx


def new_span_id() -> int:
    span_id = 0
    while span_id == 0:
        span_id = random.getrandbits(64)
    return span_id


def parse_traceparent(traceparent: str) -> SpanRef | None:
    """The IDs of a W3C ``traceparent`` (version 00 layout), None when it is not one."""
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return SpanRef(trace_id, span_id, flags)


def ref_of(ctx: pb.TraceContext | None) -> SpanRef | None:
    """The span a wire trace context points at, None when absent or malformed."""
    if ctx is None or not ctx.traceParent:
        return None
    return parse_traceparent(ctx.traceParent)


def trace_state_of(ctx: pb.TraceContext | None) -> str | None:
    if ctx is None or not ctx.HasField("traceState"):
        return None
    return ctx.traceState.value or None


def current_trace_context() -> pb.TraceContext | None:
    """The active span as a wire trace context (None: no OpenTelemetry or no valid active span)."""
    if not OTEL_AVAILABLE:
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    ref = parse_traceparent(carrier.get("traceparent", ""))
    if ref is None:
        return None
    return ref.to_proto(carrier.get("tracestate"))


def _otel_parent(ctx: pb.TraceContext | None) -> Any:
    """An OpenTelemetry Context whose remote parent is ``ctx`` (None when there is none)."""
    if ref_of(ctx) is None:
        return None
    assert ctx is not None
    carrier = {"traceparent": ctx.traceParent}
    state = trace_state_of(ctx)
    if state:
        carrier["tracestate"] = state
    return TraceContextTextMapPropagator().extract(carrier)


@contextmanager
def server_span(
    name: str, parent: pb.TraceContext | None, attributes: Mapping[str, str], kind: str = "SERVER"
) -> Iterator[Any]:
    """A span around work done here, child of ``parent`` when given (else of the active context).

    Yields the span (None without OpenTelemetry); the caller marks a failure with :func:`mark_failed`.
    """
    if not OTEL_AVAILABLE:
        yield None
        return
    tracer = otel_trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        name, context=_otel_parent(parent), kind=getattr(SpanKind, kind), attributes=dict(attributes),
        record_exception=False, set_status_on_exception=False,
    ) as span:
        yield span


@contextmanager
def _current(parent: pb.TraceContext | None) -> Iterator[None]:
    """Make ``parent`` the active context in the block, without a span of ours."""
    context = _otel_parent(parent) if OTEL_AVAILABLE else None
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def mark_failed(span: Any, error: BaseException | str) -> None:
    """Set ERROR status on ``span`` (and record ``error`` when it is an exception)."""
    if span is None or not OTEL_AVAILABLE:
        return
    span.set_status(Status(StatusCode.ERROR, str(error)))
    if isinstance(error, BaseException):
        span.record_exception(error)


def emit_span(
    name: str,
    kind: str,
    attributes: Mapping[str, str],
    *,
    parent: pb.TraceContext | None,
    start_ns: int | None = None,
    error: str | None = None,
) -> None:
    """Record a span that starts at ``start_ns`` (default: now) and ends now, with a fresh ID."""
    if not OTEL_AVAILABLE:
        return
    tracer = otel_trace.get_tracer(TRACER_NAME)
    span = tracer.start_span(
        name, context=_otel_parent(parent), kind=getattr(SpanKind, kind), attributes=dict(attributes),
        start_time=start_ns,
    )
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def spans_recorded() -> bool:
    """Whether a span started now could be recorded: a TracerProvider has been set.

    Without one (OpenTelemetry's default proxy, or its no-op provider) every span is a
    non-recording stand-in for its parent, so the worker skips building them.
    """
    if not OTEL_AVAILABLE:
        return False
    return not isinstance(otel_trace.get_tracer_provider(), _NOT_RECORDING)


def _sdk_provider_type() -> type | None:
    """The OpenTelemetry SDK's TracerProvider class, None when the SDK is not installed (looked up once)."""
    global _SDK_PROVIDER
    if _SDK_PROVIDER is _UNKNOWN:
        try:
            from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        except ImportError:
            _SDK_PROVIDER = None
        else:
            _SDK_PROVIDER = SdkTracerProvider
    return _SDK_PROVIDER if isinstance(_SDK_PROVIDER, type) else None


def can_emit_with_id() -> bool:
    """Whether spans with IDs chosen in advance can be recorded (the SDK's TracerProvider is set)."""
    if not OTEL_AVAILABLE:
        return False
    sdk_provider = _sdk_provider_type()
    if sdk_provider is None:
        return False
    provider = otel_trace.get_tracer_provider()
    return isinstance(provider, sdk_provider) and hasattr(provider, "_active_span_processor")


def emit_span_with_id(
    name: str,
    kind: str,
    attributes: Mapping[str, str],
    *,
    ref: SpanRef,
    parent_span_id: int | None,
    start_ns: int | None,
    end_ns: int | None = None,
    error: str | None = None,
) -> bool:
    """Record a finished span whose ID is ``ref.span_id``; False when that cannot be done here."""
    if not can_emit_with_id():
        return False
    try:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        provider: Any = otel_trace.get_tracer_provider()
        flags = otel_trace.TraceFlags(ref.flags)
        parent = None
        if parent_span_id is not None:
            parent = otel_trace.SpanContext(ref.trace_id, parent_span_id, is_remote=True, trace_flags=flags)
        now = time.time_ns()
        span = ReadableSpan(
            name=name,
            context=otel_trace.SpanContext(ref.trace_id, ref.span_id, is_remote=False, trace_flags=flags),
            parent=parent,
            resource=provider.resource,
            attributes=dict(attributes),
            kind=getattr(SpanKind, kind),
            status=Status(StatusCode.ERROR, error) if error is not None else Status(StatusCode.UNSET),
            start_time=start_ns if start_ns is not None else now,
            end_time=end_ns if end_ns is not None else now,
            instrumentation_scope=InstrumentationScope(TRACER_NAME),
        )
        if not flags.sampled:
            return True
        provider._active_span_processor.on_end(span)
        return True
    except Exception:  # the SDK's internals changed: leave the span out rather than fail the work
        _logger.debug("could not record span %s", name, exc_info=True)
        return False


# ----- client -----


@contextmanager
def creating_orchestration(req: pb.CreateInstanceRequest, emit: bool = True) -> Iterator[None]:
    """The PRODUCER span ``create_orchestration:NAME`` around a StartInstance call; it fills
    ``req.parentTraceContext`` so the orchestration continues this trace (with ``emit`` False:
    no span, the active context is passed on)."""
    if not OTEL_AVAILABLE:
        yield
        return
    if not emit:
        ctx = current_trace_context()
        if ctx is not None:
            req.parentTraceContext.CopyFrom(ctx)
        yield
        return
    version = req.version.value if req.HasField("version") else None
    attributes = {ATTR_TYPE: "orchestration", ATTR_TASK_NAME: req.name, ATTR_INSTANCE_ID: req.instanceId}
    if version:
        attributes[ATTR_TASK_VERSION] = version
    with server_span(span_name("create_orchestration", req.name, version), None, attributes, "PRODUCER"):
        ctx = current_trace_context()
        if ctx is not None:
            req.parentTraceContext.CopyFrom(ctx)
        yield


def carry_current_context(req: pb.SignalEntityRequest) -> None:
    """Put the active span's context on a SignalEntity request, so the entity operation's span
    joins the caller's trace (no span of its own, as the official client records none)."""
    ctx = current_trace_context()
    if ctx is not None:
        req.parentTraceContext.CopyFrom(ctx)


@contextmanager
def raising_event(event_name: str, instance_id: str, emit: bool = True) -> Iterator[None]:
    """The PRODUCER span ``orchestration_event:NAME`` around a RaiseEvent call."""
    if not OTEL_AVAILABLE or not emit:
        yield
        return
    attributes = {ATTR_TYPE: "event", ATTR_TASK_NAME: event_name, ATTR_EVENT_TARGET: instance_id}
    with server_span(span_name("orchestration_event", event_name), None, attributes, "PRODUCER"):
        yield


# ----- worker: activities and entities -----


@contextmanager
def running_activity(req: pb.ActivityRequest, emit: bool = True) -> Iterator[Any]:
    """The SERVER span ``activity:NAME`` around one activity run, child of its parentTraceContext
    (with ``emit`` False, or no TracerProvider set: no span, the parent made current so the
    activity's own spans join it)."""
    parent = req.parentTraceContext if req.HasField("parentTraceContext") else None
    if not emit or not spans_recorded():
        with _current(parent):
            yield None
        return
    attributes = {
        ATTR_TYPE: "activity",
        ATTR_INSTANCE_ID: req.orchestrationInstance.instanceId,
        ATTR_TASK_NAME: req.name,
        ATTR_TASK_ID: str(req.taskId),
    }
    with server_span(span_name("activity", req.name), parent, attributes) as span:
        yield span


@contextmanager
def running_entity_operation(
    instance_id: str, entity_name: str, operation: str, parent: pb.TraceContext | None, emit: bool = True
) -> Iterator[Any]:
    """The SERVER span ``entity:NAME:OPERATION`` around one entity operation (none, only the
    parent made current, with ``emit`` False or no TracerProvider set)."""
    if not emit or not spans_recorded():
        with _current(parent):
            yield None
        return
    attributes = {
        ATTR_TYPE: "entity",
        ATTR_INSTANCE_ID: instance_id,
        ATTR_TASK_NAME: entity_name,
        ATTR_ENTITY_OPERATION: operation,
    }
    with server_span(span_name("entity", f"{entity_name}:{operation}"), parent, attributes) as span:
        yield span
