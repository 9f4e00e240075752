"""Fresh planner statistics for PostgreSQL's busy tables.

The leasing queries are fast only when PostgreSQL knows how big the tables are: with the
statistics of an empty table it may scan ``history`` once per candidate instead of using its
index, and a lease that takes a millisecond takes half a second. Autovacuum analyzes a table
only after a minute or more, so a database that fills fast (a fresh deployment, a burst of new
orchestrations) would crawl until then. :class:`StatisticsKeeper` runs ``ANALYZE`` on those
tables in the background after every ``every_writes`` write transactions, at most once per
``min_interval`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("durabletask-sidecar.store")

BUSY_TABLES = ("instances", "inbox", "history", "activity_tasks", "entities", "entity_queue")
ANALYZE_SQL = f"ANALYZE {', '.join(BUSY_TABLES)}"


class StatisticsKeeper:
    """Counts write transactions and runs ``analyze`` in a background thread when due."""

    def __init__(self, analyze: Callable[[], None], *, every_writes: int = 1000, min_interval: float = 5.0) -> None:
        self._analyze = analyze
        self._every_writes = every_writes
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._writes = 0
        self._last = float("-inf")
        self._thread: threading.Thread | None = None
        self._closed = False
        self.runs = 0

    def wrote(self) -> None:
        """Count one write transaction; start an ANALYZE when one is due."""
        with self._lock:
            self._writes += 1
            now = time.monotonic()
            if (
                self._closed
                or self._writes < self._every_writes
                or now - self._last < self._min_interval
                or (self._thread is not None and self._thread.is_alive())
            ):
                return
            self._writes = 0
            self._last = now
            self._thread = threading.Thread(target=self._run, name="sidecar-pg-analyze", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._analyze()
            self.runs += 1
        except Exception as exc:  # statistics are an optimisation: never fail work for them
            log.debug("ANALYZE failed: %s", exc)

    def close(self, timeout: float = 5.0) -> None:
        """Start no more runs; wait for one in progress."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
