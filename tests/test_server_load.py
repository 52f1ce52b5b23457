"""A bounded load test on loopback: a real uvicorn server, concurrent clients, no 5xx, memory stable."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from attnscope.server import ServerConfig, create_app  # noqa: E402
from _server_helpers import LiveServer  # noqa: E402

pytestmark = pytest.mark.slow
CLIENTS, REQUESTS = 8, 10


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hammer(url: str, n_clients: int, n_requests: int, body_of) -> list[int]:
    def client(ci: int) -> list[int]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for ri in range(n_requests):
                out.append(c.post("/v1/analyze", json=body_of(ci, ri)).status_code)
        return out

    with ThreadPoolExecutor(n_clients) as pool:
        return [s for part in pool.map(client, range(n_clients)) for s in part]


def test_concurrent_clients_no_5xx_memory_stable(minilm):
    cfg = ServerConfig(torch_threads=1, models={"minilm": minilm}, queue_size=CLIENTS * 2, timeout_s=120)
    with LiveServer(create_app(cfg), log_level="warning") as url:
        body = lambda ci, ri: {"text": f"Client {ci} sends request {ri} about cats and dogs.", "layers": [ri % 6],
                               "heads": [ci % 12]}
        assert set(hammer(url, CLIENTS, 2, body)) == {200}  # warm-up: allocator pools, tokenizer caches
        before = rss_mb()
        codes = hammer(url, CLIENTS, REQUESTS, body)
        after = rss_mb()
        assert len(codes) == CLIENTS * REQUESTS and set(codes) == {200}, codes
        assert after - before < 150, f"RSS grew from {before:.0f} MB to {after:.0f} MB"
        assert httpx.get(url + "/healthz").json()["queue_waiting"] == 0


def test_full_queue_answers_429_never_5xx(minilm):
    cfg = ServerConfig(torch_threads=1, models={"minilm": minilm}, queue_size=1, timeout_s=120)
    with LiveServer(create_app(cfg), log_level="warning") as url:
        codes = hammer(url, CLIENTS, 2, lambda ci, ri: {"text": "word " * 100, "layers": [0], "heads": [0]})
        assert 429 in codes and 200 in codes, codes
        assert set(codes) <= {200, 429}, codes
