"""The OpenAI-compatible HTTP API (FastAPI): thin routes over `ChatService`.

    GET    /health                          200 {"status": "ok"} when the model is loaded, 503 while loading
    GET    /metrics                         Prometheus text
    GET    /v1/models                       the base model (and adapters, when the server has them)
    POST   /v1/chat/completions             one turn; `stream: true` for server-sent events
    POST   /v1/sessions/{id}/events         feedback: {type: click|like|dislike|seen|skip, item_id}, a list, or {events}
    GET    /v1/sessions/{id}                the session memory
    DELETE /v1/sessions/{id}                forget everything stored for the session

Every error is the OpenAI envelope {"error": {"message", "type", "param", "code"}}; never a traceback. With API
keys configured, requests need `Authorization: Bearer <key>` and a session belongs to the key that created it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.config import Settings
from agent.experiments import Experiment
from agent.store import StoreUnavailable
from ui.api.metrics import Metrics
from ui.api.openapi import openapi_document
from ui.api.protocol import (
    MAX_BODY_BYTES,
    ROLES,
    ApiError,
    ChatCompletionRequest,
    FeedbackBatch,
    FeedbackEvent,
    SessionCreate,
)
from ui.api.serving import ChatService

log = logging.getLogger("convrec.api")


@dataclass
class ServerConfig:
    """How the server admits requests."""

    api_keys: tuple[str, ...] = ()
    """Accepted Bearer keys; empty means no authentication (sessions then have no owner)."""
    rate_limit: int = 600
    """Requests per minute per key (per client address without keys); 0 turns the limit off."""
    retry_after_loading: int = 10
    """Retry-After seconds sent with 503 while the model loads."""
    experiment: Experiment | None = None
    """The running A/B experiment (`convrec serve --experiment FILE`): each session's arm serves its turns."""


@dataclass
class _Loading:
    service: ChatService | None = None
    error: str | None = None


