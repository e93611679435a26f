"""The one thread that owns a model's device: a bounded FIFO queue, positions reported as it drains.

Jobs carry their own output sink, so each caller gets only its own events; a job cancelled while it
waits leaves the queue at once (the canceller's thread emits its final event).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import EngineClosed, QueueFull
from ..images.intake import IntakeSettings
from ..types import Event, Request, State
from .backends.base import Sampling
from .cancel import CancelToken
from .conversation import Conversation
from .progress import RequestClock

log = logging.getLogger(__name__)
# Workers not closed by their owner are closed at interpreter exit: a daemon thread still inside torch while
# the interpreter finalizes aborts the process ("terminate called without an active exception").
_LIVE: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register
def _close_live_workers() -> None:
    for worker in list(_LIVE):
        worker.close(timeout=5.0)


@dataclass(eq=False)
class Job:
    id: str
    request: Request
    conversation: Conversation
    sampling: Sampling
    cancel: CancelToken
    sink: Callable[[Event], None]
    image_settings: IntakeSettings = field(default_factory=IntakeSettings)
    image_tier: str = "balanced"  # the request's, or the engine mode's; the thermal check may lower it
    thermal: Callable[[str], str] | None = None  # tier → tier to use now (or raises ThermalThrottled)
    clock: RequestClock = field(default_factory=RequestClock)

    def queued(self, position: int) -> None:
        self.sink(Event(self.id, State.QUEUED, queue_position=position, max_tokens=self.sampling.max_tokens))


class Worker:
    """Runs ``run(job)`` for one job at a time, in submission order, on its own thread."""

    def __init__(self, run: Callable[[Job], None], drop: Callable[[Job], None], *, max_queue: int,
                 name: str) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._run, self._drop, self.max_queue = run, drop, max_queue
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"optascan-worker-{name}", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._pending)

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise EngineClosed("the engine is closed")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting)", max_queue=self.max_queue)
            self._pending.append(job)
            job.queued(len(self._pending) - 1)
            self._cond.notify()
        job.cancel.on_cancel(lambda: self._cancel_waiting(job))

    def _cancel_waiting(self, job: Job) -> None:
        with self._cond:
            if job not in self._pending:
                return  # already running (the run sees the token) or finished
            self._pending.remove(job)
            self._renumber()
        self._drop(job)

    def _renumber(self) -> None:
        for position, waiting in enumerate(self._pending):
            waiting.queued(position)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                job = self._running = self._pending.popleft()
                self._renumber()
            try:
                self._run(job)
            except BaseException:  # run() reports its own failures; this is a last resort
                log.exception("worker: request %s crashed", job.id)
            finally:
                with self._cond:
                    self._running = None

    def close(self, timeout: float | None = 30.0) -> None:
        """Cancel everything queued or running, then stop the thread."""
        with self._cond:
            self._closed = True
            waiting = list(self._pending)
            running = self._running
            self._cond.notify_all()
        for job in waiting:
            job.cancel.cancel("the engine was closed")
        if running is not None:
            running.cancel.cancel("the engine was closed")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
