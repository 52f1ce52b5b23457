"""Inference off the event loop: one worker thread, a bounded queue of live requests, a per-request timeout.

One thread runs every model call (PyTorch already uses the cores for one forward pass, and a
capture session is per thread), so requests are serialised; at most ``queue_size`` wait. A full
queue raises :class:`QueueFull` (HTTP 429) at once; a request that waits or runs past its timeout
raises :class:`asyncio.TimeoutError` (HTTP 504).

Abandoned work is dropped, so it never counts against the queue: a request whose client timed out
(or went away) before its job started is taken out of the queue at once, and a job that is already
running is stopped at its next module call (a global ``torch.nn.Module`` forward pre-hook checks the
job's cancellation flag on this thread only) or at its next :func:`check_cancelled`.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass
from typing import Any, Callable


class QueueFull(Exception):
    """The inference queue is full; the client should retry later."""


class JobCancelled(Exception):
    """Raised inside a running job whose client stopped waiting (timed out or disconnected)."""


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event


_current = threading.local()  # .job: the job this thread is running (inference threads only)


def check_cancelled() -> None:
    """Raise :class:`JobCancelled` if the job running on this thread was abandoned (call between steps)."""
    job = getattr(_current, "job", None)
    if job is not None and job.cancelled.is_set():
        raise JobCancelled("the client stopped waiting for this request")


def _module_hook(module, args):  # torch global forward pre-hook: cancellation between layers
    check_cancelled()


class InferenceWorker:
    """A single inference thread fed by a bounded queue of live requests."""

    def __init__(self, queue_size: int = 8):
        self.queue_size = max(1, queue_size)
        self._waiting: collections.deque[_Job | None] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._hook = None
        self.busy = False
        self.completed = 0
        self.cancelled = 0  # jobs dropped or stopped because their client stopped waiting

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            if self._hook is None:
                try:
                    import torch

                    self._hook = torch.nn.modules.module.register_module_forward_pre_hook(_module_hook)
                except ImportError:  # pragma: no cover - torch is a dependency
                    pass
            self._thread = threading.Thread(target=self._loop, name="attnscope-inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            with self._cond:
                for job in self._waiting:
                    if job is not None:
                        job.cancelled.set()
                self._waiting.clear()
                self._waiting.append(None)
                self._cond.notify()
            self._thread.join(timeout)
        self._thread = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    @property
    def waiting(self) -> int:
        """Requests waiting for the inference thread whose clients are still waiting for them."""
        with self._cond:
            return sum(1 for j in self._waiting if j is not None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                job = self._waiting.popleft()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            self.busy = True
            _current.job = job
            try:
                result, error = job.fn(), None
            except BaseException as e:  # handed to the awaiting request
                result, error = None, e
            finally:
                _current.job = None
                self.busy = False
                self.completed += 1
                if job.cancelled.is_set():
                    self.cancelled += 1

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

    def _abandon(self, job: _Job) -> None:
        job.cancelled.set()
        with self._cond:
            try:
                self._waiting.remove(job)  # not started yet: it no longer takes a place in the queue
                self.cancelled += 1
            except ValueError:
                pass  # running (stopped at its next module call) or done

    async def run(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn()`` on the inference thread; raises QueueFull or asyncio.TimeoutError."""
        self.start()
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop.create_future(), loop, threading.Event())
        with self._cond:
            live = sum(1 for j in self._waiting if j is not None)
            if live >= self.queue_size:
                raise QueueFull(f"the inference queue is full ({live} waiting); retry later")
            self._waiting.append(job)
            self._cond.notify()
        try:
            return await asyncio.wait_for(job.future, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._abandon(job)
            raise
