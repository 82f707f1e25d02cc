"""The web console's HTTP side (aiohttp): pages, the live alert stream, and the audited actions.

Why aiohttp rather than FastAPI + uvicorn: it is already installed with faust-streaming, so the
console adds no dependency to the fleet service; it runs on the same asyncio loop as the aiokafka
reader that feeds it; and server-sent events are a plain `StreamResponse`. The app is built from
`ConsoleDeps` (state, analysts, signing key, an injected `publish` coroutine and clock), so tests
run it against a fake publisher or against real Kafka alike.

Security, in order of the request: the Host header must name this console (DNS rebinding cannot
reach it through another name); reads are open (loopback by default); every POST needs
`Authorization: Bearer <token>` (no cookies: CSRF-safe) and a JSON body; every POST, accepted or
not, is recorded on the audit topic with actor, action, outcome and what was published. Responses
carry a Content-Security-Policy without inline script, and all record content is escaped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError

from pipeline.soc import actions, html
from pipeline.soc.actions import Outgoing
from pipeline.soc.auth import Analysts
from pipeline.soc.console_state import AlertBoard, Fleet
from pipeline.soc.errors import ActionRejected, ActionUnavailable
from pipeline.soc.settings import ConsoleSettings, ConsoleTopics
from schemas.alerts import Alert
from schemas.audit import ANONYMOUS, AuditAction, AuditOutcome
from schemas.codec import encode
from schemas.signing import SigningKey

log = logging.getLogger(__name__)

Publish = Callable[[str, str, bytes | None], Awaitable[Any]]
PUBLISH_ERRORS = (KafkaError, TimeoutError, OSError)
M = TypeVar("M", bound=BaseModel)
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
KEEPALIVE_S = 15.0
REPLAY_ON_CONNECT = 50


@dataclass(frozen=True)
class ConsoleDeps:
    """Everything the app needs; `publish(topic, key, value)` must wait for the broker's ack."""

    settings: ConsoleSettings
    topics: ConsoleTopics
    analysts: Analysts
    signing_key: SigningKey | None
    board: AlertBoard
    fleet: Fleet
    publish: Publish
    clock: Callable[[], datetime]


DEPS = web.AppKey("deps", ConsoleDeps)


def build_app(deps: ConsoleDeps) -> web.Application:
    app = web.Application(middlewares=[_host_check, _security_headers], client_max_size=64 * 1024)
    app[DEPS] = deps
    app.router.add_get("/", _alerts_page)
    app.router.add_get("/alerts/{alert_id}", _alert_page)
    app.router.add_get("/fleet", _fleet_page)
    app.router.add_get("/events", _events)
    app.router.add_get("/api/whoami", _whoami)
    app.router.add_get("/api/alerts", _alerts_json)
    app.router.add_get("/healthz", _health)
    app.router.add_post("/api/verdicts/{sha256}/lift", _lift)
    app.router.add_post("/api/commands/restore", _restore)
    app.router.add_post("/api/groups/{group}/mode", _group_mode)
    app.router.add_post("/api/devices/{device_id}/mode", _device_mode)
    app.router.add_post("/api/alerts/{alert_id}/false-positive", _false_positive)
    app.router.add_static("/static", STATIC, show_index=False, follow_symlinks=False)
    app.on_shutdown.append(_close_streams)
    return app


def allowed_host_names(settings: ConsoleSettings) -> frozenset[str]:
    """Host header names the console answers to: loopback, its bind address, configured extras."""
    extra = {settings.host} if settings.host not in ("0.0.0.0", "::", "") else set()  # noqa: S104
    return LOOPBACK_NAMES | extra | set(settings.allowed_hosts)


