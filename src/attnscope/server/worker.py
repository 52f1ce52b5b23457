"""Inference off the event loop: one worker thread, a bounded queue, a per-request timeout.

One thread runs every model call (PyTorch already uses the cores for one forward pass, and a
capture session is per thread), so requests are serialised; at most ``queue_size`` wait. A full
queue raises :class:`QueueFull` (HTTP 429) at once; a request that waits or runs past its timeout
raises :class:`asyncio.TimeoutError` (HTTP 504) and, if it had not started yet, is never run.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable


class QueueFull(Exception):
    """The inference queue is full; the client should retry later."""


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event


class InferenceWorker:
    """A single inference thread fed by a bounded queue."""

    def __init__(self, queue_size: int = 8):
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self._thread: threading.Thread | None = None
        self.busy = False
        self.completed = 0

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="attnscope-inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            while True:
                try:
                    self._queue.put(None, timeout=timeout)
                    break
                except queue.Full:  # drain waiting jobs so the stop marker fits
                    try:
                        job = self._queue.get_nowait()
                        if job is not None:
                            job.cancelled.set()
                    except queue.Empty:
                        pass
            self._thread.join(timeout)
        self._thread = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            self.busy = True
            try:
                result, error = job.fn(), None
            except BaseException as e:  # handed to the awaiting request
                result, error = None, e
            finally:
                self.busy = False
                self.completed += 1

            def deliver(fut=job.future, result=result, error=error) -> None:
                if fut.done():
                    return
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result)

            try:
                job.loop.call_soon_threadsafe(deliver)
            except RuntimeError:  # the loop is closed (shutdown)
                pass

    async def run(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn()`` on the inference thread; raises QueueFull or asyncio.TimeoutError."""
        self.start()
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop.create_future(), loop, threading.Event())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the inference queue is full ({self._queue.maxsize} waiting); retry later") from None
        try:
            return await asyncio.wait_for(job.future, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            job.cancelled.set()
            raise
