"""The destination interface: anything with this ``write`` method can receive exported files.

The export activity calls ``write`` once per instance with the finished file (already
compressed when the format says so). ``container`` and ``blob_name`` come from the job's
destination and the file-naming scheme; ``metadata`` holds small string pairs the destination
may store beside the file (the activity passes ``{"instance_id": ...}``). Implementations are
called from activity threads, so a shared writer must be thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class HistoryWriter(Protocol):
    """Writes one exported file (structural: no base class needed)."""

    def write(
        self,
        *,
        instance_id: str,
        container: str,
        blob_name: str,
        payload: bytes,
        content_type: str,
        content_encoding: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store ``payload`` as ``blob_name`` in ``container``; raise to report a failure."""
        ...


__all__ = ["HistoryWriter"]
