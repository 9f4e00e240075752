"""The migration suite: instances change SDK half-way and must end as on a single SDK (``make compat``).

One sidecar (ours, on a SQLite file) serves three worker phases, each one worker process with every
scenario function registered (``migration_worker.py``):

1. the official worker: every scenario is started once to migrate to ours and once as the official
   reference; all reach their pause, the references are resumed and finish; the worker stops;
2. our worker: the migrating instances are resumed and finish here; every scenario is started again
   twice, to migrate to the official worker and as our reference; the references finish;
3. the official worker again: the instances our worker paused finish here.

A scenario that pauses on a retry timer (``retry_span``) is started to migrate only at the end of its
phase, just before the worker stops, so that its timer outlasts the switch however long the phase took.

Each scenario's four results (status, output, custom status, entity state) must be equal and
completed. Clients are ours, in this interpreter.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import migration_scenarios as scenarios  # noqa: E402
from compat_sidecar import OurSidecar, isolated_env  # noqa: E402
from migration_scenarios import Scenario  # noqa: E402

from durabletask import history  # noqa: E402
from durabletask.client import OrchestrationState, OrchestrationStatus, TaskHubGrpcClient  # noqa: E402
from durabletask.entities import EntityInstanceId  # noqa: E402

WORKER_SCRIPT = HERE / "migration_worker.py"
WAIT = 90.0
POLL = 0.1
OFFICIAL, OURS = "official", "ours"
ROLES = ("ref-official", "official-to-ours", "ref-ours", "ours-to-official")


def instance_id(role: str, scenario: Scenario) -> str:
    """The instance of ``scenario`` playing ``role``."""
    return f"mig-{role}-{scenario.name}"


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class WorkerProcess:
    """``migration_worker.py`` run by ``python``; stops when its standard input closes."""

    def __init__(self, python: str, sdk: str, address: str, state_dir: Path, log_path: Path) -> None:
        self.sdk, self.log_path = sdk, log_path
        with log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [python, "-P", str(WORKER_SCRIPT), "--address", address],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=tempfile.gettempdir(),
                env=isolated_env({scenarios.STATE_DIR_VARIABLE: str(state_dir)}),
            )
        lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            line = None
        if line is None or line.split() != ["ready", sdk]:
            self.stop()
            raise RuntimeError(f"{sdk} worker did not start (said {line!r}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the worker's log."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 60) -> None:
        """Closes standard input and waits for a graceful exit (kills it past ``timeout``)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{self.sdk} worker did not stop within {timeout}s:\n{self.log_tail()}") from None


def wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    """Polls ``check`` until it holds; raises naming ``what`` past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


class Suite:
    """The instances of every scenario in every role, driven with our client."""

    def __init__(self, client: TaskHubGrpcClient, state_dir: Path) -> None:
        self.client, self.state_dir = client, state_dir
        self.results: dict[str, dict[str, dict[str, Any]]] = {s.name: {} for s in scenarios.SCENARIOS}

    def start(self, role: str, late: bool = False) -> None:
        """Starts the scenarios of ``role``: for a migrating role, those paused by a timer if ``late``, else
        the others; for a reference role, all of them (``late`` is not used)."""
        migrated = not role.startswith("ref-")
        for s in scenarios.SCENARIOS:
            if migrated and (s.pause == "retry-timer") != late:
                continue
            data = s.migrated_input if migrated and s.migrated_input is not None else s.input
            self.client.schedule_new_orchestration(s.orchestrator, input=data, instance_id=instance_id(role, s))

    def _paused(self, iid: str, scenario: Scenario) -> bool:
        if scenario.pause == "retry-timer":
            events = self.client.get_orchestration_history(iid)
            kinds = [type(e) for e in events]
            return history.TaskFailedEvent in kinds and history.TimerCreatedEvent in kinds[kinds.index(history.TaskFailedEvent) :]
        state = self.client.get_orchestration_state(iid)
        if state is None or state.runtime_status != OrchestrationStatus.RUNNING or not state.serialized_custom_status:
            return False
        status = json.loads(state.serialized_custom_status)
        return isinstance(status, dict) and status.get("paused") is True

    def wait_paused(self, roles: Iterable[str], late: bool | None = None) -> None:
        """Waits until the scenarios in ``roles`` have reached their pause (only those ``start`` began)."""
        for role in roles:
            for s in scenarios.SCENARIOS:
                if late is not None and not role.startswith("ref-") and (s.pause == "retry-timer") != late:
                    continue
                iid = instance_id(role, s)
                wait_until(f"{iid} to pause", lambda iid=iid, s=s: self._paused(iid, s))  # type: ignore[misc]

    def resume(self, role: str) -> None:
        """Sends every paused scenario in ``role`` its entity signals and its ``resume`` event."""
        for s in scenarios.SCENARIOS:
            iid = instance_id(role, s)
            for operation, value in s.signals:
                self.client.signal_entity(EntityInstanceId("migration_counter", iid), operation, input=value)
            if s.pause == "status":
                self.client.raise_orchestration_event(iid, scenarios.RESUME, data=s.resume_data)

    def finish(self, role: str) -> None:
        """Waits for every scenario in ``role`` to end and records what it ended with."""
        for s in scenarios.SCENARIOS:
            iid = instance_id(role, s)
            state = self.client.wait_for_orchestration_completion(iid, timeout=int(WAIT))
            self.results[s.name][role] = self._record(iid, s, state)

    def _record(self, iid: str, scenario: Scenario, state: OrchestrationState | None) -> dict[str, Any]:
        if state is None:
            return {"status": "missing"}
        record: dict[str, Any] = {
            "status": state.runtime_status.name,
            "output": json.loads(state.serialized_output) if state.serialized_output else None,
            "custom_status": json.loads(state.serialized_custom_status) if state.serialized_custom_status else None,
            "failure": state.failure_details.message if state.failure_details else None,
        }
        if scenario.entity_final is not None:
            record["entity"] = self._settled_entity(iid, scenario.entity_final)
        return record

    def _settled_entity(self, iid: str, expected: int) -> Any:
        """The counter of ``iid`` once it reads ``expected``, or whatever it reads after the wait."""
        entity = EntityInstanceId("migration_counter", iid)

        def value() -> Any:
            metadata = self.client.get_entity(entity)
            raw = metadata.get_state() if metadata is not None else None
            return json.loads(raw) if isinstance(raw, str) else raw

        try:
            wait_until(f"{entity} to read {expected}", lambda: value() == expected, timeout=20)
        except TimeoutError:
            pass
        return value()

    def span_attempts(self, role: str) -> list[str]:
        """The SDK that ran each attempt of ``retry_span``'s flaky activity in ``role``."""
        iid = instance_id(role, next(s for s in scenarios.SCENARIOS if s.name == "retry_span"))
        path = scenarios.attempts_path(f"{iid}/span", str(self.state_dir))
        return path.read_text().split() if path.exists() else []


