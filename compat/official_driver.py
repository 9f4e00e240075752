"""Drives Microsoft's official SDK from another process, for the mixed-SDK tests.

Run it with the compatibility interpreter and ``-P``::

    .venv-compat/bin/python -P compat/official_driver.py --address localhost:4001 [--worker]

With ``--worker`` it starts the official worker with every function of
``compat/scenarios/compat_functions.py`` registered. It always opens the official client, prints
one JSON line ``{"ready": true}`` and then answers JSON-lines commands read from standard input,
one JSON line each, until standard input closes:

- ``{"op": "schedule", "name": ..., "input": ..., "instance_id": ...}`` -> ``{"ok": true, "result": id}``
- ``{"op": "wait", "instance_id": ..., "timeout": s}`` (completion) and ``{"op": "wait_start", ...}``
  -> ``{"ok": true, "result": state}`` (``state`` is ``null`` or a dict, see ``_state``)
- ``{"op": "get", "instance_id": ...}`` -> the state as above
- ``{"op": "raise", "instance_id": ..., "name": ..., "data": ...}`` -> ``{"ok": true}``
- ``{"op": "history", "instance_id": ...}`` -> ``{"ok": true, "result": [event class names]}``

A command that raises answers ``{"ok": false, "error": "<type>: <message>"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = REPO_ROOT / "compat" / "scenarios"


def _check_official() -> None:
    """Exits with a message when ``durabletask`` resolves to this repository's package."""
    import durabletask

    location = Path(durabletask.__file__).resolve()
    if location.parent == REPO_ROOT / "durabletask":
        sys.exit(f"'durabletask' resolves to this repository ({location}): run with the compat interpreter and -P")


def _state(state: Any) -> dict[str, Any] | None:
    """An official ``OrchestrationState`` as plain JSON (payloads decoded by the official client)."""
    if state is None:
        return None
    failure = state.failure_details
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "status": state.runtime_status.name,
        "input": state.get_input() if state.serialized_input is not None else None,
        "output": state.get_output() if state.serialized_output is not None else None,
        "custom_status": state.get_custom_status() if state.serialized_custom_status is not None else None,
        "serialized_output": state.serialized_output,
        "failure": None
        if failure is None
        else {"message": failure.message, "error_type": failure.error_type, "stack_trace": failure.stack_trace},
    }


def _handle(hub: Any, command: dict[str, Any]) -> Any:
    """Runs one command against the official client and returns its result."""
    op = command["op"]
    if op == "schedule":
        return hub.schedule_new_orchestration(
            command["name"], input=command.get("input"), instance_id=command.get("instance_id")
        )
    if op == "wait":
        return _state(hub.wait_for_orchestration_completion(command["instance_id"], timeout=command.get("timeout", 30)))
    if op == "wait_start":
        return _state(hub.wait_for_orchestration_start(command["instance_id"], timeout=command.get("timeout", 30)))
    if op == "get":
        return _state(hub.get_orchestration_state(command["instance_id"]))
    if op == "raise":
        hub.raise_orchestration_event(command["instance_id"], command["name"], data=command.get("data"))
        return None
    if op == "history":
        return [type(event).__name__ for event in hub.get_orchestration_history(command["instance_id"])]
    raise ValueError(f"unknown op {op!r}")


def main(argv: list[str] | None = None) -> int:
    """Starts the official client (and worker with ``--worker``) and serves commands until stdin closes."""
    parser = argparse.ArgumentParser(description="drive the official durabletask SDK over JSON lines")
    parser.add_argument("--address", required=True)
    parser.add_argument("--worker", action="store_true", help="run the official worker with the scenario functions")
    args = parser.parse_args(argv)
    _check_official()
    sys.path.insert(0, str(SCENARIOS))
    from durabletask.client import TaskHubGrpcClient
    from durabletask.worker import TaskHubGrpcWorker

    worker = None
    if args.worker:
        import compat_functions

        worker = TaskHubGrpcWorker(host_address=args.address)
        compat_functions.register(worker)
        worker.start()
    hub = TaskHubGrpcClient(host_address=args.address)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                reply = {"ok": True, "result": _handle(hub, json.loads(line))}
            except Exception as exc:  # reported to the caller, which asserts on it
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
    finally:
        hub.close()
        if worker is not None:
            worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
