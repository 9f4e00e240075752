"""Durable Task for Python: orchestrations, activities and entities on a Durable Task sidecar.

Submodules: ``task``, ``client``, ``worker``, ``entities``, ``history``, ``serialization``,
``testing``, ``grpc_options``, ``saga``, ``workflows``. A few option classes are also importable
from the package root; they are loaded on first use so that ``import durabletask`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

PACKAGE_NAME = "durabletask"

_ROOT_EXPORTS: dict[str, str] = {
    "ActivityWorkItemFilter": "durabletask.worker",
    "ConcurrencyOptions": "durabletask.worker",
    "EntityWorkItemFilter": "durabletask.worker",
    "OrchestrationWorkItemFilter": "durabletask.worker",
    "VersioningOptions": "durabletask.worker",
    "WorkItemFilters": "durabletask.worker",
    "GrpcChannelOptions": "durabletask.grpc_options",
    "GrpcRetryPolicyOptions": "durabletask.grpc_options",
}

__all__ = sorted(_ROOT_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _ROOT_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'durabletask' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
