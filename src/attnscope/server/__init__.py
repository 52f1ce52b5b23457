"""FastAPI app, REST API (/v1) and the web explorer's static assets (``attnscope serve``)."""

from .config import ServerConfig


def create_app(config: ServerConfig | None = None):
    """See :func:`attnscope.server.app.create_app` (imported lazily: fastapi is an optional dependency)."""
    from .._optional import require

    require("fastapi", "web", "the web explorer and REST API")
    from .app import create_app as _create

    return _create(config)


__all__ = ["ServerConfig", "create_app"]
