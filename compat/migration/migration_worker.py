"""A worker with every function of ``migration_scenarios`` registered, run by either SDK's interpreter.

``python -P migration_worker.py --address HOST:PORT`` prints ``ready <sdk>`` once started and stops
gracefully when standard input closes. ``<sdk>`` is ``official`` when ``durabletask`` resolves to
Microsoft's package and ``ours`` for this repository's; it is also exported as ``MIGRATION_SDK``
for the activities.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import migration_scenarios as scenarios  # noqa: E402

from durabletask.worker import TaskHubGrpcWorker  # noqa: E402


def sdk_name() -> str:
    """``ours`` when ``durabletask`` is this repository's package, else ``official``."""
    import durabletask

    return "ours" if Path(durabletask.__file__).resolve().parent == HERE.parents[1] / "durabletask" else "official"


def main() -> None:
    """Starts the worker, reports readiness, and stops it when standard input closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--address", required=True)
    args = parser.parse_args()
    os.environ[scenarios.SDK_VARIABLE] = sdk_name()
    worker = TaskHubGrpcWorker(host_address=args.address, maximum_timer_interval=scenarios.MAXIMUM_TIMER_INTERVAL)
    for orchestrator in scenarios.ORCHESTRATORS:
        worker.add_orchestrator(orchestrator)
    for activity in scenarios.ACTIVITIES:
        worker.add_activity(activity)
    for entity in scenarios.ENTITIES:
        worker.add_entity(entity)
    worker.start()
    print(f"ready {os.environ[scenarios.SDK_VARIABLE]}", flush=True)
    sys.stdin.read()
    worker.stop()


if __name__ == "__main__":
    main()
