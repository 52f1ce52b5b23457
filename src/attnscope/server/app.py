"""The FastAPI application: ``create_app(config)`` serves the explorer (``/``) and the API (``/v1``)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AttnscopeError, CaptureError, InputError, ModelLoadError, UnknownNameError
from .api import ApiError, ServerState, build_router
from .attribution import build_attribution_router
from .config import ServerConfig
from .worker import QueueFull

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
                  lifespan=lifespan)
    app.state.attnscope = state

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

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error")
        return _error(500, "InternalError", f"{type(e).__name__}: {e}")

    app.include_router(build_router(state))
    app.include_router(build_attribution_router(state))

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
