"""A real uvicorn server on a free loopback port, in a thread, for tests that need real connections."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class LiveServer:
    """``with LiveServer(app) as url:`` serves ``app`` on 127.0.0.1; the socket is bound here and handed to
    uvicorn, so no other process can take the port in between."""

    def __init__(self, app, log_level: str = "critical"):
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
