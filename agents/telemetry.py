"""W3C trace context on Kafka records, so one trace follows detect → block across processes.

The agent writes a `traceparent` header (W3C Trace Context, version 00) on each event batch; the
pipeline continues that trace when it scores the batch and writes the header on the commands and
verdicts it emits; the agent continues it when it acts on a command and on the ActionResult it
reports. Carrying the trace needs only the header format, so the agent does not depend on
OpenTelemetry: `span()` records a real span when the OpenTelemetry API is importable and a tracer
provider was installed with `use_tracer_provider` (the pipeline's `pipeline.telemetry.configure`
does it), and otherwise only mints the ids, so the context still flows through an agent that
exports nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

TRACEPARENT = "traceparent"
TRACER_NAME = "ringfence"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
Attributes = Mapping[str, str | int | float | bool]
Headers = Iterable[tuple[str, bytes]]

_provider: Any = None  # an OpenTelemetry TracerProvider, when one was installed
_current: ContextVar[TraceContext | None] = ContextVar("ringfence_trace", default=None)


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's place in a trace: the trace id, this span's id, and the sampled flag."""

    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero
    sampled: bool = True

    @classmethod
    def new(cls) -> TraceContext:
        """The root of a new trace."""
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """A new span in the same trace."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.sampled)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: bytes | str | None) -> TraceContext | None:
    """The context in a `traceparent` value, or None when it is absent or not valid W3C version 00."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    match = _TRACEPARENT.match(value.strip()) if value else None
    if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
        return None
    return TraceContext(match[1], match[2], bool(int(match[3], 16) & 1))


def from_headers(headers: Headers | None) -> TraceContext | None:
    """The trace context of a Kafka record's headers (aiokafka: a sequence of (str, bytes))."""
    for name, value in headers or ():
        if name.lower() == TRACEPARENT:
            return parse_traceparent(value)
    return None


def to_headers(context: TraceContext | None) -> list[tuple[str, bytes]]:
    """Kafka record headers carrying `context` (none when there is no context)."""
    return [] if context is None else [(TRACEPARENT, context.traceparent.encode("ascii"))]


def current() -> TraceContext | None:
    """The context of the innermost `span()` open in this task, if any (e.g. for a queued report)."""
    return _current.get()


def headers_kwargs(context: TraceContext | None) -> dict[str, list[tuple[str, bytes]]]:
    """`{"headers": ...}` for a producer's send call when there is a context, else `{}`."""
    return {"headers": to_headers(context)} if context is not None else {}


def use_tracer_provider(provider: Any) -> None:
    """Record spans with this OpenTelemetry TracerProvider from now on (None: only propagate)."""
    global _provider
    _provider = provider


@contextmanager
def span(name: str, parent: TraceContext | None = None, *, attributes: Attributes | None = None,
         kind: str = "internal") -> Iterator[TraceContext]:
    """A span named `name`, child of `parent` (a new trace without one); yields its context.

    `kind` is an OpenTelemetry SpanKind name: internal, producer, consumer, client, server.
    An exception leaving the block is recorded on the span and re-raised.
    """
    if _provider is None:
        with _entered(parent.child() if parent is not None else TraceContext.new()) as context:
            yield context
        return
    with _otel_span(name, parent, attributes or {}, kind) as otel_context, _entered(otel_context) as context:
        yield context


@contextmanager
def continued(name: str, parent: TraceContext | None, *, attributes: Attributes | None = None,
              kind: str = "internal") -> Iterator[TraceContext | None]:
    """`span()` when a trace came in with the record (`parent`), else nothing (yields None)."""
    if parent is None:
        yield None
        return
    with span(name, parent, attributes=attributes, kind=kind) as context:
        yield context


@contextmanager
def _entered(context: TraceContext) -> Iterator[TraceContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@contextmanager
def _otel_span(name: str, parent: TraceContext | None, attributes: Attributes,
               kind: str) -> Iterator[TraceContext]:
    from opentelemetry import trace

    tracer = _provider.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, context=_otel_parent(parent), kind=trace.SpanKind[kind.upper()],
                                      attributes=dict(attributes)) as current:
        context = current.get_span_context()
        if not context.is_valid:  # a no-op provider: keep the trace going with ids of our own
            yield parent.child() if parent is not None else TraceContext.new()
            return
        yield TraceContext(f"{context.trace_id:032x}", f"{context.span_id:016x}", context.trace_flags.sampled)


def _otel_parent(parent: TraceContext | None) -> Any:
    from opentelemetry import trace
    from opentelemetry.context import Context

    if parent is None:
        return Context()  # a new trace: never inherit whatever span happens to be current
    remote = trace.SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
                               trace_flags=trace.TraceFlags(1 if parent.sampled else 0))
    return trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())