class RateLimiter:
    """A token bucket per caller: `per_minute` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def check(self, caller: str) -> None:
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        with self.lock:
            now = time.monotonic()
            tokens, last = self.buckets.get(caller, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self.buckets[caller] = (tokens, now)
                wait = str(max(1, math.ceil((1.0 - tokens) / rate)))
                raise ApiError(429, f"rate limit of {self.per_minute} requests per minute reached",
                               type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": wait})
            self.buckets[caller] = (tokens - 1.0, now)


def create_app(settings: Settings, config: ServerConfig | None = None, *, build=None) -> FastAPI:
    """The app; the model loads in a background thread at startup (`build(settings)` -> Recommender)."""
    config = config or ServerConfig()
    metrics, loading, limiter = Metrics(), _Loading(), RateLimiter(config.rate_limit)
    keys = {hashlib.sha256(k.encode()).hexdigest()[:16]: k for k in config.api_keys}

    def load() -> None:
        try:
            if build is None:
                from agent.build import build_recommender

                recommender = build_recommender(settings)[0]
            else:
                recommender = build(settings)
            loading.service = ChatService(recommender, metrics, config.experiment)
        except Exception as error:  # reported by /health and as 503s
            log.exception("loading the recommender failed")
            loading.error = f"{type(error).__name__}: {error}"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=load, name="convrec-load", daemon=True).start()
        yield
        close = getattr(loading.service.recommender.engine, "close", None) if loading.service else None
        if close is not None:  # vLLM's worker processes end with the server (on SIGTERM / Ctrl-C)
            close()

    app = FastAPI(title="convrec", lifespan=lifespan, docs_url=None, redoc_url=None)

    def service() -> ChatService:
        if loading.service is None:
            message = (f"the engine is unavailable: {loading.error}" if loading.error
                       else "the model is still loading; retry shortly")
            raise ApiError(503, message, type="engine_unavailable", code="engine_unavailable",
                           headers={"Retry-After": str(config.retry_after_loading)})
        return loading.service

    def authorize(request: Request) -> str | None:
        """The caller's owner id (a hash of its key), after authentication and rate limiting."""
        owner = None
        if keys:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            owner = hashlib.sha256(token.strip().encode()).hexdigest()[:16]
            if scheme.lower() != "bearer" or keys.get(owner) != token.strip():
                raise ApiError(401, "missing or invalid API key (Authorization: Bearer <key>)",
                               type="authentication_error", code="invalid_api_key")
        limiter.check(owner or (request.client.host if request.client else "unknown"))
        return owner

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics.requests.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, error: StoreUnavailable):
        log.error("%s", error)
        metrics.errors.labels(kind="StoreUnavailable").inc()
        reason = error.__cause__ or error  # SQLite's words ("database or disk is full"), not the file's path
        body = ApiError(503, f"the session store cannot be used now ({reason}); nothing was changed, retry later",
                        type="store_unavailable", code="store_unavailable").body()
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(config.retry_after_loading)})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(ApiError(error.status_code, str(error.detail), code=code).body(),
                            status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unexpected error")
        metrics.errors.labels(kind=type(error).__name__).inc()
        return JSONResponse(ApiError(500, "internal error", type="server_error").body(), status_code=500)

    @app.get("/health")
    def health():
        if loading.service is not None:
            return {"status": "ok", "model": loading.service.model_names()[0]}
        status = "error" if loading.error else "loading"
        return JSONResponse({"status": status, "error": loading.error}, status_code=503,
                            headers={"Retry-After": str(config.retry_after_loading)})

    @app.get("/metrics")
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    def models(request: Request):
        authorize(request)
        return service().list_models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        owner = authorize(request)
        chat = _validate(ChatCompletionRequest, await _read_json(request))
        svc = service()
        session_id, text, model = await run_in_threadpool(svc.prepare, chat, request.headers.get("x-session-id"),
                                                          owner)
        headers = {"X-Session-Id": session_id}
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return StreamingResponse(svc.stream(session_id, text, model, include_usage),
                                     media_type="text/event-stream", headers=headers)
        return JSONResponse(await run_in_threadpool(svc.complete, session_id, text, model), headers=headers)

    @app.get("/v1/experiments")
    async def experiments(request: Request):
        authorize(request)
        return await run_in_threadpool(service().list_experiments)

    @app.post("/v1/sessions")
    async def create_session(request: Request):
        owner = authorize(request)
        wanted = _validate(SessionCreate, await _read_json(request))
        return await run_in_threadpool(service().create_session, wanted.session_id, owner)

    @app.post("/v1/sessions/{session_id}/events")
    async def events(session_id: str, request: Request):
        owner = authorize(request)
        body = await _read_json(request)
        if isinstance(body, list):
            batch = _validate(FeedbackBatch, {"events": body}).events
        elif isinstance(body, dict) and "events" in body:
            batch = _validate(FeedbackBatch, body).events
        else:
            batch = [_validate(FeedbackEvent, body)]
        return await run_in_threadpool(service().apply_events, session_id, batch, owner)

    @app.delete("/v1/sessions/{session_id}/memory/{entry:path}")
    def remove_memory_entry(session_id: str, entry: str, request: Request):
        return service().remove_entry(session_id, entry, authorize(request))

    @app.get("/v1/sessions/{session_id}")
    def get_session(session_id: str, request: Request):
        return service().get_session(session_id, authorize(request))

    @app.delete("/v1/sessions/{session_id}")
    def delete_session(session_id: str, request: Request):
        return service().delete_session(session_id, authorize(request))

    def document() -> dict:
        if loading.service is None:
            return openapi_document(app)
        svc = loading.service
        return openapi_document(app, next(iter(svc.recommender.catalog)).item_id, svc.model_names())

    app.openapi = document
    return app


async def _read_json(request: Request):
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body over {MAX_BODY_BYTES:,} bytes", code="body_too_large")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None


def _validate(model, data):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(p) for p in _field_path(first["loc"])) or None
        raise ApiError(400, f"{param or 'body'}: {first['msg']}", param=param) from None


def _field_path(loc: tuple) -> list:
    """pydantic's error location without its union tags: ("messages", 0, "user", "content", "str") ->
    ["messages", 0, "content"]."""
    path = []
    for part in loc:
        tag = path and isinstance(path[-1], int) and part in ROLES
        if not tag and not (isinstance(part, str) and ("[" in part or part.endswith("str"))):
            path.append(part)
    return path
