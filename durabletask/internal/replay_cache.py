"""The worker's cache of replayed orchestrations, so that a turn continues where the last one stopped.

Bounded (least recently used first out). An entry is taken out while its turn runs, so two
turns of one instance never share it; a turn whose sidecar did not leave out the past events,
or whose count of left-out events differs from what the entry has seen, replays from scratch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from durabletask.internal.replay import ReplayState

DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS = 1000


class ReplayCache:
    """instance ID -> (execution ID, :class:`ReplayState`), at most ``capacity`` of them."""

    def __init__(self, capacity: int = DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"the orchestration cache size must be a number >= 0, not {capacity!r}")
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[str, ReplayState]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        """False when the capacity is 0: nothing is kept."""
        return self.capacity > 0

    def take(self, instance_id: str, execution_id: str, seen: int) -> ReplayState | None:
        """Remove and return the instance's state if it has processed exactly ``seen`` events of that execution."""
        with self._lock:
            entry = self._entries.pop(instance_id, None)
        if entry is None or seen <= 0:
            return None
        cached_execution, state = entry
        if cached_execution != execution_id or state.processed != seen:
            return None
        return state

    def put(self, instance_id: str, execution_id: str, state: ReplayState) -> None:
        """Keep ``state`` for the instance's next turn."""
        if not self.enabled:
            return
        with self._lock:
            self._entries[instance_id] = (execution_id, state)
            self._entries.move_to_end(instance_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def discard(self, instance_id: str) -> None:
        """Forget the instance's state."""
        with self._lock:
            self._entries.pop(instance_id, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
