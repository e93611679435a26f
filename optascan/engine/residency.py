"""Which models stay loaded: a byte budget with least-recently-used eviction, and keep-alive, as Ollama does.

    pool = ModelPool(budget_bytes=20 * 2**30)          # or None: no budget beyond each load's own check
    engine = pool.get("qwen2-vl-2b")                    # loads, evicting idle LRU models until it fits
    pool.release(engine, keep_alive_s=0)                # 0: unload when done; None: the pool's default (300 s)
    pool.sweep()                                        # unload models idle past their keep-alive
    pool.start_sweeper(interval_s=5)                    # ... or let a background thread do it on time

Pure bookkeeping: loading and unloading go through the ``load`` callable and ``Engine.close()``, and the
clock is injectable, so tests run without models or waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidRequest, ModelTooLarge
from .engine import Engine

DEFAULT_KEEP_ALIVE_S = 300.0


@dataclass
class Resident:
    name: str
    engine: Engine
    bytes: int
    last_used: float
    keep_alive_s: float
    in_use: int = 0  # requests holding it: never evicted while > 0


class ModelPool:
    def __init__(self, load: Callable[[str], Engine], *, budget_bytes: int | None = None,
                 keep_alive_s: float = DEFAULT_KEEP_ALIVE_S, clock: Callable[[], float] = time.monotonic) -> None:
        if keep_alive_s < 0:
            raise InvalidRequest("keep_alive_s must be 0 or more", field="keep_alive_s")
        self._load, self.budget_bytes, self.keep_alive_s, self._clock = load, budget_bytes, keep_alive_s, clock
        self._residents: dict[str, Resident] = {}
        self._lock = threading.RLock()  # the residents table: held only briefly, never across a load
        self._loading = threading.Lock()  # loads are serialised: two at once could both "fit"
        self._stop_sweeper = threading.Event()
        self._sweeper: threading.Thread | None = None

    def get(self, name: str, *, estimated_bytes: int | None = None) -> Engine:
        """The engine for ``name``, loading it (after evicting idle LRU models) if needed; marks it in use.

        A load (seconds to minutes) holds only the loading lock: status, release and sweeps go on meanwhile."""
        if (engine := self._take(name)) is not None:
            return engine
        with self._loading:
            if (engine := self._take(name)) is not None:  # loaded by another caller while this one waited
                return engine
            if estimated_bytes is not None:
                with self._lock:
                    self._make_room(estimated_bytes, name)
            engine = self._load(name)
            size = int(getattr(engine.info, "weight_bytes", 0) or estimated_bytes or 0)
            with self._lock:
                try:
                    self._make_room(size, name)  # measured size: evict more if the estimate was low
                except ModelTooLarge:
                    engine.close()
                    raise
                self._residents[name] = Resident(name, engine, size, self._clock(), self.keep_alive_s, in_use=1)
            return engine

    def _take(self, name: str) -> Engine | None:
        with self._lock:
            resident = self._residents.get(name)
            if resident is None:
                return None
            resident.in_use += 1
            resident.last_used = self._clock()
            return resident.engine

    def release(self, engine: Engine, *, keep_alive_s: float | None = None) -> None:
        """A request is done with ``engine``; ``keep_alive_s`` overrides how long it may idle (0: unload now)."""
        with self._lock:
            resident = next((r for r in self._residents.values() if r.engine is engine), None)
            if resident is None:
                return
            resident.in_use = max(0, resident.in_use - 1)
            resident.last_used = self._clock()
            if keep_alive_s is not None:
                resident.keep_alive_s = keep_alive_s
            if resident.keep_alive_s == 0 and resident.in_use == 0:
                self._unload(resident)

    def unload(self, name: str) -> bool:
        """Unload ``name`` now (cancelling its queued and running requests). False if it was not loaded."""
        with self._lock:
            resident = self._residents.get(name)
            if resident is None:
                return False
            self._unload(resident)
            return True

    def sweep(self) -> list[str]:
        """Unload every idle model whose keep-alive has passed; returns their names."""
        with self._lock:
            now = self._clock()
            expired = [r for r in self._residents.values()
                       if r.in_use == 0 and now - r.last_used >= r.keep_alive_s]
            for resident in expired:
                self._unload(resident)
            return [r.name for r in expired]

    def start_sweeper(self, interval_s: float = 5.0) -> None:
        """Sweep every ``interval_s`` on a daemon thread, so idle models unload on time without any traffic."""
        if interval_s <= 0:
            raise InvalidRequest("interval_s must be more than 0", field="interval_s")
        if self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop_sweeper.wait(interval_s):
                self.sweep()

        self._sweeper = threading.Thread(target=loop, name="optascan-pool-sweeper", daemon=True)
        self._sweeper.start()

    def loaded(self) -> list[dict]:
        with self._lock:
            now = self._clock()
            return [{"name": r.name, "bytes": r.bytes, "idle_s": 0.0 if r.in_use else now - r.last_used,
                     "in_use": r.in_use, "keep_alive_s": r.keep_alive_s,
                     "engine": getattr(r.engine.backend, "name", ""),  # which engine runs it, and why
                     "engine_choice": getattr(r.engine, "engine_choice", "")}
                    for r in sorted(self._residents.values(), key=lambda r: r.last_used)]

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not yet running) in the loaded models' queues."""
        with self._lock:
            return sum(r.engine.queue_depth for r in self._residents.values())

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(r.bytes for r in self._residents.values())

    def close(self) -> None:
        self._stop_sweeper.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        with self._lock:
            for resident in list(self._residents.values()):
                self._unload(resident)

    def _make_room(self, needed: int, name: str) -> None:
        if self.budget_bytes is None:
            return
        others = [r for r in self._residents.values() if r.name != name]
        for victim in sorted((r for r in others if r.in_use == 0), key=lambda r: r.last_used):
            if sum(r.bytes for r in self._residents.values() if r.name != name) + needed <= self.budget_bytes:
                return
            self._unload(victim)
        busy = sum(r.bytes for r in self._residents.values() if r.name != name)
        if busy + needed > self.budget_bytes:
            raise ModelTooLarge(
                f"{name!r} needs {needed:,} bytes; {busy:,} of the {self.budget_bytes:,}-byte budget are held by "
                "models that are busy", needed_bytes=needed, available_bytes=self.budget_bytes - busy,
                hint="wait for running requests to finish, or unload a model")

    def _unload(self, resident: Resident) -> None:
        self._residents.pop(resident.name, None)
        resident.engine.close()
