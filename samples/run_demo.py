"""The main job (`make run`): start the sidecar on its default SQLite store, run a sample end to end, stop.

Uses the real console command in a subprocess, exactly as a user would start it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import grpc

from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from samples import function_chaining


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(address: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the sidecar exited early with code {proc.returncode}")
            try:
                grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the sidecar did not answer on {address} within {timeout:.0f}s") from None


def main() -> int:
    port = int(os.environ.get("DEMO_PORT") or _free_port())
    address = f"localhost:{port}"
    print(f"starting the sidecar on port {port} with its default SQLite store (./.durabletask/)", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "--port", str(port)])
    try:
        _wait_until_serving(address, proc)
        with TaskHubGrpcWorker(host_address=address) as worker:
            function_chaining.register(worker)
            worker.start()
            with TaskHubGrpcClient(host_address=address) as client:
                instance_id = client.schedule_new_orchestration(function_chaining.sequence)
                print(f"scheduled orchestration {instance_id}", flush=True)
                state = client.wait_for_orchestration_completion(instance_id, timeout=60)
        if state is None:
            print("the orchestration was not found", flush=True)
            return 1
        print(f"status: {state.runtime_status.name}")
        print(f"output: {json.dumps(state.get_output())}", flush=True)
        return 0 if state.runtime_status.name == "COMPLETED" else 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("sidecar stopped", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
