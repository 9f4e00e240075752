"""The ``durabletask`` CLI's instance commands against a real in-process sidecar and worker.

``main(argv)`` runs in this process over real gRPC; one test runs the installed console script.
Table and timeline output is compared with golden text after times and durations are masked.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from durabletask import task
from durabletask.cli import main
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from sidecar.server import SidecarServer
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.our_sidecar("checks the CLI's output against this sidecar's messages")

TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?")
SHORT_DURATION = re.compile(r"\d\.\d{3}s")


def mask(text: str) -> str:
    """Times become <time> padded to the same width, short durations N.NNNs; no trailing blanks."""
    text = TIME.sub(lambda m: "<time>".ljust(len(m.group(0))), text)
    text = SHORT_DURATION.sub("N.NNNs", text)
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


def hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def boom(ctx: task.ActivityContext, _: object) -> None:
    raise ValueError("no luck")


def greet(ctx: task.OrchestrationContext, name: str):  # type: ignore[no-untyped-def]
    return (yield ctx.call_activity(hello, input=name))


def fails(ctx: task.OrchestrationContext, _: object):  # type: ignore[no-untyped-def]
    yield ctx.call_activity(boom)


def waits(ctx: task.OrchestrationContext, _: object):  # type: ignore[no-untyped-def]
    return (yield ctx.wait_for_external_event("go"))


@dataclass
class Env:
    address: str
    client: TaskHubGrpcClient


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    """One sidecar and worker for the module, with a finished, a failed and a running instance."""
    server = SidecarServer("memory", host="localhost")
    address = f"localhost:{server.start(0)}"
    worker = TaskHubGrpcWorker(host_address=address)
    for orchestrator in (greet, fails, waits):
        worker.add_orchestrator(orchestrator)
    worker.add_activity(hello)
    worker.add_activity(boom)
    worker.start()
    client = TaskHubGrpcClient(host_address=address)
    client.schedule_new_orchestration(greet, input="World", instance_id="cli-greet")
    client.schedule_new_orchestration(fails, instance_id="cli-fails")
    assert client.wait_for_orchestration_completion("cli-greet", timeout=15) is not None
    assert client.wait_for_orchestration_completion("cli-fails", timeout=15) is not None
    try:
        yield Env(address, client)
    finally:
        client.close()
        worker.stop()
        server.stop(grace=0.2)


def run(env: Env, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI against the module's sidecar: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["--address", env.address, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_table_golden(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(env, capsys, "instances", "list", "--prefix", "cli-")
    assert (code, err) == (0, "")
    assert mask(out) == (
        "INSTANCE ID  NAME   VERSION  STATUS     CREATED (UTC)        UPDATED (UTC)\n"
        "cli-fails    fails  -        FAILED     <time>               <time>\n"
        "cli-greet    greet  -        COMPLETED  <time>               <time>\n"
    )


def test_list_filters_and_paging(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(env, capsys, "list", "--status", "failed", "--prefix", "cli-", "--json")
    assert code == 0
    assert [i["instanceId"] for i in json.loads(out)["instances"]] == ["cli-fails"]
    code, out, _ = run(env, capsys, "list", "--name", "greet", "--prefix", "cli-", "--json")
    assert [i["instanceId"] for i in json.loads(out)["instances"]] == ["cli-greet"]

    code, out, err = run(env, capsys, "list", "--prefix", "cli-", "--page-size", "1", "--json")
    first = json.loads(out)
    assert len(first["instances"]) == 1 and first["continuationToken"]
    code, out, _ = run(env, capsys, "list", "--prefix", "cli-", "--page-size", "1", "--json",
                       "--continuation-token", first["continuationToken"])
    second = json.loads(out)
    assert [i["instanceId"] for i in first["instances"] + second["instances"]] == ["cli-fails", "cli-greet"]
    code, out, err = run(env, capsys, "list", "--prefix", "cli-", "--page-size", "1")
    assert "more instances: add --continuation-token" in err
    code, out, _ = run(env, capsys, "list", "--prefix", "cli-", "--page-size", "1", "--all", "--json")
    assert [i["instanceId"] for i in json.loads(out)["instances"]] == ["cli-fails", "cli-greet"]
    code, out, _ = run(env, capsys, "list", "--prefix", "cli-", "--created-from", "2000-01-01", "--json")
    assert len(json.loads(out)["instances"]) == 2
    code, out, _ = run(env, capsys, "list", "--prefix", "cli-", "--created-to", "2000-01-01", "--json")
    assert json.loads(out)["instances"] == []


def test_show_text_and_json(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(env, capsys, "instances", "show", "cli-greet")
    assert code == 0
    assert mask(out) == (
        "Instance ID:   cli-greet\n"
        "Name:          greet\n"
        "Version:       -\n"
        "Status:        COMPLETED\n"
        "Created:       <time>\n"
        "Last updated:  <time>\n"
        "Completed:     <time>\n"
        "Parent:        -\n"
        'Input:         "World"\n'
        'Output:        "Hello, World!"\n'
        "Custom status: -\n"
        "Failure:       -\n"
    )
    code, out, _ = run(env, capsys, "show", "cli-fails", "--json")
    state = json.loads(out)
    assert state["status"] == "FAILED" and state["instanceId"] == "cli-fails"
    assert state["failure"]["message"].endswith("Activity task #1 failed: no luck")


def test_history_timeline_golden(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(env, capsys, "instances", "history", "cli-greet")
    assert code == 0
    assert mask(out) == (
        "TIME (UTC)               ELAPSED  EVENT               DETAILS\n"
        '<time>                   +N.NNNs  started             greet input="World"\n'
        '<time>                   +N.NNNs  activity scheduled  #1 hello input="World"\n'
        '<time>                   +N.NNNs  activity completed  #1 hello result="Hello, World!" (took N.NNNs)\n'
        '<time>                   +N.NNNs  completed           output="Hello, World!" (took N.NNNs)\n'
    )
    code, out, _ = run(env, capsys, "history", "cli-fails")
    lines = mask(out).splitlines()
    assert lines[3].endswith("+N.NNNs  activity failed     #1 boom builtins.ValueError: no luck (took N.NNNs)")
    assert "failed" in lines[4] and "TaskFailedError" in lines[4]
    code, out, _ = run(env, capsys, "history", "cli-greet", "--all")
    assert out.count("turn started") == 2 and out.count("turn completed") == 2


def test_history_json(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(env, capsys, "history", "cli-greet", "--json")
    events = json.loads(out)
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["OrchestratorStarted", "ExecutionStarted"] and kinds[-2:] == [
        "ExecutionCompleted", "OrchestratorCompleted"]
    scheduled = next(e for e in events if e["kind"] == "TaskScheduled")
    completed = next(e for e in events if e["kind"] == "TaskCompleted")
    assert scheduled["name"] == "hello" and completed["task_scheduled_id"] == scheduled["event_id"]
    assert json.loads(completed["result"]) == "Hello, World!"


def test_start_raise_suspend_resume_terminate(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(env, capsys, "instances", "start", "waits", "--id", "cli-w1", "--input", '{"n": 1}')
    assert (code, out) == (0, "cli-w1\n")
    env.client.wait_for_orchestration_start("cli-w1", timeout=10)
    assert run(env, capsys, "suspend", "cli-w1", "--reason", "maintenance")[:2] == (
        0, "suspended instance 'cli-w1'\n")
    assert env.client.wait_for_orchestration_start("cli-w1", timeout=10) is not None
    state = env.client.get_orchestration_state("cli-w1")
    assert state is not None and state.runtime_status == OrchestrationStatus.SUSPENDED
    assert run(env, capsys, "resume", "cli-w1")[0] == 0
    assert run(env, capsys, "raise", "cli-w1", "go", "--data", '{"ok": true}')[:2] == (
        0, "raised event 'go' on instance 'cli-w1'\n")
    done = env.client.wait_for_orchestration_completion("cli-w1", timeout=10)
    assert done is not None and done.get_output() == {"ok": True}

    code, out, _ = run(env, capsys, "start", "waits", "--json")
    other = json.loads(out)["instanceId"]
    assert run(env, capsys, "terminate", other, "--output", '"stopped"')[0] == 0
    done = env.client.wait_for_orchestration_completion(other, timeout=10)
    assert done is not None and done.runtime_status == OrchestrationStatus.TERMINATED
    assert done.get_output() == "stopped"


def test_start_wait_exit_codes(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(env, capsys, "start", "greet", "--input", '"CLI"', "--wait", "--json")
    assert code == 0 and json.loads(out)["output"] == "Hello, CLI!"
    code, out, _ = run(env, capsys, "start", "fails", "--wait")
    assert code == 1 and " FAILED " in out


def test_rewind_and_restart(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.client.schedule_new_orchestration(greet, input="again", instance_id="cli-re")
    env.client.wait_for_orchestration_completion("cli-re", timeout=10)
    code, out, _ = run(env, capsys, "restart", "cli-re", "--new-id")
    new_id = out.strip()
    assert code == 0 and new_id and new_id != "cli-re"
    done = env.client.wait_for_orchestration_completion(new_id, timeout=10)
    assert done is not None and done.get_output() == "Hello, again!"
    assert run(env, capsys, "restart", "cli-re")[:2] == (0, "cli-re\n")
    code, _, err = run(env, capsys, "rewind", "cli-greet")
    assert code == 1 and err.startswith("error: ") and "COMPLETED" in err and err.count("\n") == 1


def test_purge_by_id_and_by_filter_with_confirmation(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        env.client.schedule_new_orchestration(greet, input=str(n), instance_id=f"cli-purge-{n}")
    for n in range(3):
        env.client.wait_for_orchestration_completion(f"cli-purge-{n}", timeout=10)
    assert run(env, capsys, "purge", "cli-purge-0")[:2] == (0, "purged 1 instance(s)\n")
    assert env.client.get_orchestration_state("cli-purge-0") is None

    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, err = run(env, capsys, "purge", "--older-than", "0s", "--prefix", "cli-purge-")
    assert code == 1
    assert err == ("2 instance(s) match: status completed, failed, terminated, created before "
                   f"{TIME.search(err).group(0)}, ID starting with 'cli-purge-'\n"  # type: ignore[union-attr]
                   "Purge 2 instance(s)? [y/N] error: purge cancelled; nothing was purged\n")
    assert env.client.get_orchestration_state("cli-purge-1") is not None

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, err = run(env, capsys, "purge", "--status", "completed", "--prefix", "cli-purge-")
    assert (code, out) == (0, "purged 2 instance(s)\n")
    assert "purging [" in err and "2/2" in err
    assert env.client.get_orchestration_state("cli-purge-1") is None
    code, out, err = run(env, capsys, "purge", "--older-than", "1d", "--prefix", "cli-", "--yes")
    assert (code, out) == (0, "purged 0 instance(s)\n") and err.startswith("0 instance(s) match")


@pytest.mark.parametrize(("argv", "exit_code", "message"), [
    (["show", "nope"], 1, "error: instance 'nope' not found"),
    (["history", "nope"], 1, "error: instance 'nope' not found"),
    (["terminate", "nope"], 1, "error: instance 'nope' not found"),
    (["raise", "nope", "go"], 1, "error: instance 'nope' not found"),
    (["suspend", "nope"], 1, "error: instance 'nope' not found"),
    (["restart", "nope"], 1, "error: instance 'nope' not found"),
    (["purge", "nope"], 1, "error: instance 'nope' not found (nothing purged)"),
    (["start", "greet", "--input", "{bad"], 2,
     "error: --input is not valid JSON (Expecting property name enclosed in double quotes at position 1): '{bad'"),
    (["raise", "cli-greet", "go", "--data", "nan-ish"], 2, "error: --data is not valid JSON"),
    (["purge", "--older-than", "7x"], 2,
     "error: --older-than: invalid duration '7x' (use a number and a unit s, m, h, d or w, e.g. 7d or 12h)"),
    (["purge", "--status", "running"], 2, "error: --status running: only finished instances can be purged"),
    (["purge", "cli-greet", "--older-than", "1d"], 2, "error: give an instance ID or filters"),
    (["purge"], 2, "error: purge needs an instance ID"),
    (["list", "--status", "sleeping"], 2, "error: --status: unknown status 'sleeping'"),
    (["list", "--created-from", "yesterday"], 2, "error: --created-from: invalid time 'yesterday'"),
    (["list", "--page-size", "0"], 2, "error: --page-size must be a positive number"),
    (["instances", "frobnicate"], 2, "error: argument ACTION: invalid choice: 'frobnicate'"),
    ([], 2, "error: missing command"),
])
def test_errors_are_one_line_with_exit_code(
    env: Env, capsys: pytest.CaptureFixture[str], argv: list[str], exit_code: int, message: str
) -> None:
    code, out, err = run(env, capsys, *argv)
    assert code == exit_code
    assert err.startswith(message) and err.count("\n") == 1, err
    assert out == ""


def test_bad_input_changes_nothing(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(env, capsys, "start", "greet", "--id", "cli-never", "--input", "[1,")[0] == 2
    assert env.client.get_orchestration_state("cli-never") is None


def test_unreachable_address(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code = main(["--address", f"127.0.0.1:{port}", "list"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith(f"error: cannot reach the sidecar at 127.0.0.1:{port}: ") and err.count("\n") == 1


def test_a_sidecar_that_never_answers_times_out_at_the_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        code = main(["--address", address, "--rpc-timeout", "0.5", "show", "anything"])
        took = time.monotonic() - began
    err = capsys.readouterr().err
    assert code == 5, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "deadline" in err.lower(), err
    assert took < 10


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_timeout_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--address", "127.0.0.1:1", "--rpc-timeout", value, "list"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_console_script(env: Env) -> None:
    script = Path(sys.executable).with_name("durabletask")
    assert script.exists(), "the console script is not installed (pip install -e .)"
    done = subprocess.run([str(script), "show", "cli-greet", "--json"], capture_output=True, text=True,
                          timeout=60, env={"DURABLETASK_ADDRESS": env.address, "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == "Hello, World!"
    done = subprocess.run([str(script), "--address", env.address, "show", "missing"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: instance 'missing' not found\n")
