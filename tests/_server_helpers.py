"""Server test helpers: the error-body check, blocking the inference thread, and a real uvicorn server on a
free loopback port (for tests that need real connections)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time


def err(r, status, type_=None):
    """``r`` is an error response with ``status``: body ``{"error": {"message", "type", …}}``; returns the error."""
    assert r.status_code == status, r.text[:1000]
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body["error"]


def occupy(worker, timeout: float = 60):
    """Block ``worker``'s inference thread until the returned event is set: (release, thread, loop)."""
    release, started = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(30)

    loop = asyncio.new_event_loop()
    t = threading.Thread(target=lambda: loop.run_until_complete(worker.run(block, timeout=timeout)))
    t.start()
    assert started.wait(10)
    return release, t, loop


class LiveServer:
    """``with LiveServer(app) as url:`` serves ``app`` on 127.0.0.1; the socket is bound here and handed to
    uvicorn, so no other process can take the port in between."""

    def __init__(self, app, log_level: str = "critical"):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