def host_name(header: str) -> str:
    """`[::1]:8080` -> `::1`, `Example:80` -> `example`."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if header.count(":") == 1 else header.lower()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    if host_name(request.headers.get("Host", "")) not in allowed_host_names(request.app[DEPS].settings):
        return web.json_response({"message": "unknown Host; add it with --allowed-host"}, status=421)
    return await handler(request)


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if not response.prepared:
        response.headers.update({
            "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
        })
    return response


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def _alerts_page(request: web.Request) -> web.Response:
    return _html(html.alerts_page(request.app[DEPS].board.recent()))


async def _alert_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    alert = deps.board.get(request.match_info["alert_id"])
    if alert is None:
        return _html(html.message_page("Alert not found",
                                       "This alert is not among the alerts the console holds."), 404)
    group = deps.fleet.group_of(alert.device_id)
    return _html(html.alert_page(alert, group=group, can_sign=deps.signing_key is not None))


async def _fleet_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    return _html(html.fleet_page(deps.fleet, deps.clock()))


async def _alerts_json(request: web.Request) -> web.Response:
    return web.json_response([html.alert_summary(a) for a in request.app[DEPS].board.recent()],
                             dumps=_dumps)


async def _health(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    return web.json_response({"alerts": len(deps.board), "devices": len(deps.fleet.devices),
                              "invalid_records": deps.board.invalid + deps.fleet.invalid})


async def _whoami(request: web.Request) -> web.Response:
    actor = request.app[DEPS].analysts.authenticate(request.headers.get("Authorization"))
    if actor is None:
        return _unauthorized()
    return web.json_response({"actor": actor})


def _unauthorized() -> web.Response:
    return web.json_response({"message": "authentication required: Authorization: Bearer <token>"},
                             status=401, headers={"WWW-Authenticate": 'Bearer realm="ringfence"'})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the recent alerts, then each new one as it arrives."""
    board = request.app[DEPS].board
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "Content-Security-Policy": CSP, "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue = board.subscribe()
    try:
        for recent in reversed(board.recent(REPLAY_ON_CONNECT)):
            await response.write(_sse(recent))
        while True:
            try:
                alert: Alert | None = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if alert is None:
                break
            await response.write(_sse(alert))
    except (ConnectionResetError, ConnectionError):
        log.debug("live-list client went away")
    finally:
        board.unsubscribe(queue)
    return response


def _sse(alert: Alert) -> bytes:
    # orjson escapes newlines inside strings, so the payload is always one `data:` line.
    return b"event: alert\ndata: " + orjson.dumps(html.alert_summary(alert)) + b"\n\n"


async def _close_streams(app: web.Application) -> None:
    app[DEPS].board.close()


async def _lift(request: web.Request) -> web.Response:
    deps, sha256 = request.app[DEPS], request.match_info["sha256"]

    def build(actor: str, body: dict[str, Any]) -> Outgoing:
        key = _key(deps)
        return actions.lift_verdict(sha256, _parse(actions.LiftRequest, body), actor=actor, key=key,
                                    now=deps.clock(), topics=deps.topics)

    return await _act(request, AuditAction.LIFT_VERDICT, sha256, build)


async def _restore(request: web.Request) -> web.Response:
    deps = request.app[DEPS]

    def build(actor: str, body: dict[str, Any]) -> Outgoing:
        key = _key(deps)
        ttl = timedelta(hours=deps.settings.command_ttl_hours)
        return actions.restore_file(_parse(actions.RestoreRequest, body), actor=actor, key=key,
                                    now=deps.clock(), ttl=ttl, topics=deps.topics)

    return await _act(request, AuditAction.RESTORE_FILE, "restore_file", build)


async def _group_mode(request: web.Request) -> web.Response:
    deps, group = request.app[DEPS], request.match_info["group"]

    def build(actor: str, body: dict[str, Any]) -> Outgoing:
        return actions.set_group_mode(group, _parse(actions.GroupModeRequest, body), actor=actor,
                                      now=deps.clock(), topics=deps.topics, key=_key(deps))

    return await _act(request, AuditAction.SET_GROUP_MODE, f"group:{group}", build)


async def _device_mode(request: web.Request) -> web.Response:
    deps, device_id = request.app[DEPS], request.match_info["device_id"]

    def build(actor: str, body: dict[str, Any]) -> Outgoing:
        return actions.set_device_mode(device_id, _parse(actions.DeviceModeRequest, body), actor=actor,
                                       key=_key(deps), now=deps.clock(), topics=deps.topics)

    return await _act(request, AuditAction.SET_DEVICE_MODE, f"device:{device_id}", build)


