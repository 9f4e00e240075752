"""Everything the sidecar decides about durable state, written once above the store."""

from __future__ import annotations

from sidecar.hub.task_hub import TaskHub

__all__ = ["TaskHub"]
