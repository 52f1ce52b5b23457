"""The FastAPI application: ``create_app(config)`` serves the explorer (``/``) and the API (``/v1``)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AttnscopeError, CaptureError, InputError, ModelLoadError, UnknownNameError
from .api import ApiError, ServerState, build_router
from .attribution import build_attribution_router
from .config import ServerConfig
from .worker import JobCancelled, QueueFull

STATIC_DIR = Path(str(resources.files("attnscope.server") / "static"))
log = logging.getLogger("attnscope.server")


def _error(status: int, type_: str, message: str, details=None, headers=None) -> JSONResponse:
    body = {"error": {"type": type_, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _jsonable_errors(errors) -> list:
    out = []
    for e in errors:
        e = dict(e)
        e.pop("ctx", None)
        e.pop("input", None)
        out.append(e)
    return out


def host_name(host_header: str) -> str:
    """The host name of a Host header, lower case, without port, brackets or a trailing dot."""
    h = host_header.strip().lower()
    if h.startswith("["):  # [::1]:8765
        h = h[1:h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def allowed_hosts(config: ServerConfig) -> set[str]:
    """Host names the server answers to: loopback names, the bound host and ``config.allowed_hosts``."""
    return {host_name(h) for h in ("127.0.0.1", "localhost", "::1", config.host, *config.allowed_hosts)}


class _GuardMiddleware:
    """Outermost ASGI layer: Host check (DNS rebinding), body-size limit, and the catch-all 500.

    A Host header that is not one of :func:`allowed_hosts` gets 400 before anything runs, so a web
    page whose domain was re-pointed at 127.0.0.1 cannot use this server through a victim's browser.
    A body over ``config.max_body_bytes`` gets 413. An unexpected exception becomes a 500 whose body
    says nothing about the exception (it is logged) and is *handled* here: the connection stays open
    for the next request (an exception that reaches the server makes uvicorn close it).
    """

    def __init__(self, app, config: ServerConfig):
        self.app, self.config = app, config
        self.hosts = allowed_hosts(config)
        self.any_host = "*" in config.allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.any_host and host_name(host) not in self.hosts:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            shown = host if len(host) <= 100 else host[:97] + "..."
            return await _error(400, "BadHost", f"Host {shown!r} is not a name this server answers to "
                                                f"({', '.join(sorted(self.hosts))}); the operator can add one with "
                                                "`attnscope serve --allowed-host NAME`")(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.config.max_body_bytes
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return await _too_large(limit)(scope, receive, send)
        received, too_large, started = 0, False, False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a body without (or with a false) Content-Length
                    too_large = True
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if too_large:  # whatever the app answers to the broken body, the client gets 413 below
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
            if too_large and not started:
                await _too_large(limit)(scope, receive, send)
        except _BodyTooLarge:
            if started:
                raise
            await _too_large(limit)(scope, receive, send)
        except Exception:
            if too_large and not started:
                return await _too_large(limit)(scope, receive, send)
            log.exception("internal error")
            if started:
                raise
            await _error(500, "InternalError", "internal server error (the server log has the details); "
                                               "please report the request that caused it")(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return _error(413, "BodyTooLarge", f"the request body is larger than {limit:,} bytes, this server's limit")


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """Build the app. The default model is loaded at start-up (on the inference thread) when ``preload``."""
    config = config or ServerConfig()
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import torch

        previous_threads = torch.get_num_threads()
        if config.torch_threads:  # process-wide; restored at shutdown
            torch.set_num_threads(config.torch_threads)
        state.worker.start()
        if config.preload and config.model not in state.models:
            await state.worker.run(lambda: state.model(config.model), timeout=None)
        try:
            yield
        finally:
            state.worker.stop()
            torch.set_num_threads(previous_threads)

    app = FastAPI(title="attnscope", version="1",
                  description="Capture, analyse and visualise attention in Transformer models. "
                              "Errors are JSON: `{\"error\": {\"type\", \"message\"}}`.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)  # /docs below: offline, no CDN
    app.state.attnscope = state
    app.add_middleware(_GuardMiddleware, config=config)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return _error(e.status, e.type, e.message, headers=e.headers)

    @app.exception_handler(UnknownNameError)
    async def _unknown(request: Request, e: UnknownNameError):
        status = 404 if e.kind in ("model", "analysis") else 422
        return _error(status, "UnknownName", str(e))

    @app.exception_handler(InputError)
    async def _input(request: Request, e: InputError):
        return _error(422, "InputError", str(e))

    @app.exception_handler(CaptureError)
    async def _capture(request: Request, e: CaptureError):
        return _error(422, "CaptureError", str(e))

    @app.exception_handler(ModelLoadError)
    async def _load(request: Request, e: ModelLoadError):
        return _error(503, "ModelUnavailable", str(e))

    @app.exception_handler(AttnscopeError)
    async def _attnscope(request: Request, e: AttnscopeError):
        return _error(400, type(e).__name__, str(e))

    @app.exception_handler(QueueFull)
    async def _full(request: Request, e: QueueFull):
        return _error(429, "QueueFull", str(e), headers={"Retry-After": "1"})

    @app.exception_handler(asyncio.TimeoutError)
    async def _timeout(request: Request, e: asyncio.TimeoutError):
        return _error(504, "Timeout", f"the request did not finish within {config.timeout_s:g} s; try a shorter "
                                      "text or fewer layers/heads")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        errs = _jsonable_errors(e.errors())
        msg = "; ".join(f"{'.'.join(map(str, x.get('loc', [])))}: {x.get('msg', '')}" for x in errs)
        return _error(422, "ValidationError", f"invalid request: {msg}", details=errs)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, "HTTPError", str(e.detail), headers=getattr(e, "headers", None))

    @app.exception_handler(JobCancelled)
    async def _cancelled(request: Request, e: JobCancelled):  # only reaches a client that is still waiting
        return _error(504, "Timeout", f"the request did not finish within {config.timeout_s:g} s")

    app.include_router(build_router(state))
    app.include_router(build_attribution_router(state))

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    docs_html: list[str] = []

    @app.get("/docs", include_in_schema=False)
    async def docs():
        from .docs_page import CSP, render

        if not docs_html:
            docs_html.append(render(app.openapi()))
        return HTMLResponse(docs_html[0], headers={"Content-Security-Policy": CSP})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