async def _false_positive(request: web.Request) -> web.Response:
    deps, alert_id = request.app[DEPS], request.match_info["alert_id"]

    def build(actor: str, body: dict[str, Any]) -> Outgoing:
        alert = deps.board.get(alert_id)
        if alert is None:
            raise ActionRejected("the console holds no such alert", alert_id=alert_id[:128])
        return actions.false_positive(
            alert, _parse(actions.FalsePositiveRequest, body), group=deps.fleet.group_of(alert.device_id),
            actor=actor, now=deps.clock(), max_days=deps.settings.max_exclusion_days, topics=deps.topics)

    return await _act(request, AuditAction.MARK_FALSE_POSITIVE, f"alert:{alert_id}", build)


def _key(deps: ConsoleDeps) -> SigningKey:
    if deps.signing_key is None:
        raise ActionUnavailable("no signing key configured "
                                "(--signing-key or RINGFENCE_CONSOLE_SIGNING_KEY_FILE)")
    return deps.signing_key


def _parse(model: type[M], body: dict[str, Any]) -> M:
    return model.model_validate(body)


async def _act(request: web.Request, action: AuditAction, target: str,
               build: Callable[[str, dict[str, Any]], Outgoing]) -> web.Response:
    """Authenticate, build the record, publish it, audit the outcome; one path for every action."""
    deps = request.app[DEPS]
    actor = deps.analysts.authenticate(request.headers.get("Authorization"))
    if actor is None:
        await _audit(request, ANONYMOUS, action, AuditOutcome.DENIED, target, "no valid bearer token")
        return _unauthorized()
    try:
        outgoing = build(actor, await _body(request))
    except (ActionRejected, ValidationError, ValueError) as exc:
        reason = _first_error(exc)
        await _audit(request, actor, action, AuditOutcome.REJECTED, target, reason)
        return web.json_response({"message": reason}, status=400)
    except ActionUnavailable as exc:
        await _audit(request, actor, action, AuditOutcome.FAILED, target, exc.message)
        return web.json_response({"message": exc.message}, status=503)
    return await _publish(request, actor, outgoing)


async def _publish(request: web.Request, actor: str, outgoing: Outgoing) -> web.Response:
    deps = request.app[DEPS]
    try:
        await deps.publish(outgoing.topic, outgoing.key, outgoing.value)
    except PUBLISH_ERRORS as exc:
        log.error("console %s by %s: publishing to %s failed: %r", outgoing.action, actor, outgoing.topic,
                  exc)
        await _audit(request, actor, outgoing.action, AuditOutcome.FAILED, outgoing.target,
                     f"publish: {exc!r}", outgoing=outgoing)
        return web.json_response({"message": "publishing failed; nothing changed"}, status=502)
    audited = await _audit(request, actor, outgoing.action, AuditOutcome.ACCEPTED, outgoing.target,
                           "", outgoing=outgoing)
    message = f"{outgoing.action.value} published to {outgoing.topic} (key {outgoing.key})"
    body = {"message": message if audited else message + "; the audit record could not be written",
            "record_id": outgoing.record_id, "topic": outgoing.topic, "key": outgoing.key, "actor": actor}
    return web.json_response(body, status=200 if audited else 500)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ActionRejected("the body must be JSON (Content-Type: application/json)")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ActionRejected("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ActionRejected("the body must be a JSON object")
    return body


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors(include_url=False, include_input=False)[0]
        return f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
    return exc.message if isinstance(exc, ActionRejected) else str(exc)


async def _audit(request: web.Request, actor: str, action: AuditAction, outcome: AuditOutcome, target: str,
                 reason: str, outgoing: Outgoing | None = None) -> bool:
    """Publish the audit record; False (and an error log with the record) if that failed."""
    deps = request.app[DEPS]
    record = actions.audit_record(actor=actor, action=action, outcome=outcome, target=target,
                                  now=deps.clock(), outgoing=outgoing, reason=reason, client=request.remote)
    try:
        await deps.publish(deps.topics.audit, actor, encode(record))
    except PUBLISH_ERRORS as exc:
        log.error("audit record could not be published (%r): %s", exc, record.model_dump_json())
        return False
    log.info("audit %s %s by %s: %s %s", record.audit_id, action.value, actor, outcome.value, target[:200])
    return True
