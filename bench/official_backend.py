"""``compat/official_backend.py`` with two limits of the official backend raised, for the benchmark.

The official in-memory test backend (``durabletask.testing.create_test_backend``) has two limits a
benchmark runs into:

* it refuses an orchestration turn once the instance's history would exceed ``max_history_size``
  events (10,000 by default), and a fan-out of 10,000 activities needs about 20,000;
* its gRPC server has 10 threads, and every ``WaitForInstanceCompletion`` call holds one while it
  waits: with 10 clients waiting, the worker's work-item stream gets no thread and nothing completes.

This runs ``compat/official_backend.py`` unchanged (same output, same stop on SIGTERM or closed
standard input) with ``--max-history-size`` passed to ``create_test_backend`` and the server's thread
pool given at least ``--server-threads`` threads. Run it with the compatibility interpreter and ``-P``::

    .venv-compat/bin/python -P bench/official_backend.py --port 4321 --max-history-size 100000 --server-threads 64
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import Any

COMPAT_BACKEND = Path(__file__).resolve().parents[1] / "compat" / "official_backend.py"


def main(argv: list[str] | None = None) -> int:
    """Serves the official backend with the given limits until told to stop."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-history-size", type=int, default=100_000)
    parser.add_argument("--server-threads", type=int, default=64)
    args, rest = parser.parse_known_args(argv)
    spec = importlib.util.spec_from_file_location("official_backend", COMPAT_BACKEND)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {COMPAT_BACKEND.name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._check_official()  # before touching anything of the package: it must be the official one

    testing: Any = importlib.import_module("durabletask.testing")
    backend_module: Any = importlib.import_module("durabletask.testing.in_memory_backend")
    original = testing.create_test_backend

    def create_test_backend(port: int = 50051, **kwargs: Any) -> Any:
        kwargs.setdefault("max_history_size", args.max_history_size)
        return original(port=port, **kwargs)

    def thread_pool(max_workers: int | None = None, **kwargs: Any) -> futures.ThreadPoolExecutor:
        return futures.ThreadPoolExecutor(max_workers=max(max_workers or 1, args.server_threads), **kwargs)

    testing.create_test_backend = create_test_backend
    # The backend module uses ``futures`` (``concurrent.futures``) only for its server's thread pool.
    backend_module.futures = SimpleNamespace(ThreadPoolExecutor=thread_pool)
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
