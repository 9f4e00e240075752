"""The official SDK's side of the large-payload compatibility test (``tests/e2e/test_compat_payloads.py``).

Run with the compatibility interpreter (Microsoft's ``durabletask`` 1.12 and ``azure-storage-blob``)
and ``-P``. Both modes use the official ``BlobPayloadStore`` on the given container, with a
threshold of ``--threshold-bytes``:

``client``
    ``schedule_new_orchestration(--name, input="p" * --input-size, instance_id=--instance-id)``,
    waits for completion, and prints one JSON object: the instance ID, its status, the output the
    official client read (tokens resolved by the official store) and the raw ``serialized_output``
    that a client without a store reads.
``worker``
    Starts the official worker with ``official_payload_flow`` (the orchestrator) and
    ``official_payload_double`` (the activity) registered, prints ``{"ready": true}`` and runs
    until its standard input closes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def _check_official() -> None:
    """Exits with a message when ``durabletask`` resolves to this repository's package."""
    import durabletask

    location = Path(durabletask.__file__).resolve()
    if location.parent == REPO_ROOT / "durabletask":
        sys.exit(f"'durabletask' resolves to this repository ({location}): run with the compat interpreter and -P")


def official_payload_double(ctx: Any, text: str) -> str:
    """The activity: a result twice as long as its input (above the threshold)."""
    return text.upper() * 2


def official_payload_flow(ctx: Any, text: str) -> Generator[Any, Any, dict[str, Any]]:
    """The orchestrator: one activity, and an output that holds its result and the input."""
    doubled = yield ctx.call_activity(official_payload_double, input=text)
    return {"input": len(text), "activity": len(doubled), "echo": text, "doubled": doubled, "by": "official"}


def _store(args: argparse.Namespace) -> Any:
    from durabletask.extensions.azure_blob_payloads import BlobPayloadStore, BlobPayloadStoreOptions

    options = BlobPayloadStoreOptions(
        connection_string=args.connection_string,
        container_name=args.container,
        threshold_bytes=args.threshold_bytes,
    )
    return BlobPayloadStore(options)


def run_client(args: argparse.Namespace) -> int:
    from durabletask.client import TaskHubGrpcClient

    client = TaskHubGrpcClient(host_address=args.address, payload_store=_store(args))
    instance_id = client.schedule_new_orchestration(
        args.name, input="p" * args.input_size, instance_id=args.instance_id
    )
    state = client.wait_for_orchestration_completion(instance_id, timeout=int(args.timeout))
    report: dict[str, Any] = {"instance_id": instance_id, "status": None}
    if state is not None:
        report.update(
            status=state.runtime_status.name,
            output=state.get_output() if state.serialized_output is not None else None,
            failure=str(state.failure_details.message) if state.failure_details is not None else None,
        )
    plain = TaskHubGrpcClient(host_address=args.address).get_orchestration_state(instance_id)
    report["stored_output"] = plain.serialized_output if plain is not None else None
    json.dump(report, sys.stdout)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from durabletask.worker import TaskHubGrpcWorker

    worker = TaskHubGrpcWorker(host_address=args.address, payload_store=_store(args))
    worker.add_orchestrator(official_payload_flow)
    worker.add_activity(official_payload_double)
    worker.start()
    try:
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.read()  # until the test closes our standard input
    finally:
        worker.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("mode", choices=("client", "worker"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--threshold-bytes", type=int, default=1024)
    parser.add_argument("--name", default="")
    parser.add_argument("--instance-id", default="")
    parser.add_argument("--input-size", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    _check_official()
    return run_client(args) if args.mode == "client" else run_worker(args)


if __name__ == "__main__":
    sys.exit(main())
