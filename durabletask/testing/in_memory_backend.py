"""The test backend under the official module name; the same objects as ``durabletask.testing``."""

from durabletask.testing import InMemoryOrchestrationBackend, create_test_backend

__all__ = ["InMemoryOrchestrationBackend", "create_test_backend"]
