"""Shared entry point for the samples: connect a worker and a client to a running sidecar."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def run_sample(
    description: str,
    register: Callable[[TaskHubGrpcWorker], None],
    run: Callable[[TaskHubGrpcClient], Any],
) -> Any:
    """Parse ``--address``, start a worker with the sample's functions, run it, print the result."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--address",
        default=None,
        help="sidecar address (default: $DURABLETASK_GRPC_ENDPOINT or localhost:4001)",
    )
    args = parser.parse_args()
    with TaskHubGrpcWorker(host_address=args.address) as worker:
        register(worker)
        worker.start()
        with TaskHubGrpcClient(host_address=args.address) as client:
            result = run(client)
    print(json.dumps(result, indent=2, default=str))
    return result