def compare(suite: Suite) -> list[str]:
    """Every difference between a scenario's four results, and every result that did not complete."""
    problems = []
    for name, by_role in suite.results.items():
        reference = by_role.get("ref-official")
        for role in ROLES:
            record = by_role.get(role)
            if record is None or record.get("status") != "COMPLETED":
                problems.append(f"{name} [{role}] did not complete: {record}")
            elif record != reference:
                problems.append(f"{name} [{role}] differs from the official reference:\n  {record}\n  {reference}")
    expected = {"official-to-ours": [OFFICIAL, OURS], "ours-to-official": [OURS, OFFICIAL]}
    for role, sdks in expected.items():
        seen = suite.span_attempts(role)
        if seen != sdks:
            problems.append(f"retry_span [{role}]: attempts ran on {seen}, not {sdks} (the switch came too late?)")
    return problems


def run_migration(compat_python: str, our_python: str, verbose: bool = False) -> int:
    """Runs the suite; prints each difference (every result with ``verbose``); returns 0 when there are none."""
    with tempfile.TemporaryDirectory(prefix="dt-migration-") as tmp:
        work = Path(tmp)
        state_dir = work / "attempts"
        state_dir.mkdir()
        sidecar = OurSidecar(our_python, work / "migration.db", work / "sidecar.log")
        pythons = {OFFICIAL: compat_python, OURS: our_python}
        worker: WorkerProcess | None = None
        try:
            address = sidecar.wait_address(60)
            quiet = logging.getLogger("migration.client")
            quiet.setLevel(logging.WARNING)
            client = TaskHubGrpcClient(host_address=address, logger=quiet)
            suite = Suite(client, state_dir)

            def phase(sdk: str) -> WorkerProcess:
                began = time.monotonic()
                started = WorkerProcess(pythons[sdk], sdk, address, state_dir, work / f"{sdk}-worker.log")
                print(f"migration: {sdk} worker up in {time.monotonic() - began:.1f}s", flush=True)
                return started

            worker = phase(OFFICIAL)
            suite.start("official-to-ours")
            suite.start("ref-official")
            suite.wait_paused(["official-to-ours", "ref-official"], late=False)
            suite.resume("ref-official")
            suite.finish("ref-official")
            suite.start("official-to-ours", late=True)
            suite.wait_paused(["official-to-ours"], late=True)
            worker.stop()

            worker = phase(OURS)
            suite.resume("official-to-ours")
            suite.start("ours-to-official")
            suite.start("ref-ours")
            suite.wait_paused(["ours-to-official", "ref-ours"], late=False)
            suite.resume("ref-ours")
            suite.finish("ref-ours")
            suite.finish("official-to-ours")
            suite.start("ours-to-official", late=True)
            suite.wait_paused(["ours-to-official"], late=True)
            worker.stop()

            worker = phase(OFFICIAL)
            suite.resume("ours-to-official")
            suite.finish("ours-to-official")
            worker.stop()
            worker = None
            client.close()
            problems = compare(suite)
        except (RuntimeError, TimeoutError) as err:
            problems = [f"{type(err).__name__}: {err}"]
        finally:
            if worker is not None:
                worker.stop()
            sidecar.stop()
        for problem in problems:
            print(f"migration: {problem}", file=sys.stderr)
        if problems:
            for log in sorted(work.glob("*.log")):
                print(f"migration: tail of {log.name}:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            return 1
        if verbose:
            for name, by_role in suite.results.items():
                print(f"migration: {name}: {by_role['ref-official']}")
        print(f"migration: {len(scenarios.SCENARIOS)} scenarios x {len(ROLES)} roles end alike")
        return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--compat-python", required=True)
    parser.add_argument("--verbose", action="store_true", help="print every scenario's result")
    args = parser.parse_args()
    sys.exit(run_migration(args.compat_python, sys.executable, args.verbose))
