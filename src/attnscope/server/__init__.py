"""FastAPI app, REST API (/v1) and the web explorer's static assets (``attnscope serve``).

Exports are lazy (the configuration names the model catalogue, which imports torch), so that
``attnscope serve --help`` starts without torch."""

from .._lazy import lazy_exports


def create_app(config=None):
    """See :func:`attnscope.server.app.create_app` (imported lazily: fastapi is an optional dependency)."""
    from .._optional import require

    require("fastapi", "web", "the web explorer and REST API")
    from .app import create_app as _create

    return _create(config)


__getattr__, __dir__ = lazy_exports(__name__, {"ServerConfig": ".config"})

__all__ = ["ServerConfig", "create_app"]
